"""Rewards: one protocol, a registry, and the backends (embedded, real models)."""

from cgrpo.rewards.base import REWARDS, RewardModel, make_reward, register_reward

__all__ = ["REWARDS", "RewardModel", "make_reward", "register_reward"]
