"""Rewards: one protocol, a registry, and the backends (embedded, real models).

Importing this package imports neither torch nor a backend: :data:`REWARDS` (a
:class:`cgrpo.config.registry.Registry`) knows the built-in kinds by name and imports a
backend when its kind is first built (:mod:`cgrpo.rewards.base`). The ``rewards:`` section
of a config is read by :mod:`cgrpo.rewards.spec` (no torch either); the run's rewards are
scored together by :class:`cgrpo.rewards.set.RewardSet`.
"""

from cgrpo.rewards.base import (
    REWARDS,
    ReferenceUse,
    RewardModel,
    make_reward,
    make_reward_on,
    reads_references,
)

__all__ = [
    "REWARDS",
    "ReferenceUse",
    "RewardModel",
    "make_reward",
    "make_reward_on",
    "reads_references",
]
