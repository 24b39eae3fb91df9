"""Capture what native libraries print, at the file-descriptor level.

torch.onnx, onnxruntime (`preload_dlls()`, provider-load warnings) and onnxscript print from C++ or
Python straight to fds 1 and 2. With --json, stdout must carry exactly one JSON object, so such
calls run inside `captured_output()`; the text is kept for error messages instead of being lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    text: str = ""


@contextlib.contextmanager
def captured_output(stdout: bool = True, stderr: bool = True) -> Iterator[Captured]:
    """Redirect fds 1 and/or 2 (and sys.stdout/sys.stderr) into a buffer for the duration."""
    result = Captured()
    fds = [fd for fd, on in ((1, stdout), (2, stderr)) if on]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
        saved = {}
        try:
            for fd in fds:
                try:
                    saved[fd] = os.dup(fd)
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no real fd (some embedded interpreters): python-level only
                    saved.pop(fd, None)
            with contextlib.ExitStack() as stack:
                text_sink = open(os.dup(sink.fileno()), "w", closefd=True)
                stack.callback(text_sink.close)
                if stdout:
                    stack.enter_context(contextlib.redirect_stdout(text_sink))
                if stderr:
                    stack.enter_context(contextlib.redirect_stderr(text_sink))
                yield result
                text_sink.flush()
        finally:
            for fd, dup in saved.items():
                os.dup2(dup, fd)
                os.close(dup)
            sink.seek(0)
            result.text = sink.read().decode("utf-8", "replace")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[Captured]:
    """Capture what native code and child processes write to fd 2, while Python's sys.stderr (rich's
    progress bar and notes) keeps writing to the real stderr. For runtimes that start helper processes
    that inherit fd 2 (Ray's raylet and workers) and print start-up notes from C++."""
    result = Captured()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no real fd 2: nothing native to capture
            yield result
            return
        real = open(os.dup(saved), "w", closefd=True, encoding=getattr(sys.stderr, "encoding", None) or "utf-8")
        old = sys.stderr
        try:
            os.dup2(sink.fileno(), 2)
            sys.stderr = real
            yield result
        finally:
            try:
                real.flush()
            except (ValueError, OSError):
                pass
            sys.stderr = old
            os.dup2(saved, 2)
            os.close(saved)
            real.close()
            sink.seek(0)
            result.text = sink.read().decode("utf-8", "replace")
