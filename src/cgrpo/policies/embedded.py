"""The embedded world's policy: the tiny in-context transformer behind the protocol.

Latents are images in [-1, 1] (the tiny model works in pixel space, so ``decode``
is a rescale); the reference enters as in-context tokens and the prompt as word
tokens (see :mod:`cgrpo.world.generator`). The starting weights are kept frozen
as the reference policy for the optional KL penalty.

By default every weight trains. With ``lora=(rank, alpha, targets)`` (``model.lora_rank``)
the model is frozen and a peft LoRA on the ``targets`` of every block trains instead
(``W x + alpha / rank * B A x``, ``B`` zero at the start, so the starting velocity is
unchanged); the checkpoint still holds the whole state (base and LoRA weights).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import torch

from cgrpo.policies.base import Condition
from cgrpo.policies.sharding import full_tensor
from cgrpo.world.generator import TinyKontext, Tokenizer
from cgrpo.world.pretrain import load_generator


class EmbeddedPolicy:
    """:class:`~cgrpo.policies.base.Policy` over :class:`~cgrpo.world.generator.TinyKontext`."""

    def __init__(
        self,
        model: TinyKontext | None = None,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        *,
        keep_reference: bool = False,
        lora: tuple[int, float | None, list[str]] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = (model if model is not None else load_generator(weights)).to(self.device)
        if lora is not None:
            self._add_lora(*lora)
        self.tokenizer = Tokenizer(self.model.config.max_text)
        self.ref_model: TinyKontext | None = None
        self.old_model: TinyKontext | None = None  # nft's old policy (enable_old_policy)
        if keep_reference:
            self.ref_model = copy.deepcopy(self.model).requires_grad_(False).eval()

    def _add_lora(self, rank: int, alpha: float | None, targets: list[str]) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        names = {n.split("blocks.", 1)[1].split(".", 1)[1] for n, m in self.model.named_modules()
                 if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)}  # fmt: skip
        unknown = sorted(set(targets) - names)
        if unknown:
            raise ValueError(
                f"model.lora_targets {unknown} are not linear layers of the embedded blocks; "
                f"valid: {sorted(names)}"
            )
        self.model.requires_grad_(False)
        suffixes = "|".join(t.replace(".", r"\.") for t in targets)
        cfg = LoraConfig(
            r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
            target_modules=rf"blocks\.\d+\.({suffixes})",
        )  # fmt: skip
        self.model = inject_adapter_in_model(cfg, self.model)

    def encode_condition(self, references: torch.Tensor, prompts: list[str]) -> Condition:
        if not isinstance(references, torch.Tensor):
            raise ValueError(
                "the embedded model takes one square reference per pair, (B, 3, H, W); got "
                f"{type(references).__name__} (several references per pair are UNO's: use "
                "model.kind=flux with flux.position_scheme=uno)"
            )
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
        return self.model(x, sigma, condition["text_ids"], reference=condition["reference"])

    def reference_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        if self.ref_model is None:
            raise RuntimeError(
                "this policy keeps no reference model: build it with keep_reference=True "
                "(the trainer does so when grpo.kl_coef > 0)"
            )
        with torch.no_grad():
            return self.ref_model(x, sigma, condition["text_ids"], reference=condition["reference"])

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
            return self._old()(x, sigma, condition["text_ids"], reference=condition["reference"])

    @torch.no_grad()
    def soft_update_old(self, decay: float) -> None:
        """``old <- decay old + (1 - decay) current``; under FSDP the current weights are
        gathered (the old copy is a plain, replicated module: the model is tiny)."""
        old = dict(self._old().named_parameters())
        for name, p in self.model.named_parameters():
            cur = full_tensor(p).to(old[name].device, old[name].dtype)
            old[name].mul_(decay).add_(cur, alpha=1.0 - decay)

    def old_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        old = self._old().state_dict().items()
        return {k: v.detach().clone() if copy else v.detach() for k, v in old}

    def load_old_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._old().load_state_dict(state)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def shard_modules(self) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
        """FSDP units: each joint-attention block, and the whole model (the rest)."""
        return self.model, list(self.model.blocks)

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def trainable_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        state = self.model.state_dict().items()
        return {k: v.detach().clone() if copy else v.detach() for k, v in state}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
