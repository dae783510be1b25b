"""The reward protocol and registry shared by the embedded world and the real tier.

A reward model is called on a batch and returns one float per image::

    reward(images, prompts, references) -> Tensor[B]

- ``images``: float tensor (B, 3, H, W) in [0, 1], the generated images.
- ``prompts``: list of B prompt strings.
- ``references``: float tensor (B, 3, H', W') in [0, 1], each image's reference.

Rewards run under ``torch.no_grad``; they never see the generator's hidden state. A
reward that ignores ``references`` may say so with ``uses_references = False`` (HPS-v3,
CLIP-T, the VLM judge's prompt rubric): with several references per image, the reward set
then calls it once instead of once per reference.
A config names a reward by its registry string plus keyword options.

The registry depends on no backend: it knows the built-in kinds as ``"module:factory"``
entries (:data:`BUILTIN_REWARDS`) and imports a backend only when its kind is first looked
up (:func:`reward_factory`, :func:`make_reward`, ``REWARDS[name]``). The backends do not
import this module. Other code adds a kind at run time with
``register_reward("mine")(factory)`` or as a decorator.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "BUILTIN_REWARDS",
    "REWARDS",
    "RewardModel",
    "make_reward",
    "make_reward_on",
    "register_reward",
    "reward_factory",
    "reward_kinds",
]


@runtime_checkable
class RewardModel(Protocol):
    """One float per image: higher is better."""

    name: str

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor: ...


RewardFactory = Callable[..., RewardModel]

#: The built-in kinds: name -> ``"module:attribute"`` of the factory (a class or a function).
BUILTIN_REWARDS: dict[str, str] = {
    "colour": "cgrpo.rewards.colour:ColourReward",
    "effnet": "cgrpo.rewards.effnet:EffNetIdentityReward",
    "embedded_identity": "cgrpo.rewards.embedded_identity:EmbeddedIdentityReward",
    "embedded_prompt": "cgrpo.rewards.embedded_prompt:EmbeddedPromptReward",
    "dinov2": "cgrpo.rewards.hf:Dinov2IdentityReward",
    "dino": "cgrpo.rewards.hf:DinoIdentityReward",
    "clip": "cgrpo.rewards.hf:ClipReward",
    "hpsv3": "cgrpo.rewards.hpsv3:HPSv3Reward",
    "vlm_judge": "cgrpo.rewards.vlm_judge:VLMJudgeReward",
}


class RewardRegistry(MutableMapping[str, RewardFactory]):
    """Name -> reward factory; a lazy entry (a ``"module:attribute"`` string) is imported
    on its first lookup. Membership, iteration and ``len`` never import anything."""

    def __init__(self, lazy: dict[str, str]) -> None:
        self._lazy = dict(lazy)
        self._factories: dict[str, RewardFactory] = {}

    def __getitem__(self, name: str) -> RewardFactory:
        if name not in self._factories:
            spec = self._lazy[name]  # KeyError for an unknown name, as a dict
            module, _, attr = spec.partition(":")
            self._factories[name] = getattr(importlib.import_module(module), attr)
            del self._lazy[name]
        return self._factories[name]

    def __setitem__(self, name: str, factory: RewardFactory) -> None:
        self._lazy.pop(name, None)
        self._factories[name] = factory

    def __delitem__(self, name: str) -> None:
        if name in self._factories:
            del self._factories[name]
        else:
            del self._lazy[name]

    def __contains__(self, name: object) -> bool:
        return name in self._factories or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter([*self._factories, *self._lazy])

    def __len__(self) -> int:
        return len(self._factories) + len(self._lazy)

    def __repr__(self) -> str:
        return f"RewardRegistry({sorted(self)})"


#: Every registered reward kind, the built-ins included (looked up lazily).
REWARDS: RewardRegistry = RewardRegistry(BUILTIN_REWARDS)


def register_reward(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Make a reward factory available to configs under ``name``: ``register_reward(name)
    (factory)`` or ``@register_reward(name)``. A name that is taken raises ``ValueError``."""

    def deco(factory: RewardFactory) -> RewardFactory:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is registered twice")
        REWARDS[name] = factory
        return factory

    return deco


def reward_kinds() -> list[str]:
    """The registered reward names, sorted (the built-ins included, none imported)."""
    return sorted(REWARDS)


def reward_factory(name: str) -> RewardFactory:
    """The factory registered as ``name`` (importing its backend if needed), to check a
    config against its signature before building it. Unknown names raise ``ValueError``
    listing the registered ones."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; registered rewards: {reward_kinds()}")
    return REWARDS[name]


def make_reward(name: str, **options: Any) -> RewardModel:
    """Build the reward registered as ``name`` with ``options``.

    Unknown names raise ``ValueError`` listing the registered ones.
    """
    return reward_factory(name)(**options)


def make_reward_on(name: str, device: str, /, **options: Any) -> RewardModel:
    """:func:`make_reward`, placed on ``device`` unless ``options`` name one, for the
    backends that take a device (the embedded rewards run on the images' own device)."""
    factory = reward_factory(name)
    if "device" not in options:
        params = inspect.signature(factory).parameters.values()
        if any(p.name == "device" or p.kind is p.VAR_KEYWORD for p in params):
            options = {**options, "device": device}
    return factory(**options)
