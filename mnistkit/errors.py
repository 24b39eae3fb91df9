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


class MissingDependencyError(BackendUnavailableError):
    """An optional dependency (torch, onnx, matplotlib) is needed and not installed."""


class ParityError(MnistkitError):
    """Outputs of a runtime disagree with the reference beyond tolerance."""


class BenchError(MnistkitError):
    """Requested benchmark rows could not be timed (runtime missing, load error, parity failure)."""


class TrainingInterrupted(MnistkitError):
    """Training was interrupted (Ctrl-C); the last completed epoch's checkpoint is intact."""

    exit_code = 130  # EXIT_SIGINT


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the CLI's handler so that cleanup (staging folders,
    temporary files) runs exactly as for Ctrl-C. A BaseException: `except Exception` never swallows it."""


_signalled: list[type[BaseException]] = []


def note_signal(exc_type: type[BaseException]) -> None:
    """Record that SIGINT/SIGTERM arrived (the CLI's handlers call this, then raise)."""
    _signalled.append(exc_type)


def raise_if_signalled() -> None:
    """Raise the pending KeyboardInterrupt/Terminated again.

    Libraries sometimes swallow the exception a signal handler raises (torch.onnx.export turns it
    into an export failure and carries on): long operations call this at their commit points, so a
    signal always stops them before anything is published.
    """
    if _signalled:
        raise _signalled[0]()


# The exit codes of every command (the README's table).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (torch's exporter colours its messages)."""
    return _ANSI.sub("", text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first non-empty line (or its class name), for one-line messages."""
    for line in strip_ansi(str(exc)).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
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
