"""`mnistkit demo`: the whole pipeline that exists, on real data, in a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

from .console import note, out


def run_demo(out_dir: str | Path, epochs: int = 10) -> None:
    from .data import resolve_demo_dataset
    from .train import TrainConfig, train
    from .ui import TrainProgress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = out()

    con.rule("[bold]1. data")
    dataset, why = resolve_demo_dataset(log=note)
    con.print(f"using [bold]{dataset}[/bold]: {why}")

    con.rule("[bold]2. train")
    config = TrainConfig(dataset=dataset, model="mlp", epochs=epochs, out=str(out_dir / f"mlp-{dataset}.pt"))
    with TrainProgress() as progress:
        result = train(config, progress, log=progress.log)
    con.print(
        f"[green]✓[/green] MLP on {dataset}: test accuracy {result.test_accuracy:.4f}, "
        f"{result.seconds_per_epoch:.2f} s/epoch → {result.checkpoint}"
    )
