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

__all__ = ["StopRequested", "interruptible", "reset", "stop_now"]

#: The main thread's :func:`interruptible` sections, innermost last: whether each may be
#: abandoned (``interruptible(False)`` marks a part inside one that must run to its end).
_sections: list[bool] = []

#: The stop signal :func:`stop_now` recorded inside a section (None: none since the
#: outermost section began): an interruptible section entered after it raises at once.
_pending: int | None = None


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
def interruptible(active: bool = True) -> Iterator[None]:
    """Mark the body as a blocking call that a stop signal may abandon: while it runs in the
    main thread, :func:`stop_now` raises :class:`StopRequested` into it. ``active=False``
    marks a body inside such a section that must not be abandoned (e.g. a training step
    whose update is in flight), until an inner ``interruptible()`` marks a call in it again.
    In any other thread this marks nothing."""
    if not _in_main_thread():
        yield
        return
    if active and _pending is not None:  # the stop came before the call: do not start it
        raise StopRequested(_pending)
    _sections.append(active)
    try:
        yield
    finally:
        _sections.pop()
        if not _sections:
            reset()


def stop_now(signum: int) -> bool:
    """For a signal handler to call after recording the signal: raise
    :class:`StopRequested` (``signum``) when the main thread's innermost
    :func:`interruptible` section may be abandoned; otherwise return False and raise
    nothing. Inside any section (even ``interruptible(False)``) the signal is recorded:
    an interruptible section entered later, until the outermost section ends or
    :func:`reset`, raises at once."""
    global _pending
    if _sections and _in_main_thread():
        _pending = signum  # (until the outermost section ends)
    if _sections and _sections[-1] and _in_main_thread():
        raise StopRequested(signum)
    return False


def reset() -> None:
    """Forget a stop recorded by :func:`stop_now` (a new command in the same process)."""
    global _pending
    _pending = None
