"""Signals: SIGINT/SIGTERM stop a command cleanly, never mid-publish and never inside a native toolchain.

The CLI's handlers (cli.py) raise KeyboardInterrupt or Terminated in the main thread; the commit step of a command
runs under `publishing` (held signals, then marked committed); format writers run under `signals_held`; libraries
that replace the handlers (Ray) run under `keep_signal_handlers`; and the process's signal path and alternate
signal stack are made safe for the native libraries (LiteRT/JAX, OpenVINO) that would otherwise crash on a signal.
"""

from __future__ import annotations

import contextlib


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the CLI's handler so that cleanup (staging folders,
    temporary files) runs exactly as for Ctrl-C. A BaseException: `except Exception` never swallows it."""


_signalled: list[type[BaseException]] = []


def note_signal(exc_type: type[BaseException]) -> None:
    """Record that SIGINT/SIGTERM arrived (the CLI's handlers call this, then raise)."""
    _signalled.append(exc_type)


_committed: list[str] = []


def mark_committed(what: str) -> None:
    """The command's result is published (an export folder or deploy folder swapped in, a score run's
    _SUCCESS.json written): from here on SIGINT/SIGTERM no longer stop it. The CLI's handlers then only note
    the signal, and the command ends as it would have a moment later: exit 0, its output complete, never
    "terminated" with the new folder in place (or killed by the default handler with no line at all)."""
    _committed.append(what)


@contextlib.contextmanager
def publishing(what: str):
    """The commit step of a command (the swap of a finished folder into place), run with SIGINT/SIGTERM held
    and marked committed when it succeeds: a signal arriving during the swap is delivered after it, and then
    finds the result published (see mark_committed), so it never splits "complete" from "terminated"."""
    with signals_held():
        yield
        mark_committed(what)


def committed() -> str | None:
    """What was published, once mark_committed was called in this command; else None."""
    return _committed[-1] if _committed else None


def reset_committed() -> None:
    _committed.clear()


def raise_if_signalled() -> None:
    """Raise the pending KeyboardInterrupt/Terminated again.

    Libraries sometimes swallow the exception a signal handler raises (torch.onnx.export turns it
    into an export failure and carries on): long operations call this at their commit points, so a
    signal always stops them before anything is published.
    """
    if _signalled:
        raise _signalled[0]()


def restart_interrupted_calls() -> None:
    """Let system calls that SIGINT/SIGTERM interrupt restart (SA_RESTART), as C libraries expect.

    Python installs its handlers without SA_RESTART (it retries its own calls, PEP 475), so a blocking
    call in a native library's thread returns EINTR when a signal lands; not every library retries:
    SIGTERM during a LiteRT conversion left the process to crash later in the garbage collector (exit
    -11, measured here) until the handlers restarted interrupted calls. Call it after every
    signal.signal for these two signals (signal.signal clears the flag)."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.siginterrupt(s, False)
        except (OSError, ValueError, AttributeError):  # not the main thread, or a platform without it
            pass


def resolve_signal_path() -> None:
    """Run Python's C signal handler once, now, on the normal stack.

    The first signal a process takes makes the dynamic linker resolve the symbols Python's handler calls,
    and that resolution saves the full vector state (XSAVE: several KB with AVX-512). A native library
    (of the LiteRT/JAX/torch stack) gives threads a small alternate signal stack, so a first SIGTERM during
    a LiteRT conversion overflowed it: the process died with SIGSEGV at the faulting stack address, inside
    `_dl_runtime_resolve_xsavec` called from `trip_signal` (core dump, measured here). Taking one harmless
    SIGUSR1 at start-up resolves those symbols while the stack is large."""
    import signal

    if not hasattr(signal, "SIGUSR1") or not hasattr(signal, "raise_signal"):
        return
    try:
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    except (OSError, ValueError):  # not the main thread
        return
    try:
        signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous if previous is not None else signal.SIG_DFL)


SIGNAL_STACK_BYTES = 1 << 20
_signal_stack: list = []  # the one buffer, kept for the life of the process (a thread's stack must outlive its use)


def ensure_signal_stack() -> None:
    """Give the main thread a 1 MiB alternate signal stack when a library left it a small one.

    Python installs its SIGINT/SIGTERM handlers with SA_ONSTACK, so they run on the thread's alternate
    stack when one is set. OpenVINO's CPU plugin sets a ~10 KB one on the thread that creates it (measured
    with gdb: sigaltstack from create_plugin_engine, 9,968 bytes on a 2-vCPU EPYC). The kernel's signal frame
    holds the CPU's vector state (about 1 KB with AVX2, 3.5 KB with AVX-512, 11 KB with AMX): on a Xeon, a
    SIGTERM taken after an OpenVINO model was compiled overflowed it and the process died with SIGSEGV (exit
    -11 in CI's export-under-SIGTERM test; never on the AVX2 machine). Called after every place mnistkit
    creates an OpenVINO core and when held signals are delivered; a no-op when the thread has no alternate
    stack (handlers then use its own) or one of at least this size, and outside the main thread."""
    import ctypes
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        sigaltstack = libc.sigaltstack
    except (OSError, AttributeError):  # not a POSIX C library
        return
    old = StackT()
    if sigaltstack(None, ctypes.byref(old)) != 0:
        return
    ss_onstack, ss_disable = 1, 2
    if old.ss_flags & (ss_disable | ss_onstack) or old.ss_size >= SIGNAL_STACK_BYTES:
        return
    if not _signal_stack:
        _signal_stack.append(ctypes.create_string_buffer(SIGNAL_STACK_BYTES))
    buf = _signal_stack[0]
    new = StackT(ctypes.cast(buf, ctypes.c_void_p), 0, SIGNAL_STACK_BYTES)
    sigaltstack(ctypes.byref(new), None)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM while native toolchains run, then deliver them.

    A Python signal handler raises its exception at the next bytecode, and that can be inside a C
    extension's callback or module initialisation, which cannot unwind a Python exception: SIGTERM during
    a LiteRT conversion (litert-converter's nanobind module being initialised) aborted or segfaulted the
    process (exit -6/-11, staging left behind; measured here, at 40-70 % of an export). So format writers
    run with the signals held: a signal is recorded and, when the writer returns or fails, the handler
    that was in place is called with it (mnistkit's raises Terminated/KeyboardInterrupt; Python's default
    SIGINT handler raises KeyboardInterrupt; SIG_DFL is re-sent). The stop comes at the end of the
    current format instead of mid-call. Outside the main thread (where handlers cannot be set) it holds
    nothing."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def hold(signum, frame):
        held.append(signum)

    for s in previous:
        signal.signal(s, hold)
    restart_interrupted_calls()
    # Blocked in this thread too: threads the toolchain starts inherit the mask and never take these
    # signals (Python only needs the main thread to); unblocking at the end delivers a pending one to `hold`.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(previous)) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        ensure_signal_stack()  # before a held signal is delivered to this thread (a toolchain may have set one)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        restart_interrupted_calls()
        if held:
            handler = previous[held[0]]
            if callable(handler):
                handler(held[0], None)
            elif handler != signal.SIG_IGN:
                os.kill(os.getpid(), held[0])


@contextlib.contextmanager
def keep_signal_handlers():
    """Put back the SIGINT/SIGTERM handlers a library replaces while the block runs (ray.init installs its
    driver's own, which exit 15 with no line): the command's handlers raise Terminated/KeyboardInterrupt, so
    its clean-up runs and the exit code and line are the table's. Outside the main thread it does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if signal.getsignal(s) is not handler and handler is not None:
                signal.signal(s, handler)
        restart_interrupted_calls()
