"""Rewards: one protocol, a registry, and the backends (embedded, real models).

Importing this package imports no backend: :data:`REWARDS` knows the built-in kinds by
name and imports a backend when its kind is first built (:mod:`cgrpo.rewards.base`).
"""

from cgrpo.rewards.base import (
    REWARDS,
    RewardModel,
    make_reward,
    register_reward,
    reward_factory,
    reward_kinds,
)

__all__ = [
    "REWARDS",
    "RewardModel",
    "make_reward",
    "register_reward",
    "reward_factory",
    "reward_kinds",
]
