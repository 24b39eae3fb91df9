"""Signals around native toolchains (signals.signals_held and the CLI's start-up): a SIGTERM must stop an
export cleanly, never crash the process inside a converter (tests/test_export_folder.py kills real exports)."""

import signal
import threading

import pytest

from conftest import need_module, side_by_side
from mnistkit.signals import resolve_signal_path, restart_interrupted_calls, signals_held


class Stop(BaseException):
    pass


def _to_this_thread(signum: int) -> None:
    """`signum` to the test's own (main) thread. os.kill would direct it at the process, and the kernel may hand it
    to a background thread of the suite (the Prefetch pool) that does not block it, whose C handler then runs
    whenever that thread is scheduled: after the block under test, on a busy machine (seen once in CI)."""
    signal.pthread_kill(threading.get_ident(), signum)


@pytest.fixture
def raising_handler():
    def handler(signum, frame):
        raise Stop(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_signal_inside_is_delivered_at_the_end(raising_handler):
    reached = []
    with pytest.raises(Stop):
        with signals_held():
            _to_this_thread(signal.SIGTERM)
            for _ in range(1000):  # bytecodes run: a handler in place would have raised by now
                pass
            reached.append("end of block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGTERM).__name__ == "handler"  # the handler is back


def test_threads_started_inside_never_take_the_signals(raising_handler):
    seen = {}

    def worker():
        seen["mask"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    with signals_held():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert {signal.SIGINT, signal.SIGTERM} <= seen["mask"]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # unblocked here again


def test_nested_holds_deliver_once_at_the_outer_end(raising_handler):
    with pytest.raises(Stop):
        with signals_held():
            with signals_held():
                _to_this_thread(signal.SIGTERM)
            inner_done = True
    assert inner_done


def test_nothing_pending_means_nothing_raised(raising_handler):
    with signals_held():
        pass


def test_start_up_helpers_leave_handlers_as_they_were(raising_handler):
    before = signal.getsignal(signal.SIGUSR1)
    resolve_signal_path()
    restart_interrupted_calls()
    assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.getsignal(signal.SIGTERM).__name__ == "handler"


def _altstack() -> tuple[int, int]:
    """(flags, size) of this thread's alternate signal stack."""
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    s = StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s)) == 0
    return s.ss_flags, s.ss_size


def _usable(flags_size) -> bool:
    from mnistkit.signals import SIGNAL_STACK_BYTES

    flags, size = flags_size
    return bool(flags & 2) or size >= SIGNAL_STACK_BYTES  # disabled (the thread's own stack), or 1 MiB


def test_a_small_alternate_signal_stack_is_replaced_and_signals_still_arrive(raising_handler):
    """A library's 10 KB alternate stack (OpenVINO's CPU plugin sets one) overflows with AVX-512/AMX signal
    frames: ensure_signal_stack swaps in 1 MiB, and a SIGTERM is then handled on it."""
    import ctypes

    from mnistkit.signals import ensure_signal_stack

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    libc = ctypes.CDLL(None)
    before = StackT()
    libc.sigaltstack(None, ctypes.byref(before))
    small = ctypes.create_string_buffer(9968)
    try:
        assert libc.sigaltstack(ctypes.byref(StackT(ctypes.cast(small, ctypes.c_void_p), 0, 9968)), None) == 0
        assert _altstack() == (0, 9968)
        ensure_signal_stack()
        assert _altstack()[1] >= 1 << 20
        with pytest.raises(Stop):
            _to_this_thread(signal.SIGTERM)
            for _ in range(1000):
                pass
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


def test_loading_an_openvino_model_leaves_a_usable_signal_stack(tiny_export):
    from mnistkit.backends import create_backend

    need_module("openvino", "openvino")
    with create_backend(tiny_export / "model.xml", "openvino") as b:
        b.run(__import__("numpy").zeros((3, 28, 28), "uint8"))
        assert _usable(_altstack())


# A command whose commit step (the folder swap) is followed, or preceded, by a SIGTERM to itself: the outcome must
# be one of the two the exit-code table allows, decided by whether the result was published (issue 20: a SIGTERM
# just after optimize swapped its deploy folder in was reported as "terminated", or killed the process silently).
SIGNAL_AROUND_SWAP = r"""
import os, signal, sys
import mnistkit.exporter, mnistkit.fileio
real, write, when = mnistkit.fileio.replace_dir, mnistkit.exporter.atomic_write_json, sys.argv[1]
def manifest(*args):  # the last step in the staging folder, before the swap
    if when == "before":
        os.kill(os.getpid(), signal.SIGTERM)
    return write(*args)
def swap(new, target):
    if when == "during":
        os.kill(os.getpid(), signal.SIGTERM)
    real(new, target)
    if when == "after":
        os.kill(os.getpid(), signal.SIGTERM)
mnistkit.fileio.replace_dir = mnistkit.exporter.replace_dir = swap
mnistkit.exporter.atomic_write_json = manifest
from mnistkit.cli import main
sys.argv = ["mnistkit", *sys.argv[2:]]
main()
"""


def _around_swap(when, *args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", SIGNAL_AROUND_SWAP, when, *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_a_signal_at_the_export_swap_is_terminated_or_complete_never_both(tmp_path, tiny_ckpt, tiny_data):
    """Before the swap, during it and after it (three exports side by side, each in its own process)."""
    def case(when):
        out = tmp_path / when / "export"
        out.parent.mkdir()
        return when, out, _around_swap(when, "export", tiny_ckpt, "--format", "onnx", "--out-dir", out, "--data-dir",
                                       tiny_data, cwd=out.parent)

    for when, out, r in side_by_side(case, ["before", "during", "after"]):
        lines = r.stderr.strip().splitlines()
        if when == "before":
            assert r.returncode == 143 and lines[-1] == "error: terminated (SIGTERM)", r.stderr
            assert not out.exists()
        else:  # during the swap is inside publishing: the signal waits, and the folder is complete
            assert r.returncode == 0, (when, r.stderr)
            assert lines[-1] == f"note: SIGTERM arrived after {out} was complete; finishing", (when, r.stderr)
            assert (out / "manifest.json").is_file() and (out / "model.onnx").is_file()


def test_a_signal_right_after_optimize_swaps_its_deploy_folder_in(tmp_path, tiny_export, tiny_data):
    out = tmp_path / "deploy"
    r = _around_swap("after", "optimize", tiny_export, "--out-dir", out, "--batch-sizes", "1", "--budget", "10s",
                     "--data-dir", tiny_data, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"note: SIGTERM arrived after {out} was complete; finishing" in r.stderr.splitlines(), r.stderr
    assert "error" not in r.stderr and (out / "deploy.json").is_file()
