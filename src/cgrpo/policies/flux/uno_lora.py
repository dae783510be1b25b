"""UNO's LoRA file format (bytedance/UNO's ``dit_lora.safetensors``), written from ours.

UNO (``uno/flux/modules/layers.py``) adds ``LoRALinearLayer(in, out, rank)`` modules to
the attention processors of its own (BFL-layout) FLUX: ``down`` (rank x in) and ``up``
(out x rank), output ``up(down(x))``: no alpha, scale 1 (``network_alpha`` is None in its
``set_lora``). Its loader (``uno/flux/util.py``: ``load_flow_model_only_lora`` ->
``set_lora(model, lora_rank)`` -> ``load_state_dict``) builds every processor of every block
at one rank ``lora_rank`` and reads these keys::

    double_blocks.N.processor.qkv_lora1.{down,up}.weight    image stream fused qkv
    double_blocks.N.processor.proj_lora1.{down,up}.weight   image attention output
    double_blocks.N.processor.qkv_lora2.{down,up}.weight    text stream fused qkv
    double_blocks.N.processor.proj_lora2.{down,up}.weight   text attention output
    single_blocks.N.processor.qkv_lora.{down,up}.weight     fused qkv of linear1
    single_blocks.N.processor.proj_lora.{down,up}.weight    linear2, input cat(attention, MLP)

On diffusers' transformer (the ``uno`` LoRA preset, q/k/v fused) these are
``transformer_blocks.N.attn.{to_qkv, to_out.0, to_added_qkv, to_add_out}`` and
``single_transformer_blocks.N.{attn.to_qkv, proj_out}``; both fuse q, k, v in that order
(UNO: ``rearrange(qkv, "B L (K H D) -> K B H L D", K=3)``), so the rows need no reordering.
A peft LoRA ``W + (alpha / r) B A`` is UNO's ``down = A``, ``up = (alpha / r) B``.

Two LoRAs on one layer are one LoRA of the summed rank::

    B1 A1 + B2 A2 = [B1  B2] [A1; A2]      (down: rows stacked, up: columns stacked)

so a run that started from UNO's LoRA (``flux.start_lora``) and trained another on the same
layers exports both as one file of rank ``r_start + r_trained``: the whole trained model
for UNO's loader, which holds one LoRA (:func:`concat_uno_loras`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["UNO_LAYERS", "concat_uno_loras", "read_uno_lora", "to_uno_lora", "uno_rank"]

#: (diffusers block list, layer in the block) -> (UNO block list, UNO processor LoRA)
UNO_LAYERS: dict[tuple[str, str], tuple[str, str]] = {
    ("transformer_blocks", "attn.to_qkv"): ("double_blocks", "qkv_lora1"),
    ("transformer_blocks", "attn.to_out.0"): ("double_blocks", "proj_lora1"),
    ("transformer_blocks", "attn.to_added_qkv"): ("double_blocks", "qkv_lora2"),
    ("transformer_blocks", "attn.to_add_out"): ("double_blocks", "proj_lora2"),
    ("single_transformer_blocks", "attn.to_qkv"): ("single_blocks", "qkv_lora"),
    ("single_transformer_blocks", "proj_out"): ("single_blocks", "proj_lora"),
}

_PEFT_KEY = re.compile(
    r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)\.lora_([AB])\.weight$"
)
_UNO_KEY = re.compile(
    r"^(double_blocks|single_blocks)\.(\d+)\.processor\.(\w+)\.(down|up)\.weight$"
)
_PER_BLOCK = {
    kind: sorted(lora for (k, lora) in UNO_LAYERS.values() if k == kind)
    for kind in ("double_blocks", "single_blocks")
}


def _no_place(what: str) -> ValueError:
    return ValueError(
        f"--format uno: {what}; UNO's LoRA is the fused qkv and output projection of each "
        "stream of every block (flux.lora_preset=uno): export --format diffusers instead"
    )


def _check_complete(state: dict[str, torch.Tensor]) -> None:
    """UNO's ``set_lora`` gives every block all its LoRAs, one rank: the file must hold them."""
    blocks: dict[tuple[str, int], set[str]] = {}
    for key in state:
        kind, n, lora, part = _UNO_KEY.match(key).groups()  # type: ignore[union-attr]
        blocks.setdefault((kind, int(n)), set()).add(f"{lora}.{part}")
    for kind, names in _PER_BLOCK.items():
        numbers = sorted(n for k, n in blocks if k == kind)
        if not numbers or numbers != list(range(len(numbers))):
            raise _no_place(f"the LoRA misses some {kind} (it has {numbers})")
        for n in numbers:
            want = {f"{lora}.{part}" for lora in names for part in ("down", "up")}
            if blocks[kind, n] != want:
                missing = sorted(want - blocks[kind, n])
                raise _no_place(f"{kind}.{n} has no LoRA on {', '.join(missing)}")
    uno_rank(state)


def uno_rank(state: dict[str, torch.Tensor]) -> int:
    """The one rank of a UNO-format LoRA (what UNO's loader takes as ``lora_rank``)."""
    ranks = {tuple(v.shape)[0] for k, v in state.items() if k.endswith(".down.weight")}
    if len(ranks) != 1:
        raise ValueError(
            f"UNO's loader builds every LoRA at one rank; this one has ranks {sorted(ranks)}"
        )
    return ranks.pop()


def to_uno_lora(state: dict[str, torch.Tensor], *, scale: float) -> dict[str, torch.Tensor]:
    """A peft LoRA state (keys ``<block list>.N.<layer>.lora_{A,B}.weight``, q/k/v fused,
    update ``scale * B A``) in UNO's keys: ``down = A``, ``up = scale * B`` (float32).

    Raises ``ValueError`` for a layer UNO's processors do not have, or a block missing one
    of them (UNO's loader would leave it uninitialised)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _PEFT_KEY.match(key)
        place = UNO_LAYERS.get((m.group(1), m.group(3))) if m else None
        if m is None or place is None:
            raise _no_place(f"the LoRA on '{key.split('.lora_')[0]}' has no place there")
        kind, lora = place
        part = "down" if m.group(4) == "A" else "up"
        tensor = value.detach().float().cpu()
        out[f"{kind}.{m.group(2)}.processor.{lora}.{part}.weight"] = (
            tensor.clone() if part == "down" else tensor * float(scale)
        ).contiguous()
    _check_complete(out)
    return out


def read_uno_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file in UNO's format (e.g. its ``dit_lora.safetensors``), checked: every key
    one of UNO's, every block whole, one rank."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: '{path}'")
    state = load_file(str(path))
    other = next((k for k in state if not _UNO_KEY.match(k)), None)
    if other is not None:
        raise ValueError(
            f"'{path}' is not a LoRA in UNO's format (key '{other}'): --format uno can add only "
            "a starting LoRA of UNO's own layout (its dit_lora.safetensors); export --format "
            "diffusers instead"
        )
    _check_complete(state)
    return state


def concat_uno_loras(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One UNO-format LoRA equal to applying both: per layer ``down = [d1; d2]``, ``up =
    [u1 u2]`` (rank r1 + r2, float32). Both must hold the same layers."""
    if set(first) != set(second):
        diff = sorted(set(first) ^ set(second))
        raise ValueError(f"the two UNO-format LoRAs hold different layers (e.g. '{diff[0]}')")
    out = {}
    for key in first:
        a, b = first[key].float(), second[key].float()
        out[key] = torch.cat([a, b], dim=0 if key.endswith(".down.weight") else 1).contiguous()
    return out
