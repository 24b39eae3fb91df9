"""The `mnistkit` command: a thin click shell over the library.

Each command parses and validates its flags, calls one library function and prints. Library errors
(MnistkitError) become one red line on stderr and exit 1; usage errors exit 2 (click). With --json,
stdout carries exactly one JSON object. Heavy imports (torch, onnxruntime) happen inside commands,
so `mnistkit --help` stays fast.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import MnistkitError
from .tables import LOSSES, MODEL_NAMES, OPTIMIZERS, TRAIN_DEVICES

DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist")  # checked against data.DATASETS in tests


class MnistkitGroup(click.Group):
    """Translates library errors into one line and an exit code, once, for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MnistkitError as exc:
            from .console import error_line

            error_line(str(exc))
            ctx.exit(exc.exit_code)


@click.group(cls=MnistkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnistkit")
def cli():
    """Train, export, verify and benchmark small PyTorch vision models for edge inference.

    \b
    Typical flow:
      mnistkit train --dataset fashion-mnist
      mnistkit export models/mlp-fashion-mnist.pt --format all
      mnistkit verify models/mlp-fashion-mnist.pt models/mlp-fashion-mnist/
      mnistkit bench models/mlp-fashion-mnist/
    """


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print exactly one JSON object on stdout, nothing else.")(f)


def dataset_options(f):
    f = click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), default=None,
                     help="Folder with the four IDX files (flat, or torchvision's <Class>/raw layout).")(f)
    f = click.option("--dataset", type=click.Choice(DATASET_NAMES), default="mnist", show_default=True,
                     help="Dataset by name. Fashion-MNIST is found in /usr/share/datasets/fashion-mnist.")(f)
    return f


# ---------------------------------------------------------------------------------------------
# train


@cli.command()
@dataset_options
@click.option("--model", type=click.Choice(MODEL_NAMES), default="mlp", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0), default=0.0, show_default=True, help="SGD momentum.")
@click.option("--loss", type=click.Choice(LOSSES), default="cross-entropy", show_default=True,
              help="mse compares softmax probabilities with one-hot targets.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(TRAIN_DEVICES), default="auto", show_default=True,
              help="auto = CUDA when usable, else CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch intra-op threads.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Checkpoint path [default: models/<model>-<dataset>.pt].")
@json_option
def train(as_json, **kwargs):
    """Train a model and write a self-describing checkpoint (after every epoch, atomically).

    Defaults are the PyTorch tutorial's: MLP 784-256-128-64-10, Adam 1e-3, batch 64, 10 epochs.
    Ctrl-C keeps the last completed epoch's checkpoint.

    \b
    Example:
      mnistkit train --dataset fashion-mnist --epochs 10 --out models/fashion.pt
    """
    from .errors import require

    require("torch")
    from .train import TrainConfig
    from .train import train as run_train
    from .ui import TrainProgress

    config = TrainConfig(**kwargs)
    with TrainProgress(enabled=not as_json) as progress:
        result = run_train(config, progress, log=progress.log)
    if as_json:
        from .console import emit_json

        emit_json(result.to_json())
    else:
        from .console import out

        out().print(
            f"[green]✓[/green] {result.model} on {result.dataset}: test accuracy "
            f"{result.test_accuracy:.4f} after {result.epochs} epochs, "
            f"{result.seconds_per_epoch:.2f} s/epoch on {result.device} → {result.checkpoint}"
        )


# ---------------------------------------------------------------------------------------------
# demo


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str), default="models/demo",
              show_default=True, help="Where the demo writes its checkpoint and artifacts.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
def demo(out_dir, epochs):
    """Run the whole pipeline on real data: pick a dataset, train, export, verify, benchmark.

    Uses MNIST when cached or downloadable, otherwise Fashion-MNIST from Debian's
    dataset-fashion-mnist package, and says which and why.

    \b
    Example:
      mnistkit demo --out-dir /tmp/mnistkit-demo
    """
    from .errors import require

    require("torch")
    from .demo import run_demo

    run_demo(out_dir, epochs)


def main() -> None:
    cli(prog_name="mnistkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
