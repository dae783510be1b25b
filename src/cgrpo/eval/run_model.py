"""A run folder's trained model: its config, one of its checkpoints (the latest, or the one
of step N) and that checkpoint's weights, EMA when it has them (what training evaluated).
``cgrpo sample --run`` draws from it and ``cgrpo export --run`` writes it out."""

from __future__ import annotations

from pathlib import Path

import torch

from cgrpo.config.core import load_config
from cgrpo.io.checkpoint import (
    is_complete_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    no_checkpoint_detail,
)
from cgrpo.run.config import TrainConfig

__all__ = ["run_checkpoint", "run_config", "run_weights"]


def run_config(run: Path, flag: str = "--run") -> TrainConfig:
    """The run's ``config.yaml``; one line naming ``flag`` when ``run`` is no run folder."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{flag} {run}: no config.yaml there; pass a cgrpo train run folder"
        )
    return load_config(TrainConfig, path, [])


def run_checkpoint(run: Path, step: int | None = None) -> Path:
    """The run's latest complete checkpoint, or the one of ``step``."""
    root = Path(run) / "checkpoints"
    if step is None:
        last = latest_checkpoint(root)
        if last is None:
            detail = no_checkpoint_detail(Path(root))
            raise FileNotFoundError(f"--run {run}: no complete checkpoint under {root}{detail}")
        return last
    folder = root / f"step_{step:06d}"
    if not is_complete_checkpoint(folder):
        have = ", ".join(str(s) for s, _ in list_checkpoints(root)) or "none"
        raise FileNotFoundError(
            f"--step {step}: run {run} has no complete checkpoint of that step (steps: {have})"
        )
    return folder


def run_weights(
    run: Path, step: int | None = None, *, ema: bool = True
) -> tuple[dict[str, torch.Tensor], bool, Path]:
    """``(trainable weights, whether they are the EMA ones, checkpoint folder)`` of the run's
    checkpoint (:func:`run_checkpoint`): its EMA weights unless ``ema`` is False or it has
    none."""
    folder = run_checkpoint(run, step)
    tensors, is_ema = load_weights(folder, ema=ema)
    return tensors, is_ema, folder
