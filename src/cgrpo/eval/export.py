"""``cgrpo export``: a FLUX run's trained LoRA as one safetensors file, and its model card.

The weights are a checkpoint's (the latest, or ``--step N``'s), its EMA ones by default
(what the run's evaluation scored; ``--raw``: the raw ones). Nothing but the checkpoint
and the run's config is read: no model is loaded. Formats:

``diffusers`` (default)
    :func:`~cgrpo.policies.flux.lora.save_lora`'s file: keys ``transformer.<layer>.
    lora_{A,B}.weight``, a fused-qkv LoRA split into its exact q/k/v equivalent, the
    adapter's rank and alpha in ``lora_adapter_metadata``, so diffusers' ``FluxPipeline`` /
    ``FluxKontextPipeline.load_lora_weights`` gives the trained velocity (scale alpha / r).
    It holds the trained LoRA only: a run with ``flux.start_lora`` trained on top of that
    LoRA merged into the base, so load both (the card says how).
``uno``
    bytedance/UNO's keys (:mod:`cgrpo.policies.flux.uno_lora`: ``down = A``,
    ``up = (alpha / r) B``); with a ``flux.start_lora`` in UNO's format (its
    ``dit_lora.safetensors``) both LoRAs are concatenated into one of rank
    ``r_start + r``: the whole trained model for UNO's loader, which holds one LoRA.

``README.md`` beside the file is its card (:mod:`cgrpo.eval.model_card`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cgrpo.eval.model_card import CardFacts, base_model_id, model_card
from cgrpo.eval.run_model import run_config, run_weights
from cgrpo.io.atomic import atomic_write
from cgrpo.io.checkpoint import checkpoint_step
from cgrpo.io.paths import check_output_file
from cgrpo.run.config import TrainConfig

__all__ = ["FORMATS", "export_lora"]

FORMATS = ("diffusers", "uno")


def _check_rank(tensors: dict[str, torch.Tensor], cfg: TrainConfig, run: Path) -> None:
    ranks = {int(v.shape[0]) for k, v in tensors.items() if ".lora_A." in k}
    if ranks != {cfg.flux.lora_rank}:
        raise ValueError(
            f"--run {run}: the checkpoint's LoRA has rank {sorted(ranks)}, its config.yaml "
            f"says flux.lora_rank={cfg.flux.lora_rank}: not this run's checkpoint?"
        )


def _write_uno(out: Path, tensors: dict[str, torch.Tensor], cfg: TrainConfig) -> int:
    """The UNO-format file (with the run's starting LoRA when it has one); returns its rank."""
    from safetensors.torch import save_file

    from cgrpo.policies.flux.uno_lora import concat_uno_loras, read_uno_lora, to_uno_lora, uno_rank

    f = cfg.flux
    alpha = float(f.lora_alpha) if f.lora_alpha is not None else float(f.lora_rank)
    state = to_uno_lora(tensors, scale=alpha / f.lora_rank)
    if f.start_lora:
        if not Path(f.start_lora).is_file():
            raise FileNotFoundError(
                f"flux.start_lora '{f.start_lora}' (the run's starting LoRA, part of the uno "
                "file) not found: run cgrpo export where the run's relative paths hold"
            )
        state = concat_uno_loras(read_uno_lora(f.start_lora), state)
    rank = uno_rank(state)
    meta = {"format": "pt", "lora_rank": str(rank)}  # no alpha: UNO's scale is 1
    atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return rank


def export_lora(
    run: Path,
    out: Path,
    *,
    step: int | None = None,
    fmt: str = "diffusers",
    ema: bool = True,
    command: str = "",
    base_model: str | None = None,
) -> tuple[Path, Path]:
    """Write run ``run``'s LoRA to ``out`` in format ``fmt`` and its card to ``README.md``
    beside it; returns both paths."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    check_output_file(out, "--out", suffixes=(".safetensors",))  # (its card goes beside it)
    cfg = run_config(run)
    if cfg.model.kind != "flux":
        raise ValueError(
            f"--run {run}: cgrpo export writes a FLUX run's LoRA; this run trains the embedded "
            "generator (sample it with cgrpo sample --run, its weights are its checkpoints)"
        )
    tensors, is_ema, folder = run_weights(run, step, ema=ema)
    _check_rank(tensors, cfg, run)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "uno":
        rank = _write_uno(out, tensors, cfg)
    else:
        from cgrpo.policies.flux.lora import save_lora

        f = cfg.flux
        alpha = float(f.lora_alpha) if f.lora_alpha is not None else float(f.lora_rank)
        save_lora(out, tensors, rank=f.lora_rank, alpha=alpha, targets=f.lora_target_names)
        rank = f.lora_rank
    eval_path = Path(run) / "eval.json"
    facts = CardFacts(
        file=out.name,
        format=fmt,
        rank=rank,
        step=checkpoint_step(folder.name) or 0,
        ema=is_ema,
        run=str(run),
        command=command,
        base_model=base_model or base_model_id(cfg),
        eval=json.loads(eval_path.read_text()) if eval_path.is_file() else None,
    )
    card = out.with_name("README.md")
    text = model_card(cfg, facts)
    atomic_write(card, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out, card
