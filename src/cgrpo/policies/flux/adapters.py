"""The LoRA adapters of :class:`~cgrpo.policies.flux.policy.FluxPolicy`, the only weights
GRPO trains (see :mod:`cgrpo.policies.flux.lora` for the adapter itself and its files):

- the trained adapter ``"default"``: its parameters, state dict and LoRA files, a starting
  LoRA merged into the frozen base before it, and the starting model (the adapter
  bypassed) that the reference policy is;
- nft's old policy (:class:`~cgrpo.policies.base.HasOldPolicy`): a second adapter
  ``"old"`` on the same layers, never a second transformer.

:class:`LoRAAdapters` is one part of :class:`~cgrpo.policies.flux.policy.FluxPolicy`
(which sets ``config`` and ``transformer``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from cgrpo.policies.flux.config import FluxConfig, fuses_qkv
from cgrpo.policies.flux.lora import (
    _ADAPTER,
    OLD_ADAPTER,
    adapter_params,
    add_old_adapter,
    inject_lora,
    join_fused_lora,
    load_lora,
    merge_lora,
    save_lora,
)

__all__ = ["LoRAAdapters"]


class LoRAAdapters:
    """The trained LoRA and nft's old adapter on ``self.transformer``."""

    config: FluxConfig
    transformer: torch.nn.Module
    #: the trained adapter's alpha (its scale is ``alpha / lora_rank``)
    lora_alpha: float

    def _add_lora(self) -> None:
        self.lora_alpha = inject_lora(self.transformer, self.config)

    def merge_lora(self, path: str | Path) -> int:
        """Merge a LoRA file into the (frozen) base weights: ``W += alpha / r * B @ A``.

        See :func:`cgrpo.policies.flux.lora.merge_lora` for the formats it accepts.
        Returns how many linear layers were changed. Must run before the trainable LoRA
        is injected (the constructor does so for ``start_lora``).
        """
        return merge_lora(self.transformer, path)

    @property
    def _lora_params(self) -> list[torch.nn.Parameter]:
        """The trainable LoRA weights (adapter ``"default"``; not nft's old adapter), looked
        up each time: FSDP replaces the parameter objects."""
        return list(adapter_params(self.transformer).values())

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """The starting model: the LoRA layers bypassed (their weights untouched)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.transformer.modules() if isinstance(m, BaseTunerLayer)]
        flags = [p.requires_grad for p in self._lora_params]
        for m in layers:
            m.enable_adapters(False)
        try:
            yield
        finally:
            for m in layers:
                m.enable_adapters(True)
            for p, f in zip(self._lora_params, flags, strict=True):
                p.requires_grad_(f)

    # -- the trained adapter's weights and files ------------------------------------------------

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(self._lora_params)

    def trainable_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.transformer, adapter_name=_ADAPTER)
        return {k: v.detach().clone() if copy else v.detach() for k, v in state.items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        own = self.trainable_state_dict(copy=False)
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(own) - set(state))
        if unknown or missing:
            raise ValueError(
                f"LoRA state does not fit this policy (rank/targets differ?): "
                f"{len(missing)} missing keys (e.g. {missing[:2]}), "
                f"{len(unknown)} unknown keys (e.g. {unknown[:2]})"
            )
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise ValueError(
                    f"LoRA key '{k}' has shape {tuple(v.shape)}, expected "
                    f"{tuple(own[k].shape)} (different lora_rank?)"
                )
        set_peft_model_state_dict(self.transformer, state, adapter_name=_ADAPTER)

    def save_lora(self, path: str | Path) -> Path:
        """The trained LoRA as safetensors (see :func:`cgrpo.policies.flux.lora.save_lora`)."""
        c = self.config
        return save_lora(
            path,
            self.trainable_state_dict(),
            rank=c.lora_rank,
            alpha=self.lora_alpha,
            targets=c.lora_target_names,
        )

    def load_lora(self, path: str | Path) -> None:
        """Load a LoRA written by :meth:`save_lora` into the trainable adapter (a fused-qkv
        adapter takes the file's split q/k/v LoRAs joined again)."""
        state, _ = load_lora(path)
        if fuses_qkv(self.config.lora_target_names):
            state = join_fused_lora(state)
        self.load_trainable_state_dict(state)

    def parameter_counts(self) -> dict[str, int]:
        """Frozen transformer parameters, LoRA parameters and adapted layers."""
        total = sum(p.numel() for p in self.transformer.parameters())
        lora = sum(p.numel() for p in self._lora_params)
        return {"frozen": total - lora, "lora": lora, "lora_layers": len(self._lora_params) // 2}

    # -- the old policy (HasOldPolicy): a second adapter -----------------------------------------

    def enable_old_policy(self) -> None:
        if not adapter_params(self.transformer, OLD_ADAPTER):
            add_old_adapter(self.transformer, self.config, self.lora_alpha)

    def _old_params(self) -> dict[str, torch.nn.Parameter]:
        old = adapter_params(self.transformer, OLD_ADAPTER)
        if not old:
            raise RuntimeError("this policy keeps no old policy: call enable_old_policy() first")
        return old

    @torch.no_grad()
    def soft_update_old(self, decay: float) -> None:
        """``old <- decay old + (1 - decay) current`` per LoRA weight; under FSDP both
        adapters are sharded alike, so each process updates its own shard."""
        old = self._old_params()
        for name, p in adapter_params(self.transformer).items():
            q = old[name.replace(f".{_ADAPTER}.", f".{OLD_ADAPTER}.")]
            q.mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    def old_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        old = self._old_params().items()
        return {k: v.detach().clone() if copy else v.detach() for k, v in old}

    def load_old_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        old = self._old_params()
        if set(state) != set(old):
            raise ValueError(
                f"old-policy state does not fit this policy: {len(state)} weights given, "
                f"{len(old)} expected (rank/targets differ?)"
            )
        for k, v in state.items():
            old[k].copy_(v)
