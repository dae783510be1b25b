"""Stopping on a signal without losing work: cluster jobs end with SIGTERM (SLURM,
Kubernetes) or SIGUSR1 (SLURM's ``--signal``), a user with Ctrl-C (SIGINT); all three do
the same.

While :class:`Preemption` is active such a signal sets a flag: the trainer finishes the
step in flight (or abandons it, when the signal comes while it waits on a judge or
evaluates: :func:`cgrpo.io.interrupts.interruptible`), writes a checkpoint of the last
complete step and raises :class:`Preempted`; ``cgrpo train`` exits with
:data:`PREEMPTED_EXIT_CODE` and ``cgrpo train --resume`` continues exactly where it
stopped. A second Ctrl-C stops at once (``KeyboardInterrupt``, exit 130), without a new
checkpoint.

``cgrpo train`` enters one :class:`Preemption` (and an interruptible section) as its first
act, so a signal during start-up or the base evaluation is answered too; the trainer's own
``with Preemption()`` then shares it (it is re-entrant)."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from cgrpo.io.interrupts import stop_now

__all__ = ["PREEMPTED_EXIT_CODE", "Preempted", "Preemption"]

#: Exit code of a preempted ``cgrpo train`` (EX_TEMPFAIL: "try again", i.e. requeue).
PREEMPTED_EXIT_CODE = 75

SIGNALS = tuple(
    s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None), signal.SIGINT) if s is not None
)


class Preempted(RuntimeError):
    """The run stopped on a signal after checkpointing ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped on {name} after step {step} with a checkpoint; continue with "
            "cgrpo train --resume (same config and run.out_dir)"
        )
        self.step, self.signum = step, signum


class Preemption:
    """Context manager: while active, SIGTERM / SIGUSR1 / SIGINT set :attr:`signum` (the
    first one) instead of killing the process, and abandon an interruptible call in flight
    (:func:`~cgrpo.io.interrupts.stop_now`); a second SIGINT raises ``KeyboardInterrupt``.
    Re-entrant: entered while another is active, it is that one. Outside the main thread
    it does nothing."""

    _active: Preemption | None = None

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._outer: Preemption | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
            if signum == signal.SIGINT:
                print(
                    "\nCtrl-C: stopping with a checkpoint of the last complete step "
                    "(Ctrl-C again to stop at once, without one)",
                    file=sys.stderr,
                    flush=True,
                )
        stop_now(signum)

    def __enter__(self) -> Preemption:
        outer = Preemption._active
        if outer is not None:  # share the outer one's flag and handlers
            self._outer = outer
            return outer
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
            Preemption._active = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._outer is not None:
            self._outer = None
            return
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
        if Preemption._active is self:
            Preemption._active = None
