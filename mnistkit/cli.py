"""The `mnistkit` command: a thin click shell over the library.

Each command parses and validates its flags, calls one library function and prints. Library errors
(MnistkitError) become one red line on stderr and exit 1; usage errors exit 2 (click). With --json,
stdout carries exactly one JSON object. Heavy imports (torch, onnxruntime) happen inside commands,
so `mnistkit --help` stays fast.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import warnings
from pathlib import Path

import click

from ._version import __version__
from .modelspec import ModelSpec
from .backends import BACKENDS
from .errors import AssumptionWarning, MnistkitError
from .bench import DEFAULT_BATCH_SIZES, DEFAULT_BENCH_DIR, BenchConfig
from .optimize import DEFAULT_BUDGET, DEFAULT_DEPLOY_DIR
from .optimize import DEFAULT_BATCH_SIZES as DEPLOY_BATCH_SIZES
from .predict import DEFAULT_TOP_K
from .score import ScoreConfig
from .report import DEFAULT_REPORT_DIR
from .formats import DEFAULT_ACCURACY_BUDGET, DEFAULT_FORMAT, DEFAULT_OPSET, DEVICES, FORMAT_CHOICES, OPSET_RANGE
from .demo import DEFAULT_OUT_DIR as DEMO_OUT_DIR
from .tables import LOSSES, MODEL_NAMES, OPTIMIZERS, TRAIN_DEFAULTS, TRAIN_DEVICES

DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist")  # checked against data.DATASETS in tests


class MnistkitGroup(click.Group):
    """Translates library errors into one line and an exit code, once, for every command.

    Exit codes: 0 ok, 1 bad input or a failed check, 2 usage, 130 interrupted (SIGINT), 143 terminated
    (SIGTERM); always one line on stderr, never a traceback (MNISTKIT_DEBUG=1 shows one for bugs).
    """

    def invoke(self, ctx: click.Context):
        from .console import error_line
        from .errors import EXIT_FAILED
        from .signals import Terminated, reset_committed

        reset_committed()
        try:
            with warnings.catch_warnings():  # the CLI says its assumptions as notes (log); not twice
                warnings.simplefilter("ignore", AssumptionWarning)
                return super().invoke(ctx)
        except MnistkitError as exc:
            error_line(str(exc))
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, Terminated) as exc:  # here, or click would say "Aborted!" and exit 1
            ctx.exit(_signal_line(exc))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # stdout closed early (`mnistkit ... | head`): nothing left to say
            _silence_stdout()
            ctx.exit(EXIT_FAILED)
        except Exception as exc:  # a bug: still one line, with how to see the traceback
            if os.environ.get("MNISTKIT_DEBUG"):
                raise
            from .errors import first_line

            error_line(f"internal error: {exc.__class__.__name__}: {first_line(exc)} (a bug in mnistkit; "
                       "MNISTKIT_DEBUG=1 shows the traceback)")
            ctx.exit(EXIT_FAILED)


def _signal_line(exc: BaseException) -> int:
    """Say which signal stopped the command; return its exit code (130 SIGINT, 143 SIGTERM)."""
    from .console import error_line
    from .errors import EXIT_SIGINT, EXIT_SIGTERM

    interrupted = isinstance(exc, KeyboardInterrupt)
    error_line("interrupted (SIGINT)" if interrupted else "terminated (SIGTERM)")
    return EXIT_SIGINT if interrupted else EXIT_SIGTERM


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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


SPEC_OPTIONS = ("model_class", "model_args", "labels", "mean", "std", "input_shape")


def model_class_options(f):
    """--model-class and the facts a user's script may not say (export, verify and bench share them), handed to
    the command as one `spec` (modelspec.ModelSpec)."""

    command = f

    @functools.wraps(command)
    def with_spec(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in SPEC_OPTIONS}
        if values["labels"]:
            values["labels"] = tuple(values["labels"].split(","))
        return command(*args, spec=ModelSpec(**values), **kwargs)

    f = with_spec
    f = click.option("--input-shape", default=None, metavar="C,H,W", callback=_input_shape,
                     help="The images the model takes (with --model-class): 1 or 3 channels, e.g. 3,32,32 [default: "
                          "the script's transforms, else the first of 1,28,28 1,32,32 3,32,32 3,28,28 it accepts].")(f)
    f = click.option("--std", default=None, metavar="S[,S,S]", callback=_channels,
                     help="Normalization std, one or one per channel (with --model-class) [default: the script's "
                          "Normalize(...), else 1].")(f)
    f = click.option("--mean", default=None, metavar="M[,M,M]", callback=_channels,
                     help="Normalization mean, one or one per channel (with --model-class) [default: the script's "
                          "Normalize(...), else 0].")(f)
    f = click.option("--labels", default=None, help="Comma-separated class labels (with --model-class) [default: 0-9].")(f)
    f = click.option("--model-args", default=None, metavar="JSON", callback=_model_args,
                     help="Keyword arguments for --model-class, a JSON object of plain values: "
                          "'{\"hidden\": 256}' (recorded in the manifest).")(f)
    f = click.option("--model-class", default=None, metavar="FILE.py:CLASS",
                     help="The class a state_dict or training checkpoint was saved from, or a function that builds "
                          "the model (FILE.py:Net is read, not run; or package.module:Net, "
                          "torchvision.models:resnet18).")(f)
    return f


def _channels(ctx, param, value):
    """--mean/--std: one number, or one per channel ("0.49,0.48,0.45"); std must be > 0."""
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a number, or one per channel (0.49,0.48,0.45)") from None
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"{value!r}: expected one finite number, or three (one per channel)")
    if param.name == "std" and min(values) <= 0:
        raise click.BadParameter(f"{value!r}: std must be > 0")
    return values[0] if len(values) == 1 else values


def _input_shape(ctx, param, value):
    """--input-shape C,H,W parsed where click parses: a malformed value is a usage error (exit 2)."""
    from .errors import InvalidInputError
    from .source import parse_input_shape

    try:
        return parse_input_shape(value)
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--input-shape {value}: ")) from None


def _model_args(ctx, param, value):
    """--model-args parsed where click parses: a malformed value is a usage error (exit 2)."""
    from .errors import InvalidInputError
    from .source import parse_model_args

    try:
        return parse_model_args(value)
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--model-args {value!r}: ")) from None


def dataset_options(f):
    f = click.option("--data-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=None,
                     help="Folder with the four IDX files (flat, or torchvision's <Class>/raw layout).")(f)
    f = click.option("--dataset", type=click.Choice(DATASET_NAMES), default=TRAIN_DEFAULTS["dataset"], show_default=True,
                     help="Dataset by name. Fashion-MNIST is found in /usr/share/datasets/fashion-mnist.")(f)
    return f


# ---------------------------------------------------------------------------------------------
# train


@cli.command()
@dataset_options
@click.option("--model", type=click.Choice(MODEL_NAMES), default=TRAIN_DEFAULTS["model"], show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=TRAIN_DEFAULTS["optimizer"], show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0), default=TRAIN_DEFAULTS["momentum"], show_default=True,
              help="SGD momentum.")
@click.option("--loss", type=click.Choice(LOSSES), default=TRAIN_DEFAULTS["loss"], show_default=True,
              help="mse compares softmax probabilities with one-hot targets.")
@click.option("--epochs", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["epochs"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TRAIN_DEFAULTS["lr"], show_default=True)
@click.option("--seed", type=int, default=TRAIN_DEFAULTS["seed"], show_default=True)
@click.option("--device", type=click.Choice(TRAIN_DEVICES), default=TRAIN_DEFAULTS["device"], show_default=True,
              help="auto = CUDA when usable, else CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch intra-op threads.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str, readable=False), default=None,
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
    from .console import emit_json, note
    from .data import training_splits
    from .errors import require

    # The data first, torch-free: a bad or hostile IDX file is refused before torch's ~0.9 GB import.
    splits = training_splits(kwargs["dataset"], kwargs["data_dir"], log=None if as_json else note)
    require("torch")
    from .train import TrainConfig
    from .train import train as run_train
    from .ui import TrainProgress, print_train

    with TrainProgress(enabled=not as_json) as progress:
        result = run_train(TrainConfig(**kwargs), progress, log=progress.log, splits=splits)
    if as_json:
        emit_json(result.to_json())
    else:
        print_train(result)


# ---------------------------------------------------------------------------------------------
# export


def _csv(kind):
    """A click callback splitting comma-separated values and checking them against `kind`."""

    def callback(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for part in (value if isinstance(value, tuple) else (value,)) for v in part.split(",") if v.strip()]
        bad = [v for v in items if v not in kind]
        if bad:
            raise click.BadParameter(f"{', '.join(bad)}; expected from: {', '.join(kind)}")
        return items

    return callback


def _formats(ctx, param, value):
    """--format through the format table's one parser."""
    from .errors import InvalidInputError
    from .formats import parse_formats

    try:
        return parse_formats(value)
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str, readable=False))
@click.option("--format", "formats", multiple=True, callback=_formats, default=(DEFAULT_FORMAT,),
              show_default=True, help=f"One or more of {', '.join(FORMAT_CHOICES)} (repeat or comma-separate).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=None,
              help="Folder for the artifacts [default: models/<checkpoint stem>/].")
@click.option("--opset", type=click.IntRange(*OPSET_RANGE), default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset, {OPSET_RANGE[0]}-{OPSET_RANGE[1]}; the written opset is checked.")
@click.option("--no-validate", is_flag=True, help="Skip running each artifact against PyTorch on test images.")
@model_class_options
@click.option("--recipe", type=click.Choice(("digits", "objects", "image")), default=None,
              help="Preprocessing recipe recorded for apps (with --model-class) [default: the dataset's; image for a "
                   "model of another shape].")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default=None,
              help="Dataset the model was trained on (with --model-class): labels, recipe, validation images.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=None,
              help="Where the validation test images (and int8 calibration images) are.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 100), default=DEFAULT_ACCURACY_BUDGET * 100,
              show_default=True,
              help="Accuracy gate of the int8/fp16 formats, in points, vs the float model on the test split.")
@json_option
def export(checkpoint, formats, out_dir, opset, no_validate, spec, recipe, dataset, data_dir, max_accuracy_drop,
           as_json):
    """Export a checkpoint (or your state_dict + class) to ONNX, ExecuTorch, TorchScript and torch.export.

    Every artifact is validated right after export: loaded in its own runtime and run on real test
    images next to PyTorch (one ✓/✗ line each). int8 and fp16 formats must also keep the accuracy
    within --max-accuracy-drop on the full test split (calibration uses the training split).
    `--format all` writes every format plus app/ (the app-ready ONNX, labels.json and a README of
    the contract), which is what apps embed.

    \b
    Examples:
      mnistkit export models/mlp-fashion-mnist.pt --format onnx
      mnistkit export models/mlp-fashion-mnist.pt --format all --out-dir build/
      mnistkit export cnn.pth --model-class train.py:Net --format onnx
      mnistkit export last.ckpt --model-class train.py:Net --model-args '{"hidden": 256}' --format all
      mnistkit export cifar.pth --model-class cifar.py:Net --input-shape 3,32,32 --data-dir data/
    """
    from .errors import require

    require("torch")
    from .console import emit_json, note
    from .exporter import export_model
    from .ui import print_export

    result = export_model(
        checkpoint, formats, out_dir=out_dir, spec=spec.with_options(recipe=recipe, dataset=dataset), opset=opset,
        validate=not no_validate, data_dir=data_dir, log=None if as_json else note, raise_on_failure=False,
        max_accuracy_drop=max_accuracy_drop,
    )
    failures = result.failures()
    if as_json:
        emit_json(result.to_json())
    else:
        print_export(result)
    if failures:
        from .errors import ExportError

        raise ExportError(failures)


# ---------------------------------------------------------------------------------------------
# predict


@cli.command()
@click.argument("args", nargs=-1, required=True, type=click.Path(path_type=str, readable=False), metavar="MODEL INPUT...")
@click.option("--deploy", type=click.Path(file_okay=False, path_type=str, readable=False), default=None,
              help="A deploy folder from `mnistkit optimize` (then every argument is an input): its choice for the "
                   "batch size nearest the number of images runs them.")
@click.option("--backend", type=click.Choice(tuple(BACKENDS)), default=None,
              help="Runtime [default: by the model's kind: onnxruntime for .onnx, pytorch for checkpoints, ...].")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--allow-fallback", is_flag=True, help="If CUDA is unavailable, warn and run on CPU instead of failing.")
@click.option("--top-k", type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")
@json_option
def predict(args, deploy, backend, device, allow_fallback, top_k, threads, as_json):
    """Label images (PNG/JPEG/BMP of any size, .npy arrays, IDX files) with any model file.

    MODEL is a checkpoint, .onnx, .pte, .tflite, OpenVINO .xml, TorchScript or .pt2; its kind is
    detected from the file's contents and its labels and preprocessing recipe from its metadata. On
    an .onnx this needs neither torch nor torchvision. MODEL may also be a deploy folder (or pass it
    as --deploy): the runtime, threads and options `mnistkit optimize` chose run the images.

    \b
    Examples:
      mnistkit predict models/mlp-fashion-mnist/model.onnx shoe.png shirt.jpg
      mnistkit predict --deploy deploy/ shoe.png shirt.jpg
      mnistkit predict model.onnx digit.png --device cuda --json
    """
    from .console import emit_json, warn
    from .predict import predict as run_predict

    if deploy is not None:
        model, inputs = deploy, list(args)
    elif len(args) < 2:
        raise click.UsageError("expected MODEL and at least one INPUT (or --deploy DIR and inputs)")
    else:
        model, inputs = args[0], list(args[1:])
    result = run_predict(model, inputs, backend, device, top_k, allow_fallback, threads)
    for n in result["notes"]:
        warn(n)
    if as_json:
        emit_json(result)
    else:
        from .ui import print_predict

        print_predict(result, top_k)


# ---------------------------------------------------------------------------------------------
# score


@cli.command()
@click.argument("model", type=click.Path(path_type=str, readable=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str, readable=False))
@click.option("--out", "out", required=True, type=click.Path(path_type=str, readable=False),
              help="Output folder: Parquet parts (one row per input) and _SUCCESS.json.")
@click.option("--backend", type=click.Choice(tuple(BACKENDS)), default=None,
              help="Runtime [default: by the model's kind].")
@click.option("--address", default=None,
              help="A Ray cluster to run on (auto, ray://host:10001) [default: a local Ray, or in-process without Ray].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray actors, each loading the model once [default: cores // threads-per-worker].")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=ScoreConfig.threads_per_worker,
              show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=ScoreConfig.batch_size, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=ScoreConfig.top_k, show_default=True)
@click.option("--column", default=None, help="Parquet inputs: the column holding the images [default: detected].")
@click.option("--in-process", is_flag=True, help="Score in this process even where Ray is installed.")
@click.option("--resume", is_flag=True, help="Keep the parts an earlier run finished; score the rest.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier run's output first.")
@click.option("--strict", is_flag=True, help="Fail on the first input that cannot be scored (default: an error row).")
@json_option
def score(model, inputs, out, backend, address, workers, threads_per_worker, batch_size, top_k, column, in_process,
          resume, overwrite, strict, as_json):
    """Score many images with one model into Parquet, exactly one row per input.

    MODEL is any model file, or a deploy folder from `mnistkit optimize` (its choice for the batch
    size nearest --batch-size: file, runtime and options; threads stay --threads-per-worker). INPUTS are
    folders of images (recursive), images, IDX files, .npy arrays and Parquet files (a column of encoded
    images, binary or Hugging Face's {bytes, path}; or of 784 uint8 pixels per row, as
    fixed_size_binary(784), the fastest to read, or a list). Each row: id (the path, or file[index] as
    predict names it), label,
    class_index, top-k labels and probabilities, all probabilities, the model's sha256, and an
    error for an input that could not be read (--strict fails instead). Runs on Ray Data
    (`pip install 'mnistkit[scale]'`) with an actor pool, locally or on a cluster (--address), and
    in-process without Ray. Before reporting success it checks that every input has exactly one
    row. Interrupted? --resume finishes the job without duplicates.

    \b
    Examples:
      mnistkit score models/mlp-fashion-mnist/model.onnx photos/ --out predictions.parquet
      mnistkit score model.onnx shards/*.parquet --out preds/ --address auto --workers 32
      mnistkit score deploy/ photos/ --out preds/
      mnistkit score model.tflite t10k-images-idx3-ubyte --out preds/ --backend litert --resume
    """
    from .console import emit_json, note
    from .score import ScoreConfig, score as run_score
    from .ui import ScoreProgress, print_score

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other: choose one")
    if in_process and address:
        raise click.UsageError("--in-process and --address contradict each other: choose one")
    config = ScoreConfig(model=model, inputs=list(inputs), out=out, backend=backend, batch_size=batch_size,
                         top_k=top_k, workers=workers, threads_per_worker=threads_per_worker, address=address,
                         engine="local" if in_process else ("ray" if address else "auto"), resume=resume,
                         overwrite=overwrite, strict=strict, column=column)
    with ScoreProgress(enabled=not as_json) as progress:
        summary = run_score(config, progress=progress.update, log=None if as_json else note)
    if as_json:
        emit_json(summary)
    else:
        print_score(summary)


# ---------------------------------------------------------------------------------------------
# verify


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str, readable=False))
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=str, readable=False))
@model_class_options
@click.option("--backends", callback=_csv(tuple(BACKENDS)), default=None,
              help=f"Comma-separated subset of {', '.join(BACKENDS)} [default: all that open each artifact].")
@click.option("--devices", callback=_csv(DEVICES), default=None,
              help="Comma-separated cpu,cuda [default: cpu, plus cuda where a GPU is usable].")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default=None,
              help="Test split to use [default: the checkpoint's dataset].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N test images.")
@click.option("--allow-fallback", is_flag=True, help="Let ONNX Runtime fall back to CPU (reported) instead of failing.")
@click.option("--save-outputs", type=click.Path(dir_okay=False, path_type=str, readable=False), default=None,
              help="Save every pair's logits (.npz) so another machine can check them.")
@click.option("--load-outputs", type=click.Path(path_type=str, readable=False), default=None,
              help="Compare logits saved on another machine (e.g. a GPU box) against this reference.")
@json_option
def verify(checkpoint, artifacts, spec, backends, devices, dataset, data_dir, limit, allow_fallback, save_outputs,
           load_outputs, as_json):
    """Prove every runtime gives PyTorch's answers on the real test split.

    CHECKPOINT is the reference: a mnistkit checkpoint, your state_dict or training checkpoint (Lightning
    .ckpt, {"model_state_dict": ...}) with --model-class, or an export folder (its manifest names the
    checkpoint and class it came from, checked by sha256); an artifact of an export folder alone is
    verified against the source that folder records.
    Runs every backend x device x artifact (files, or export folders with a manifest) and compares
    each with PyTorch eager on CPU: max abs/rel and mean abs difference, top-1 agreement, accuracy
    and its delta, and the smallest tolerance that would have passed. Without ARTIFACTS, verifies
    the export folder given as CHECKPOINT, or exports every format to a temporary folder first.
    Exit 1 if any pair fails.

    \b
    Examples:
      mnistkit verify models/mlp-fashion-mnist.pt models/mlp-fashion-mnist/
      mnistkit verify models/cnn/                                               # an export of your model
      mnistkit verify cnn.pth export/ --model-class main.py:Net
      mnistkit verify ckpt.pt model.onnx --devices cuda --save-outputs gpu.npz   # on the GPU box
      mnistkit verify ckpt.pt --load-outputs gpu.npz                            # on a CPU box
    """
    from .errors import ParityError, require

    require("torch")
    from .console import emit_json, note
    from .ui import print_verify
    from .verify import verify as run_verify

    report = run_verify(checkpoint, artifacts, backends, devices, dataset, data_dir, limit, save_outputs,
                        load_outputs, allow_fallback, log=None if as_json else note, spec=spec)
    if as_json:
        emit_json(report.to_json())
    else:
        print_verify(report)
    if not report.passed:
        raise ParityError(report.verdict())


# ---------------------------------------------------------------------------------------------
# inspect, doctor


@cli.command()
@click.argument("file", type=click.Path(path_type=str, readable=False))
@json_option
def inspect(file, as_json):
    """Describe a checkpoint, artifact, manifest or export folder.

    Kind, input/output contract, labels, normalization, preprocessing recipe, opset and IR version
    with the oldest onnxruntime that loads it, size, sha256 and recorded accuracy.

    \b
    Example:
      mnistkit inspect models/mlp-fashion-mnist/model.onnx
    """
    from .console import emit_json
    from .describe import describe

    info = describe(file)
    if as_json:
        emit_json(info)
    else:
        from .ui import print_inspect

        print_inspect(file, info)


@cli.command()
@json_option
def doctor(as_json):
    """Check what this machine can run: Python, torch and its CUDA, onnxruntime and the providers
    that really load, mismatched CUDA majors, TF32, GPU, datasets. Exit 1 only on a blocking problem.

    \b
    Example:
      mnistkit doctor
    """
    from .console import emit_json
    from .doctor import doctor as run_doctor

    report = run_doctor()
    if as_json:
        emit_json(report)
    else:
        from .ui import print_doctor

        print_doctor(report)
    if not report["ok"]:
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------------------------
# bench, report


def _ints(ctx, param, value):
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers") from None
    if not items or any(i < 1 for i in items):
        raise click.BadParameter(f"{value!r}: expected integers >= 1")
    return items


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str, readable=False))
@model_class_options
@click.option("--backends", callback=_csv(tuple(BACKENDS)), default=None,
              help="Comma-separated backends [default: every backend that opens each artifact, except the slow "
                   "onnx-reference].")
@click.option("--devices", callback=_csv((*DEVICES, "node", "browser")), default=None,
              help="Comma-separated cpu,cuda,node,browser [default: cpu, plus cuda where a GPU is usable]. node: "
                   "onnxruntime-node; browser: onnxruntime-web (WebAssembly) in headless Chromium; both run the "
                   "ONNX files.")
@click.option("--batch-sizes", callback=_ints, default=",".join(map(str, DEFAULT_BATCH_SIZES)), show_default=True)
@click.option("--threads", callback=_ints, default=None, help="Comma-separated intra-op thread counts [default: all cores].")
@click.option("--modes", callback=_csv(("host", "device")), default="host", show_default=True,
              help="host: numpy in/out, copies included; device: inputs resident on the device (IO binding, "
                   "CUDA tensors and graphs).")
@click.option("--warmup", type=click.FloatRange(min=0), default=BenchConfig.warmup, show_default=True,
              help="Seconds per case.")
@click.option("--min-time", type=click.FloatRange(min=0, min_open=True), default=BenchConfig.min_time, show_default=True,
              help="Seconds of timed calls per case.")
@click.option("--min-reps", type=click.IntRange(min=2), default=BenchConfig.min_reps, show_default=True)
@click.option("--no-baselines", is_flag=True, help="Skip the bare-session and MatMul-roofline baselines.")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default=None, help="Images for the parity check.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=None)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=DEFAULT_BENCH_DIR,
              show_default=True,
              help="Where results.json, results.csv, report.md and the PNG plots go.")
@click.option("--allow-missing", is_flag=True,
              help="Exit 0 even when a requested runtime or device is not available here (its rows say so).")
@json_option
def bench(models, spec, backends, devices, batch_sizes, threads, modes, warmup, min_time, min_reps, no_baselines,
          dataset, data_dir, out_dir, allow_missing, as_json):
    """Benchmark latency and throughput of every artifact on every runtime, side by side.

    MODEL: a checkpoint (your state_dict with --model-class), an export folder (its manifest, which
    also names the checkpoint parity is checked against) or artifact files. Each case is
    parity-checked first, warmed up, then timed call by call: p50/p90/p99/p99.9, mean, stdev,
    throughput, load and first-inference time. Baselines from the same run: a bare
    onnxruntime session (overhead ratio) and ONNX Runtime's MatMul rate (roofline fraction).

    \b
    Exit 1 when any requested case could not be timed (listed), unless --allow-missing and the
    only missing ones are runtimes or devices this machine lacks; when nothing could be timed,
    nothing is written.

    \b
    Examples:
      mnistkit bench models/mlp-fashion-mnist/ --batch-sizes 1,64,1024 --threads 1,2
      mnistkit bench model.onnx --devices cuda --modes host,device --json
    """
    from .backends import default_devices
    from .bench import BenchConfig, check_complete, default_backends, run_and_write
    from .console import emit_json, note
    from .ui import BenchProgress, print_bench

    config = BenchConfig(
        batch_sizes=batch_sizes, threads=threads or (None,), backends=tuple(backends or default_backends()),
        devices=tuple(devices or default_devices()), modes=tuple(modes), warmup=warmup, min_time=min_time,
        min_reps=min_reps, baselines=not no_baselines)
    with BenchProgress(enabled=not as_json) as progress:
        obj = run_and_write(models, config, Path(out_dir), create_parents=out_dir == DEFAULT_BENCH_DIR,
                            data_dir=data_dir, dataset=dataset, progress=progress.update,
                            log=None if as_json else note, spec=spec)
    if as_json:
        emit_json(obj)
    else:
        print_bench(obj)
    check_complete(obj["results"], allow_missing)


def _seconds(ctx, param, value):
    """60, 60s, 2m -> seconds."""
    text = str(value).strip().lower()
    scale = 60.0 if text.endswith("m") else 1.0
    try:
        seconds = float(text.rstrip("sm")) * scale
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected seconds, like 60s or 2m") from None
    if not seconds > 0:
        raise click.BadParameter(f"{value!r}: expected a positive duration")
    return seconds


@cli.command()
@click.argument("model", type=click.Path(path_type=str, readable=False))
@click.option("--batch-sizes", callback=_ints, default=",".join(map(str, DEPLOY_BATCH_SIZES)), show_default=True,
              help="The batch sizes to choose a deployment for.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0, max=100), default=DEFAULT_ACCURACY_BUDGET * 100,
              show_default=True, help="Points of test accuracy a candidate may lose against PyTorch (int8 files).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=DEFAULT_DEPLOY_DIR,
              show_default=True,
              help="The deploy folder: deploy.json, the chosen files, report.md, tradeoff.png.")
@click.option("--budget", callback=_seconds, default=f"{DEFAULT_BUDGET:g}s", show_default=True,
              help="Time for the search (exporting missing formats first is not counted).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=None,
              help="The dataset's IDX folder [default: the one the model was trained on].")
@click.option("--overwrite", is_flag=True, help="Replace an earlier deploy folder at --out-dir.")
@json_option
def optimize(model, batch_sizes, max_accuracy_drop, out_dir, budget, data_dir, overwrite, as_json):
    """Find the fastest verified deployment for each batch size and write it to a deploy folder.

    MODEL: a checkpoint (its export folder gets the formats it is missing) or an export folder.
    Candidates are every artifact x CPU runtime x threads x the options that matter (ONNX Runtime
    spinning and graph level, OpenVINO's hint, LiteRT's XNNPACK); those that cannot differ are
    pruned with a stated reason. Each must match PyTorch on the full test split (int8 files within
    --max-accuracy-drop) before it is timed; the fastest are re-timed interleaved with each runtime's
    defaults, and the simplest within noise of the fastest is chosen.

    \b
    Use the result with `mnistkit predict deploy/ IMAGES...` or `mnistkit.load("deploy/", batch_size=64)`.

    \b
    Examples:
      mnistkit optimize models/mlp-fashion-mnist/ --out-dir deploy/
      mnistkit optimize models/mlp-fashion-mnist.pt --batch-sizes 1,64 --budget 2m --json
    """
    from .console import emit_json, note
    from .optimize import optimize as run_optimize
    from .ui import BenchProgress, print_optimize

    with BenchProgress(enabled=not as_json, title="optimize") as progress:
        result = run_optimize(model, batch_sizes, max_accuracy_drop, out_dir, budget, data_dir, overwrite,
                              progress=progress.update, log=None if as_json else note)
    if as_json:
        emit_json(result)
    else:
        print_optimize(result, out_dir)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=str, readable=False))
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str, readable=False), default=DEFAULT_REPORT_DIR,
              show_default=True)
@json_option
def report(results, out_dir, as_json):
    """Fold bench results from several machines (a CPU box, a GPU box) into one table and plots.

    RESULT: results.json files written by `mnistkit bench` (or their folders).

    \b
    Example:
      mnistkit report benchmarks/results/cpu-2core/results.json benchmarks/results/h100/results.json
    """
    from .console import emit_json
    from .report import build_report
    from .ui import print_report

    summary = build_report(results, out_dir, create_parents=out_dir == DEFAULT_REPORT_DIR)
    if as_json:
        emit_json(summary)
    else:
        print_report(summary)


# ---------------------------------------------------------------------------------------------
# serve-demo


@cli.command("serve-demo")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--model", type=click.Path(path_type=str, readable=False), default=None,
              help="An app bundle (app/), an export folder or model-app.onnx [default: the newest under models/].")
def serve_demo(port, model):
    """Serve the draw-a-digit page on localhost: the model runs in the browser (onnxruntime-web).

    \b
    Example:
      mnistkit serve-demo --model models/demo/mlp-mnist/app --port 8000
    """
    from .serve import default_app_model, make_server, serve_until_stopped
    from .ui import print_serving

    server = make_server(model or default_app_model(), port)
    print_serving(server)
    serve_until_stopped(server)


# ---------------------------------------------------------------------------------------------
# demo


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str, readable=False),
              default=DEMO_OUT_DIR, show_default=True, help="Where the demo writes its checkpoint and artifacts.")
@click.option("--epochs", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["epochs"], show_default=True)
def demo(out_dir, epochs):
    """Run the whole pipeline on real data: pick a dataset, train, export, verify, benchmark, score, optimize.

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


def _on_sigterm(signum, frame):
    from .signals import Terminated, committed, note_signal

    if _late_signal(committed(), "SIGTERM"):
        return
    note_signal(Terminated)
    raise Terminated()


def _on_sigint(signum, frame):
    from .signals import committed, note_signal

    if _late_signal(committed(), "SIGINT"):
        return
    note_signal(KeyboardInterrupt)
    raise KeyboardInterrupt()


def _late_signal(published: str | None, name: str) -> bool:
    """A signal after the command published its result: said, and otherwise ignored (signals.mark_committed)."""
    if published is None:
        return False
    try:
        os.write(2, f"note: {name} arrived after {published} was complete; finishing\n".encode())
    except OSError:
        pass
    return True


def main() -> None:
    import logging

    from .signals import resolve_signal_path, restart_interrupted_calls

    # A library's malformed log call (torch, loading a hostile archive) must not print a
    # "--- Logging error ---" dump: logging swallows its own errors.
    logging.raiseExceptions = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)
    restart_interrupted_calls()
    resolve_signal_path()
    from .errors import EXIT_SIGINT, EXIT_SIGTERM
    from .signals import Terminated

    try:
        try:
            cli(prog_name="mnistkit")
        except (KeyboardInterrupt, Terminated) as exc:  # outside a command (while parsing, importing)
            sys.exit(_signal_line(exc))
    except SystemExit as exc:
        if exc.code in (EXIT_SIGINT, EXIT_SIGTERM):
            _exit_now(exc.code)
        # The command is over: a signal during the interpreter's shutdown (which restores the default handlers)
        # would kill the process with no line. Held, it is discarded with the process.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        raise


def _exit_now(code: int) -> None:
    """Leave after a signal without the interpreter's finalization.

    mnistkit's own clean-up (staging folders, temporary files) has run by now, in `finally` blocks. What
    finalization would add is the native libraries' teardown while their threads may still be mid-task:
    after SIGTERM during a LiteRT conversion, that teardown crashed the process (exit -11 after the
    "terminated" line, measured here). So: flush the standard streams, then os._exit with the code."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
