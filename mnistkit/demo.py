"""`mnistkit demo`: the whole pipeline, on real data, in a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

from .console import note, out
from .formats import DEFAULT_FORMAT, FORMATS
from .tables import TRAIN_DEFAULTS


DEFAULT_OUT_DIR = "models/demo"


def run_demo(out_dir: str | Path = DEFAULT_OUT_DIR, epochs: int = TRAIN_DEFAULTS["epochs"]) -> None:
    from .data import resolve_demo_dataset
    from .errors import ExportError, ParityError
    from .exporter import export_model
    from .train import TrainConfig, train
    from .ui import TrainProgress, print_export, print_verify
    from .verify import verify

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = out()

    con.rule("[bold]1. data")
    dataset, why = resolve_demo_dataset(log=note)
    con.print(f"using [bold]{dataset}[/bold]: {why}")

    con.rule("[bold]2. train")
    ckpt = out_dir / f"mlp-{dataset}.pt"
    config = TrainConfig(dataset=dataset, model="mlp", epochs=epochs, out=str(ckpt))
    with TrainProgress() as progress:
        result = train(config, progress, log=progress.log)
    con.print(
        f"[green]✓[/green] MLP on {dataset}: test accuracy {result.test_accuracy:.4f}, "
        f"{result.seconds_per_epoch:.2f} s/epoch → {result.checkpoint}"
    )

    con.rule("[bold]3. export (every format, validated on the test split)")
    export_dir = out_dir / f"mlp-{dataset}"
    exported = export_model(ckpt, "all", out_dir=export_dir, log=note, raise_on_failure=False)
    print_export(exported)
    if exported.failures():
        raise ExportError(exported.failures())

    con.rule("[bold]4. verify (every backend x device x artifact vs PyTorch)")
    report = verify(ckpt, [export_dir], log=note)
    print_verify(report)
    if not report.passed:
        raise ParityError(report.verdict())

    con.rule("[bold]5. bench (short: batch 1, 64, 1024; `mnistkit bench` for the full table)")
    from .bench import BenchConfig, default_backends, run_and_write
    from .ui import BenchProgress, print_bench

    config = BenchConfig(batch_sizes=(1, 64, 1024), min_time=0.3, warmup=0.1, backends=default_backends())
    with BenchProgress() as progress:
        bench = run_and_write([export_dir], config, out_dir / "bench", create_parents=True, progress=progress.update)
    print_bench(bench)

    con.rule("[bold]6. score (the test split into Parquet, one row per image, checked complete)")
    from .data import _split_files_in, find_dataset, read_idx
    from .score import ScoreConfig, score
    from .ui import ScoreProgress, print_score

    images, labels = _split_files_in(find_dataset(dataset), "test")
    with ScoreProgress() as progress:
        summary = score(ScoreConfig(model=str(export_dir / FORMATS[DEFAULT_FORMAT].file), inputs=[str(images)],
                                    out=str(out_dir / "predictions.parquet"), overwrite=True),
                        progress=progress.update, log=note)
    print_score(summary)
    import numpy as np
    import pyarrow.parquet as pq

    rows = pq.read_table(summary["out"], columns=["index", "class_index"])
    order = np.argsort(rows.column("index").to_numpy())
    accuracy = float(np.mean(rows.column("class_index").to_numpy()[order] == read_idx(labels)))
    con.print(f"accuracy of the scored rows against the test labels: {accuracy:.4f} "
              f"(training reported {result.test_accuracy:.4f})")
    con.rule("[bold]7. optimize (the fastest verified deployment for batch 1 and 64; a 20 s budget)")
    from .optimize import optimize
    from .predict import predict
    from .ui import print_optimize, print_predict

    deploy_dir = out_dir / "deploy"
    with BenchProgress(title="optimize") as progress:
        chosen = optimize(export_dir, (1, 64), out_dir=deploy_dir, budget=20, overwrite=True,
                          progress=progress.update, log=note)
    print_optimize(chosen, str(deploy_dir))
    sample = out_dir / "sample.npy"
    np.save(sample, read_idx(images)[:4])
    print_predict(predict(str(deploy_dir), [str(sample)], top_k=1), 1)
    model = export_dir / FORMATS[DEFAULT_FORMAT].file
    con.print(f"\n[bold]done.[/bold] Try: mnistkit predict {model} IMAGE.png · "
              f"mnistkit score {model} FOLDER/ --out preds.parquet · "
              f"mnistkit predict --deploy {deploy_dir} IMAGE.png · "
              f"mnistkit serve-demo --model {export_dir / 'app'}")
