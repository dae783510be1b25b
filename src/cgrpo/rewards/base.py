"""The reward protocol and registry shared by the embedded world and the real tier.

A reward model is called on a batch and returns one float per image::

    reward(images, prompts, references) -> Tensor[B]

- ``images``: float tensor (B, 3, H, W) in [0, 1], the generated images.
- ``prompts``: list of B prompt strings.
- ``references``: float tensor (B, 3, H', W') in [0, 1], each image's reference.

Rewards run under ``torch.no_grad``; they never see the generator's hidden state. A
reward that ignores ``references`` says so with ``uses_references = False`` (HPS-v3,
CLIP-T, the VLM judge's prompt rubric; the :class:`ReferenceUse` capability): with several
references per image, the reward set then calls it once instead of once per reference.
A config names a reward by its registry name plus keyword options.

:data:`REWARDS` is a :class:`cgrpo.config.registry.Registry` (the one registry mechanism of
the project). It knows the built-in kinds as ``"module:factory"`` entries
(:data:`BUILTIN_REWARDS`) and imports a backend only when its kind is first looked up
(``REWARDS.get(name)``, :func:`make_reward`). The backends do not import this module. Other
code adds a kind at run time with ``REWARDS.register("mine")(factory)`` or as a decorator.

This module imports no torch (``torch`` appears in type hints only).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cgrpo.config.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUILTIN_REWARDS",
    "REWARDS",
    "ReferenceUse",
    "RewardModel",
    "make_reward",
    "make_reward_on",
    "reads_references",
]


@runtime_checkable
class RewardModel(Protocol):
    """One float per image: higher is better."""

    name: str

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor: ...


@runtime_checkable
class ReferenceUse(Protocol):
    """The optional capability of a reward that says whether it reads ``references``."""

    uses_references: bool


def reads_references(model: object) -> bool:
    """Whether ``model`` reads its references: its ``uses_references`` where it declares one
    (:class:`ReferenceUse`), else true."""
    return model.uses_references if isinstance(model, ReferenceUse) else True


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
    "http": "cgrpo.rewards.remote:RemoteReward",
    "vlm_judge": "cgrpo.rewards.vlm_judge:VLMJudgeReward",
}

#: Every registered reward kind, the built-ins included (imported on first lookup).
REWARDS: Registry[RewardFactory] = Registry("reward", tag=False, lazy=BUILTIN_REWARDS)


def make_reward(name: str, **options: Any) -> RewardModel:
    """Build the reward registered as ``name`` with ``options``.

    Unknown names raise ``ValueError`` naming the registered ones.
    """
    return REWARDS.get(name)(**options)


def make_reward_on(name: str, device: str, /, **options: Any) -> RewardModel:
    """:func:`make_reward`, placed on ``device`` unless ``options`` name one, for the
    backends that take a device (the embedded rewards run on the images' own device)."""
    factory = REWARDS.get(name)
    if "device" not in options:
        params = inspect.signature(factory).parameters.values()
        if any(p.name == "device" or p.kind is p.VAR_KEYWORD for p in params):
            options = {**options, "device": device}
    return factory(**options)
