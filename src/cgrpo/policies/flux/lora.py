"""The LoRA on the FLUX transformer: injection, safetensors files and merging into the base.

GRPO trains only a peft LoRA (adapter ``"default"``) on the transformer blocks
(:func:`inject_lora`, targets ``FluxConfig.lora_targets``); its weights are float32 master
weights even when the frozen base is bfloat16. :func:`save_lora` writes it as
diffusers-style safetensors (keys prefixed ``transformer.``, the adapter's config in the
``lora_adapter_metadata`` diffusers reads), which :func:`load_lora` reads back and diffusers'
``FluxPipeline.load_lora_weights`` loads at the trained scale ``alpha / r``.
:func:`merge_lora` folds a LoRA file (this format, diffusers/peft, kohya or XLabs, e.g.
UNO's ``dit_lora.safetensors``) into the frozen base weights: that is
``FluxConfig.start_lora``, the starting model that the reference policy also sees. nft's
old policy is a second adapter, ``"old"`` (:func:`add_old_adapter`).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from cgrpo.io.atomic import atomic_write
from cgrpo.policies.flux.config import FluxConfig, FluxWeightsError

__all__ = [
    "add_old_adapter",
    "adapter_params",
    "inject_lora",
    "load_lora",
    "merge_lora",
    "save_lora",
]

_ADAPTER = "default"
OLD_ADAPTER = "old"  # nft's old policy: a second, frozen adapter on the same layers
_LORA_PREFIX = "transformer."  # diffusers' key prefix for transformer LoRA weights


def _target_regex(targets: list[str]) -> str:
    """peft target regex: the given names inside every (single) transformer block only.

    A plain name list would also match the model's final ``proj_out``, which is not in a
    block; the regex keeps the LoRA on the blocks.
    """
    names = "|".join(re.escape(t) for t in targets)
    return rf"(transformer_blocks|single_transformer_blocks)\.\d+\.({names})"


def inject_lora(transformer: torch.nn.Module, config: FluxConfig) -> float:
    """Add the trainable LoRA to ``transformer`` and freeze everything else; returns alpha.

    The adapter starts as the identity (A Kaiming-uniform, B zero), its weights float32.
    """
    from peft import LoraConfig, inject_adapter_in_model

    c = config
    alpha = float(c.lora_alpha) if c.lora_alpha is not None else float(c.lora_rank)
    lora_config = LoraConfig(
        r=c.lora_rank,
        lora_alpha=alpha,
        target_modules=_target_regex(c.lora_targets),
        init_lora_weights=True,  # A Kaiming-uniform, B zero: the adapter starts as identity
    )
    inject_adapter_in_model(lora_config, transformer, adapter_name=_ADAPTER)
    matched = False
    for name, p in transformer.named_parameters():
        is_lora = "lora_" in name
        if is_lora:
            p.data = p.data.float()  # fp32 master weights: bf16 would swallow lr 2e-5 steps
            matched = True
        p.requires_grad_(is_lora)
    if not matched:
        raise ValueError(f"flux.lora_targets {c.lora_targets} matched no module of the transformer")
    return alpha


def adapter_params(
    transformer: torch.nn.Module, adapter: str = _ADAPTER
) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of one adapter by name (peft names them ``...lora_A.<adapter>...``)."""
    tag = f".{adapter}."
    return {n: p for n, p in transformer.named_parameters() if "lora_" in n and tag in n}


@torch.no_grad()
def add_old_adapter(transformer: torch.nn.Module, config: FluxConfig, alpha: float) -> None:
    """Add adapter ``"old"`` on the layers of the trainable one, equal to it and frozen.

    The trainable adapter stays the active one (peft's ``add_adapter`` would not change
    that either); :func:`old_adapter_active` switches the forward to the old one."""
    from peft import LoraConfig, inject_adapter_in_model

    c = config
    lora_config = LoraConfig(
        r=c.lora_rank, lora_alpha=alpha, target_modules=_target_regex(c.lora_targets)
    )
    with warnings.catch_warnings():  # "multiple adapters in the model": that is the point
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        inject_adapter_in_model(lora_config, transformer, adapter_name=OLD_ADAPTER)
    current = adapter_params(transformer)
    old = adapter_params(transformer, OLD_ADAPTER)
    if len(old) != len(current):
        raise RuntimeError(f"old adapter has {len(old)} LoRA weights, the trainable {len(current)}")
    for name, p in current.items():
        q = old[name.replace(f".{_ADAPTER}.", f".{OLD_ADAPTER}.")]
        q.data = p.detach().clone().float()
        q.requires_grad_(False)
    _set_active(transformer, [_ADAPTER])


def _set_active(transformer: torch.nn.Module, names: list[str]) -> None:
    """Which adapters the LoRA layers apply, without touching ``requires_grad`` (peft's
    ``set_adapter`` would also make the named adapter trainable and the others frozen)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for m in transformer.modules():
        if isinstance(m, BaseTunerLayer):
            m._active_adapter = list(names)


@contextlib.contextmanager
def old_adapter_active(transformer: torch.nn.Module) -> Iterator[None]:
    """Within the block the transformer's forward uses the old adapter only."""
    _set_active(transformer, [OLD_ADAPTER])
    try:
        yield
    finally:
        _set_active(transformer, [_ADAPTER])


def save_lora(
    path: str | Path,
    state: dict[str, torch.Tensor],
    *,
    rank: int,
    alpha: float,
    targets: list[str] | None = None,
) -> Path:
    """Write LoRA weights (peft keys without adapter name) as diffusers-style safetensors.

    Keys get the ``transformer.`` prefix. The metadata holds ``lora_adapter_metadata``,
    the JSON that diffusers' ``load_lora_weights`` turns into the adapter's ``LoraConfig``
    (``transformer.r``, ``transformer.lora_alpha``, ``transformer.target_modules``), so
    the file loads at the trained scale ``alpha / r`` for any alpha (without it diffusers
    assumes alpha = r). ``lora_rank`` / ``lora_alpha`` are kept for older readers.
    """
    import json

    from safetensors.torch import save_file

    tensors = {_LORA_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}
    # the layers the weights are on (peft matches target names as key suffixes)
    layers = sorted({k.split(".lora_")[0] for k in state})
    adapter = {"r": int(rank), "lora_alpha": float(alpha), "target_modules": layers}
    meta = {
        "format": "pt",
        "lora_rank": str(rank),
        "lora_alpha": str(float(alpha)),
        "lora_adapter_metadata": json.dumps(
            {f"{_LORA_PREFIX}{k}": v for k, v in adapter.items()}, sort_keys=True
        ),
    }
    if targets is not None:
        meta["lora_targets"] = ",".join(targets)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a LoRA safetensors: (state without the ``transformer.`` prefix, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FluxWeightsError(f"LoRA file not found: '{path}'")
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            state[k.removeprefix(_LORA_PREFIX)] = f.get_tensor(k)
    return state, meta


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


@torch.no_grad()
def merge_lora(transformer: torch.nn.Module, path: str | Path) -> int:
    """Merge a LoRA file into ``transformer``'s frozen base weights: ``W += alpha / r * B @ A``.

    Accepts this module's format (see :func:`save_lora`) and whatever diffusers'
    ``FluxLoraLoaderMixin.lora_state_dict`` converts (diffusers/peft, kohya, XLabs:
    UNO's ``dit_lora.safetensors`` uses XLabs-style ``processor.qkv_lora`` keys).
    Returns how many linear layers were changed. Must run before the trainable LoRA
    is injected (:class:`~cgrpo.policies.flux.policy.FluxPolicy` does so for ``start_lora``).
    """
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FluxWeightsError(f"flux.start_lora: LoRA file not found: '{path}'")
    raw = load_file(str(path))
    meta = _read_metadata(path)
    state, alphas = FluxLoraLoaderMixin.lora_state_dict(raw, return_alphas=True)
    alphas = {k: float(v) for k, v in (alphas or {}).items()}
    modules = dict(transformer.named_modules())
    leftover = [k for k in state if ".lora_A." not in k and ".lora_B." not in k]
    if leftover:
        raise ValueError(
            f"flux.start_lora '{path}': {len(leftover)} keys are not LoRA A/B weights "
            f"(e.g. '{leftover[0]}'): unsupported LoRA format"
        )
    merged = 0
    for key in [k for k in state if ".lora_A." in k]:
        mod_name = key.split(".lora_A.")[0]
        name = mod_name.removeprefix(_LORA_PREFIX)
        b_key = key.replace(".lora_A.", ".lora_B.")
        module = modules.get(name)
        if module is None or not isinstance(module, torch.nn.Linear) or b_key not in state:
            raise ValueError(
                f"flux.start_lora '{path}': key '{key}' names no linear layer of the "
                "transformer (or has no lora_B): not a FLUX transformer LoRA?"
            )
        a, b = state[key].float(), state[b_key].float()
        rank = a.shape[0]
        alpha = alphas.get(f"{mod_name}.alpha", alphas.get(f"{name}.alpha"))
        if alpha is None:
            alpha = float(meta.get("lora_alpha", rank))
        w = module.weight
        delta = (alpha / rank) * (b.to(w.device) @ a.to(w.device))
        if delta.shape[0] != w.shape[0] or delta.shape[1] > w.shape[1]:
            raise ValueError(
                f"flux.start_lora '{path}': '{name}' LoRA is {tuple(delta.shape)}, the layer "
                f"{tuple(w.shape)}: made for another model size?"
            )
        # XLabs/UNO single-block "proj_lora" acts on the attention output only, i.e. on
        # the first `dim` inputs of diffusers' fused proj_out(cat(attn, mlp)).
        cols = delta.shape[1]
        if cols < w.shape[1] and not name.endswith("proj_out"):
            raise ValueError(
                f"flux.start_lora '{path}': '{name}' LoRA input size {cols} != {w.shape[1]}"
            )
        w[:, :cols] = (w[:, :cols].float() + delta).to(w.dtype)
        merged += 1
    if not merged:
        raise ValueError(f"flux.start_lora '{path}' holds no LoRA (lora_A/lora_B) weights")
    return merged
