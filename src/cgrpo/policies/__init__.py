"""Policies: the one protocol through which a generator enters the trainer."""

from cgrpo.policies.base import Condition, Policy

__all__ = ["Condition", "Policy"]
