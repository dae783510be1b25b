"""The LoRA on the FLUX transformer: injection, safetensors files and merging into the base.

GRPO trains only a peft LoRA (adapter ``"default"``) on the transformer blocks
(:func:`inject_lora`, targets ``FluxConfig.lora_target_names``: the ``flux.lora_preset``'s
or ``flux.lora_targets``); its weights are float32 master weights even when the frozen
base is bfloat16.

The paper's LoRA is UNO's (preset ``uno``): rank 512 on the fused qkv and the output
projection of each stream of the 19 double blocks, and on the fused qkv and ``proj_out``
(attention + MLP, 15,360 inputs) of the 38 single blocks of FLUX.1-dev, i.e. 1,867,776 x r
= 956,301,312 parameters at r = 512. diffusers' FLUX keeps q, k and v apart, so for it
:func:`inject_lora` first fuses them (:func:`fuse_qkv`; a rank-r LoRA on the fused qkv
shares one A among q, k and v, three rank-r LoRAs do not). ``diffusers_all`` (separate
q/k/v, every attention output and MLP projection) is 4,085,760 x r = 2,091,909,120 at 512.
 :func:`save_lora` writes it as
diffusers-style safetensors (keys prefixed ``transformer.``, the adapter's config in the
``lora_adapter_metadata`` diffusers reads), which :func:`load_lora` reads back and diffusers'
``FluxPipeline.load_lora_weights`` loads at the trained scale ``alpha / r``; a fused qkv
LoRA is written as its exact unfused equivalent (:func:`split_fused_lora`: q, k and v
share A and take their rows of B), which loads into a stock FLUX.
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
from cgrpo.policies.flux.config import FUSED_PROJECTIONS, FluxConfig, FluxWeightsError, fuses_qkv

__all__ = [
    "add_old_adapter",
    "adapter_params",
    "fuse_qkv",
    "inject_lora",
    "join_fused_lora",
    "load_lora",
    "merge_lora",
    "save_lora",
    "split_fused_lora",
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


def _check_no_lora(transformer: torch.nn.Module, what: str) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in transformer.modules()):
        raise RuntimeError(f"{what} must run before the trainable LoRA is injected")


@torch.no_grad()
def fuse_qkv(transformer: torch.nn.Module) -> int:
    """Fuse each attention's q/k/v projections into one linear layer; returns how many.

    diffusers' ``fuse_projections``: ``to_qkv.weight = cat(W_q, W_k, W_v)`` (biases
    likewise), and ``to_added_qkv`` from the text stream's ``add_{q,k,v}_proj``; the
    attention then computes ``q, k, v = to_qkv(x).chunk(3)``, the same numbers. The
    separate layers are deleted (they would hold a second copy of those weights, 2.15 B
    parameters on FLUX.1-dev), so a LoRA to merge (:func:`merge_lora`) goes in first.
    """
    _check_no_lora(transformer, "fuse_qkv")
    fused = 0
    for module in transformer.modules():
        if not getattr(module, "_supports_qkv_fusion", False) or not hasattr(module, "to_q"):
            continue
        module.fuse_projections()
        for fused_name, separate in FUSED_PROJECTIONS.items():
            if hasattr(module, fused_name):
                for name in separate:
                    delattr(module, name)
        fused += 1
    return fused


def inject_lora(transformer: torch.nn.Module, config: FluxConfig) -> float:
    """Add the trainable LoRA to ``transformer`` and freeze everything else; returns alpha.

    Targets naming ``to_qkv`` / ``to_added_qkv`` (preset ``uno``) fuse the q/k/v
    projections first (:func:`fuse_qkv`). The adapter starts as the identity (B zero; A
    Kaiming-uniform, or N(0, 1/r) for ``uno`` as UNO's ``LoRALinearLayer``), its weights
    float32.
    """
    from peft import LoraConfig, inject_adapter_in_model

    c = config
    targets = c.lora_target_names
    if fuses_qkv(targets):
        fuse_qkv(transformer)
    alpha = float(c.lora_alpha) if c.lora_alpha is not None else float(c.lora_rank)
    lora_config = LoraConfig(
        r=c.lora_rank,
        lora_alpha=alpha,
        target_modules=_target_regex(targets),
        # B zero: the adapter starts as the identity; "gaussian" is A ~ N(0, 1/r) (UNO's)
        init_lora_weights="gaussian" if c.lora_preset == "uno" else True,
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
        raise ValueError(
            f"flux.lora_targets {targets} (lora_preset {c.lora_preset}) matched no module "
            "of the transformer"
        )
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
        r=c.lora_rank, lora_alpha=alpha, target_modules=_target_regex(c.lora_target_names)
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


def _split_key(key: str) -> tuple[str, str, str]:
    """``a.b.to_qkv.lora_A.weight`` -> (``a.b``, ``to_qkv``, ``lora_A.weight``)."""
    layer, part = key.split(".lora_", 1)
    parent, _, name = layer.rpartition(".")
    return parent, name, "lora_" + part


def split_fused_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA on fused qkv layers as the equal LoRAs on the separate q, k, v layers.

    ``(W_qkv + B A) x = [W_q + B_q A; W_k + B_k A; W_v + B_v A] x`` with ``B_q, B_k, B_v``
    the three equal row blocks of ``B`` (diffusers' fused order q, k, v): each separate
    layer gets a copy of ``A`` and its block of ``B``. Other keys pass through.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parent, name, part = _split_key(key)
        if name not in FUSED_PROJECTIONS:
            out[key] = value
            continue
        blocks = value.chunk(3, dim=0) if part.startswith("lora_B") else (value,) * 3
        for sep, block in zip(FUSED_PROJECTIONS[name], blocks, strict=True):
            out[f"{parent}.{sep}.{part}"] = block.clone()  # no shared storage in safetensors
    return out


def join_fused_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`split_fused_lora`: q, k, v LoRAs that share A as one LoRA on
    the fused layer (``A``, ``B = cat(B_q, B_k, B_v)``). Every separate q/k/v LoRA must
    come in a full triple with one A: three independent LoRAs have no fused equal."""
    out = {k: v for k, v in state.items() if _split_key(k)[1] not in _SEPARATE}
    groups: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key in set(state) - set(out):
        parent, name, part = _split_key(key)
        groups.setdefault((parent, _SEPARATE[name], part), {})[name] = state[key]
    for (parent, fused, part), got in sorted(groups.items()):
        names = FUSED_PROJECTIONS[fused]
        if set(got) != set(names) or (
            part.startswith("lora_A") and not all(torch.equal(got[n], got[names[0]]) for n in names)
        ):
            raise ValueError(
                f"LoRA '{parent}.{names[0]}...' is not a split fused-qkv LoRA (needs "
                f"{'/'.join(names)} with one shared A): load it with flux.lora_preset "
                "diffusers_all, or merge it as flux.start_lora"
            )
        cat = part.startswith("lora_B")
        out[f"{parent}.{fused}.{part}"] = (
            torch.cat([got[n] for n in names]) if cat else got[names[0]]
        )
    return out


_SEPARATE = {sep: fused for fused, names in FUSED_PROJECTIONS.items() for sep in names}


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
    A fused-qkv LoRA is written split (:func:`split_fused_lora`), for a stock FLUX;
    ``lora_targets`` records the targets it was trained on.
    """
    import json

    from safetensors.torch import save_file

    state = split_fused_lora(state)
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
    Returns how many linear layers were changed. Must run before the trainable LoRA is
    injected and q/k/v fused (:class:`~cgrpo.policies.flux.policy.FluxPolicy` does so for
    ``start_lora``): it lands on the separate to_q/to_k/to_v layers.
    """
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FluxWeightsError(f"flux.start_lora: LoRA file not found: '{path}'")
    _check_no_lora(transformer, "merge_lora (flux.start_lora)")
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
