"""The embedded world's policy: the tiny in-context transformer behind the protocol.

Latents are images in [-1, 1] (the tiny model works in pixel space, so ``decode``
is a rescale); the reference enters as in-context tokens and the prompt as word
tokens (see :mod:`cgrpo.world.generator`). The starting weights are kept frozen
as the reference policy for the optional KL penalty.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import torch

from cgrpo.policies.base import Condition
from cgrpo.world.generator import TinyKontext, Tokenizer
from cgrpo.world.pretrain import load_generator


class EmbeddedPolicy:
    """:class:`~cgrpo.policies.base.Policy` over :class:`~cgrpo.world.generator.TinyKontext`."""

    def __init__(
        self,
        model: TinyKontext | None = None,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        keep_reference: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = (model if model is not None else load_generator(weights)).to(self.device)
        self.tokenizer = Tokenizer(self.model.config.max_text)
        self.ref_model: TinyKontext | None = None
        self.old_model: TinyKontext | None = None  # nft's old policy (enable_old_policy)
        if keep_reference:
            self.ref_model = copy.deepcopy(self.model).requires_grad_(False).eval()

    def encode_condition(self, references: torch.Tensor, prompts: list[str]) -> Condition:
        if references.shape[0] != len(prompts):
            raise ValueError(
                f"{references.shape[0]} references but {len(prompts)} prompts: give one each"
            )
        size = self.model.config.image_size
        if references.shape[-2:] != (size, size):
            references = torch.nn.functional.interpolate(
                references, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        return Condition(
            text_ids=self.tokenizer(prompts).to(self.device),
            reference=(references.to(self.device).float() * 2 - 1),
        )

    def latent_shape(self) -> tuple[int, ...]:
        c = self.model.config
        return (c.channels, c.image_size, c.image_size)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        return self.model(x, sigma, condition["text_ids"], condition["reference"])

    def reference_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        if self.ref_model is None:
            raise RuntimeError(
                "this policy keeps no reference model: build it with keep_reference=True "
                "(the trainer does so when grpo.kl_coef > 0)"
            )
        with torch.no_grad():
            return self.ref_model(x, sigma, condition["text_ids"], condition["reference"])

    # -- the old policy (HasOldPolicy): a frozen copy of the tiny model -----------------------

    def enable_old_policy(self) -> None:
        if self.old_model is None:
            self.old_model = copy.deepcopy(self.model).requires_grad_(False).eval()

    def _old(self) -> TinyKontext:
        if self.old_model is None:
            raise RuntimeError("this policy keeps no old policy: call enable_old_policy() first")
        return self.old_model

    def old_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        with torch.no_grad():
            return self._old()(x, sigma, condition["text_ids"], condition["reference"])

    @torch.no_grad()
    def soft_update_old(self, decay: float) -> None:
        """``old <- decay old + (1 - decay) current``; under FSDP the current weights are
        gathered (the old copy is a plain, replicated module: the model is tiny)."""
        from cgrpo.distributed import Dist

        old = dict(self._old().named_parameters())
        for name, p in self.model.named_parameters():
            cur = Dist.full(p).to(old[name].device, old[name].dtype)
            old[name].mul_(decay).add_(cur, alpha=1.0 - decay)

    def old_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._old().state_dict().items()}

    def load_old_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._old().load_state_dict(state)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def shard_modules(self) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
        """FSDP units: each joint-attention block, and the whole model (the rest)."""
        return self.model, list(self.model.blocks)

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
