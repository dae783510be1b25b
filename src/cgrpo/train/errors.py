"""A run that cannot go on (a preempted one stops with
:class:`~cgrpo.train.preemption.Preempted` instead)."""

from __future__ import annotations

__all__ = ["TrainingError"]


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps); the message says why."""
