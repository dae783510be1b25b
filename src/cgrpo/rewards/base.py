"""The reward protocol and registry shared by the embedded world and the real tier.

A reward model is called on a batch and returns one float per image::

    reward(images, prompts, references) -> Tensor[B]

- ``images``: float tensor (B, 3, H, W) in [0, 1], the generated images.
- ``prompts``: list of B prompt strings.
- ``references``: float tensor (B, 3, H', W') in [0, 1], each image's reference.

Rewards run under ``torch.no_grad``; they never see the generator's hidden state.
A config names a reward by its registry string plus keyword options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["RewardModel", "register_reward", "make_reward", "make_reward_on", "REWARDS"]


@runtime_checkable
class RewardModel(Protocol):
    """One float per image: higher is better."""

    name: str

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor: ...


REWARDS: dict[str, Callable[..., RewardModel]] = {}


def register_reward(
    name: str,
) -> Callable[[Callable[..., RewardModel]], Callable[..., RewardModel]]:
    """Decorator: make a reward factory available to configs under ``name``."""

    def deco(factory: Callable[..., RewardModel]) -> Callable[..., RewardModel]:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is registered twice")
        REWARDS[name] = factory
        return factory

    return deco


def _register_builtins() -> None:
    """Import the built-in backends so that they register themselves."""
    from cgrpo.rewards import colour, effnet, embedded, hf, hpsv3  # noqa: F401


def make_reward(name: str, **options: Any) -> RewardModel:
    """Build the reward registered as ``name`` with ``options``.

    Unknown names raise ``ValueError`` listing the registered ones.
    """
    _register_builtins()
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; registered rewards: {sorted(REWARDS)}")
    return REWARDS[name](**options)


def make_reward_on(name: str, device: str, /, **options: Any) -> RewardModel:
    """:func:`make_reward`, placed on ``device`` unless ``options`` name one, for the
    backends that take a device (the embedded rewards run on the images' own device)."""
    import inspect

    if "device" not in options:
        _register_builtins()
        factory = REWARDS.get(name)
        if factory is not None:
            params = inspect.signature(factory).parameters.values()
            if any(p.name == "device" or p.kind is p.VAR_KEYWORD for p in params):
                options = {**options, "device": device}
    return make_reward(name, **options)
