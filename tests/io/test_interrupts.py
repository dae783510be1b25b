"""Tests for :mod:`cgrpo.io.interrupts`: a handler that calls ``stop_now`` abandons a
blocking socket read inside ``interruptible()`` at once, and does nothing outside one."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cgrpo.io.interrupts import StopRequested, interruptible, stop_now

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")


@pytest.fixture
def handler() -> Iterator[list[int]]:
    """SIGUSR1 records its number, then calls stop_now (as the preemption handler does)."""
    seen: list[int] = []

    def handle(signum: int, frame: object) -> None:
        seen.append(signum)
        stop_now(signum)

    old = signal.signal(signal.SIGUSR1, handle)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGUSR1, old)


def _kill_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    return timer


def test_signal_during_a_blocking_read_inside_interruptible_raises(handler: list[int]) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(10.0)
        timer = _kill_after(0.2)
        t0 = time.monotonic()
        with pytest.raises(StopRequested) as err, interruptible():
            a.recv(1)  # nothing is ever sent: blocks until the signal
        timer.join()
    assert time.monotonic() - t0 < 2.0
    assert err.value.signum == signal.SIGUSR1 and handler == [signal.SIGUSR1]
    assert "SIGUSR1" in str(err.value)
    assert stop_now(signal.SIGUSR1) is False  # the section is over


def test_signal_outside_interruptible_raises_nothing(handler: list[int]) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(10.0)
        timer = _kill_after(0.2)
        threading.Timer(0.6, b.send, (b"x",)).start()
        assert a.recv(1) == b"x"  # the read goes on after the handler ran
        timer.join()
    assert handler == [signal.SIGUSR1]


def test_nested_sections_and_other_threads() -> None:
    with interruptible():
        with interruptible():
            pass
        with pytest.raises(StopRequested):
            stop_now(signal.SIGTERM)
    assert stop_now(signal.SIGTERM) is False

    got: list[object] = []

    def worker() -> None:
        with interruptible():
            got.append(stop_now(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert got == [False]  # a section in another thread marks nothing


def test_a_stop_recorded_in_a_section_ends_a_later_interruptible_call() -> None:
    with interruptible(False):  # e.g. a training step: the signal only sets a flag
        assert stop_now(signal.SIGTERM) is False
        with pytest.raises(StopRequested) as stop:
            with interruptible():  # the evaluation after it does not start
                raise AssertionError("entered")
        assert stop.value.signum == signal.SIGTERM
    with interruptible():  # the outermost section ended: the stop is forgotten
        pass
    assert stop_now(signal.SIGTERM) is False  # outside any section: nothing recorded
    with interruptible():
        pass
