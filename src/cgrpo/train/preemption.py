"""Preemption: cluster jobs end with SIGTERM (SLURM, Kubernetes) or SIGUSR1 (SLURM's
``--signal``). While :class:`Preemption` is active such a signal only sets a flag; the
trainer finishes the step in flight, writes a checkpoint and raises :class:`Preempted`,
and ``cgrpo train`` exits with :data:`PREEMPTED_EXIT_CODE`. ``cgrpo train --resume``
continues exactly where it stopped."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["PREEMPTED_EXIT_CODE", "Preempted", "Preemption"]

#: Exit code of a preempted ``cgrpo train`` (EX_TEMPFAIL: "try again", i.e. requeue).
PREEMPTED_EXIT_CODE = 75

SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)


class Preempted(RuntimeError):
    """The run stopped on a preemption signal after checkpointing ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped on {name} after step {step} with a checkpoint; continue with "
            "cgrpo train --resume (same config and run.out_dir)"
        )
        self.step, self.signum = step, signum


class Preemption:
    """Context manager: while active, SIGTERM / SIGUSR1 set :attr:`signum` instead of
    killing the process (outside the main thread it does nothing)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
