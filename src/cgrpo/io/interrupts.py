"""Abandoning a blocking call on a stop signal.

A signal handler that only sets a flag (see ``cgrpo.train.preemption``) is not enough while
the main thread waits in a blocking call that may never return, such as a judge request to a
server that hangs: the flag is read only after the call ends. Code that makes such a call
wraps it in :func:`interruptible`; the signal handler, after setting its flag, calls
:func:`stop_now`, which raises :class:`StopRequested` out of the handler while an
interruptible section is active. Python runs handlers in the main thread between bytecodes
and, for a blocking socket read, as soon as the read is interrupted (``EINTR``), so the
exception ends the read at once and unwinds the section.

Only the main thread can be interrupted this way: :func:`interruptible` entered in another
thread marks nothing, and the call there runs to its end (or its own timeout).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["StopRequested", "interruptible", "stop_now"]

#: How many :func:`interruptible` sections the main thread is inside (nesting counts).
_depth = 0


class StopRequested(Exception):
    """A stop signal arrived while the main thread was inside :func:`interruptible`: the
    blocking call there was abandoned. ``signum`` is the signal's number."""

    def __init__(self, signum: int) -> None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(f"{name} received: the call in flight was abandoned")
        self.signum = signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Mark the body as a blocking call that a stop signal may abandon: while it runs in the
    main thread, :func:`stop_now` raises :class:`StopRequested` into it. In any other thread
    this marks nothing."""
    global _depth
    if not _in_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def stop_now(signum: int) -> bool:
    """For a signal handler to call after recording the signal: raise
    :class:`StopRequested` (``signum``) when the main thread is inside :func:`interruptible`,
    so the blocking call there is abandoned; otherwise return False and raise nothing."""
    if _depth > 0 and _in_main_thread():
        raise StopRequested(signum)
    return False
