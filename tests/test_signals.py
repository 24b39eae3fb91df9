"""Signals around native toolchains (errors.signals_held and the CLI's start-up): a SIGTERM must stop an
export cleanly, never crash the process inside a converter (tests/test_export_folder.py kills real exports)."""

import os
import signal
import threading

import pytest

from mnistkit.errors import resolve_signal_path, restart_interrupted_calls, signals_held


class Stop(BaseException):
    pass


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
            os.kill(os.getpid(), signal.SIGTERM)
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
                os.kill(os.getpid(), signal.SIGTERM)
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
