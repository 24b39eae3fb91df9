"""Typed errors. The library raises these; the CLI turns them into one line and exit code 1.

Every message says what was found, what was expected and, where it helps, what to do instead.
"""

from __future__ import annotations

import re


class MnistkitError(Exception):
    """Base class of every error mnistkit raises on purpose (exit code 1 in the CLI)."""

    exit_code = 1


class InvalidInputError(MnistkitError):
    """A value, file or array given by the user is not what was expected."""


class UsageError(InvalidInputError):
    """The command line lacks something it needs (exit 2, like click's usage errors)."""

    exit_code = 2


class DataError(InvalidInputError):
    """A dataset file or folder is missing, unreadable or malformed."""


class CheckpointError(InvalidInputError):
    """A checkpoint file is missing, corrupt or not a mnistkit checkpoint."""


class ArtifactError(InvalidInputError):
    """An exported artifact (ONNX, TorchScript, .pt2, manifest) is missing, corrupt or unsupported."""


class ExportError(MnistkitError):
    """Export or the validation right after it failed."""


class BackendUnavailableError(MnistkitError):
    """A runtime or device was requested that cannot run here (missing package, no GPU, fallback)."""


class UnsupportedModelError(BackendUnavailableError):
    """A runtime cannot run this particular model (an operator or version it does not implement)."""


class AssumptionWarning(UserWarning):
    """mnistkit assumed something about a model that the caller did not say and the model's source does not:
    its normalization (pixels / 255), or that it can be validated on random images for want of its test data.
    The CLI prints each as a line; the library warns, so `warnings.simplefilter("error", AssumptionWarning)`
    makes a script stop instead of exporting on an assumption."""


def assumed(log, message: str) -> None:
    """Say an assumption: through `log` (the CLI's note), and as an AssumptionWarning for library callers."""
    import os
    import sys
    import warnings

    if log is not None:
        log(message)
    package, frame, level = os.path.dirname(__file__) + os.sep, sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):  # the caller's line, outside mnistkit
        frame, level = frame.f_back, level + 1
    warnings.warn(message, AssumptionWarning, stacklevel=level)


class MissingDependencyError(BackendUnavailableError):
    """An optional dependency (torch, onnx, matplotlib) is needed and not installed."""


class ParityError(MnistkitError):
    """Outputs of a runtime disagree with the reference beyond tolerance."""


class BenchError(MnistkitError):
    """Requested benchmark rows could not be timed (runtime missing, load error, parity failure)."""


class TrainingInterrupted(MnistkitError):
    """Training was interrupted (Ctrl-C); the last completed epoch's checkpoint is intact."""

    exit_code = 130  # EXIT_SIGINT


# The exit codes of every command (the README's table).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (torch's exporter colours its messages)."""
    return _ANSI.sub("", text)


# Lines that only say where in a native library an error was raised: OpenVINO's messages start with two
# ("Exception from src/inference/src/cpp/core.cpp:84:", "Check '...' failed at src/.../input_model.cpp:219:")
# and say what happened on the next one.
_LOCATION_LINE = re.compile(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?)$")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first informative line (or its class name), for one-line messages: lines that only give
    a native source location are skipped when a line follows them."""
    lines = [line.strip() for line in strip_ansi(str(exc)).strip().splitlines() if line.strip()]
    told = [line for line in lines if not _LOCATION_LINE.match(line)]
    if told or lines:
        return (told or lines)[0][:limit]
    return exc.__class__.__name__


def require(module: str, extra: str = "torch"):
    """Import an optional dependency or raise MissingDependencyError with the install line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        raise MissingDependencyError(
            f"this command needs {module.split('.')[0]}, which is not installed "
            f"({exc.__class__.__name__}: {exc}); install it with: pip install 'mnistkit[{extra}]'"
        ) from exc
