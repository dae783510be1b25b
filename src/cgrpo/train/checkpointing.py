"""A run's checkpoints: written at ``run.checkpoint_every``, at the last step, on
preemption and when ``run.time_budget`` stops the run; read back by ``--resume``.

A checkpoint holds the raw trainable weights, their EMA (when on), the
:class:`~cgrpo.train.state.TrainState` and, for ``method.objective=nft``, the old policy;
tensors are written whole, so it resumes on any number of processes, with or without FSDP
(:mod:`cgrpo.io.checkpoint` is the folder format, written whole: a temp folder renamed into
place). What is written is copied to CPU memory tensor by tensor (a sharded tensor
gathered first, :func:`~cgrpo.policies.sharding.cpu_copy`; the optimizer state through
``get_optimizer_state_dict`` with ``cpu_offload``), so a checkpoint never holds a second
copy of the weights on the device; the EMA weights are swapped in place
(:meth:`cgrpo.train.ema.EMA.swapped`). Each save prints its folder and size.

:class:`Checkpointing` is one part of :class:`cgrpo.train.trainer.GRPOTrainer` (which
builds the attributes it names).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm import tqdm

from cgrpo.config.core import config_to_dict
from cgrpo.io.atomic import CheckpointError, remove_stale_temps
from cgrpo.io.checkpoint import (
    checkpoint_size,
    checkpoint_step,
    clear_leftovers,
    is_complete_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    no_checkpoint_detail,
    save_checkpoint,
)
from cgrpo.method.objective import Objective
from cgrpo.policies.base import Policy
from cgrpo.policies.sharding import cpu_copy
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist
from cgrpo.train.resume_settings import check_resume_settings
from cgrpo.train.state import TrainState

__all__ = ["Checkpointing", "resume_checkpoint", "size_line"]


class Checkpointing:
    """Save, load and resume the run's checkpoints."""

    cfg: TrainConfig
    policy: Policy
    objective: Objective
    state: TrainState
    dist: Dist
    run_dir: Path
    _saved: tuple[int, int] | None  # (step, skips) of the last checkpoint

    def _checkpoint_due(self) -> bool:
        """Whether ``run.checkpoint_every`` or the last step asks for one now."""
        cfg, step = self.cfg.run, self.state.step
        return bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps

    def _save_unless_saved(self) -> None:
        """A checkpoint of this step, unless one is written already."""
        if self._saved != (self.state.step, self.state.total_skips):
            self.save()

    def save(self) -> Path | None:
        """Write a checkpoint (main process): the raw trainable weights, the EMA weights
        (when on) and the :class:`TrainState`. Every process must call it, since sharded
        (FSDP) tensors are gathered first. Returns its folder on the main process."""
        self._saved = (self.state.step, self.state.total_skips)
        main = self.dist.is_main  # with FSDP the others help gather, then drop the result
        if not main and not self.dist.fsdp:
            return None
        tensors = _on_cpu(self.policy.trainable_state_dict(copy=False), main)
        ema = None
        if self.state.ema is not None:
            with self.state.ema.swapped():
                ema = _on_cpu(self.policy.trainable_state_dict(copy=False), main)
        state = self.state.state_dict(self.dist, keep=main)
        if self.objective.uses_old_policy():
            old = self.policy.old_state_dict(copy=False)  # a HasOldPolicy (checked when built)
            state["old_policy"] = _on_cpu(old, main)
        if not main:
            return None
        folder = save_checkpoint(
            self.run_dir / "checkpoints",
            self.state.step,
            tensors,
            state=state,
            meta={"config": config_to_dict(self.cfg)},
            keep_last=self.cfg.run.keep_last,
            ema_tensors=ema,
        )
        tqdm.write(size_line(folder))
        return folder

    def load(self, path: str | Path) -> None:
        """Restore policy, optimizer, EMA, all RNG states and the step from a checkpoint
        (written by any number of processes, sharded or not)."""
        tensors, state, _ = load_checkpoint(path)
        own = self.policy.trainable_state_dict(copy=False)
        _check_fits(tensors, own, path)
        self.policy.load_trainable_state_dict(
            {k: self.dist.like(v, own[k]) if k in own else v for k, v in tensors.items()}
        )
        self.state.load_state_dict(state, self.dist, source=path)
        if self.objective.uses_old_policy():
            if "old_policy" not in state:
                raise ValueError(
                    f"checkpoint '{path}' holds no old policy, which method.objective="
                    f"{self.objective.kind} needs: resume with the run's own config"
                )
            own_old = self.policy.old_state_dict(copy=False)
            self.policy.load_old_state_dict(
                {k: self.dist.like(v, own_old[k]) for k, v in state["old_policy"].items()}
            )

    def _clear_stale(self) -> None:
        """What a killed process left in the run folder (main process, at start): temp
        files of interrupted writes, temp folders of interrupted checkpoint saves."""
        if not self.dist.is_main:
            return
        remove_stale_temps(self.run_dir, recursive=True)
        if (self.run_dir / "checkpoints").is_dir():
            clear_leftovers(self.run_dir / "checkpoints")

    def _resume(self, which: bool | int | str | Path = True, *, allow_changes: bool) -> None:
        """Load the checkpoint ``--resume`` names (:func:`resume_checkpoint`), written with
        the settings of this run unless ``allow_changes`` (:func:`check_resume_settings`)."""
        path = resume_checkpoint(which, self.run_dir)
        check_resume_settings(path, self.cfg, allow_changes=allow_changes)
        self.load(path)


def resume_checkpoint(which: bool | int | str | Path, run_dir: str | Path) -> Path:
    """The checkpoint folder ``--resume [PATH_OR_STEP]`` names: ``True`` (no value) the
    latest complete one of ``run_dir/checkpoints``; a step number (an int, or a string of
    digits) that step's folder there; anything else a path: a step folder, or a
    checkpoints folder or run folder (its latest). One-line FileNotFoundError when there is none."""
    root = Path(run_dir) / "checkpoints"
    if which is True:
        last = latest_checkpoint(root)
        if last is None:
            raise FileNotFoundError(
                f"--resume: no complete checkpoint under {root}{no_checkpoint_detail(root)}; "
                "start without --resume or point run.out_dir at the run to continue"
            )
        return last
    steps = [s for s, _ in list_checkpoints(root)]
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        step = int(which)
        if step not in steps:
            have = ", ".join(map(str, steps)) or "none"
            raise FileNotFoundError(
                f"--resume {step}: no complete checkpoint of step {step} under {root} "
                f"(complete steps there: {have}); name one of them, or a checkpoint folder"
            )
        return dict(list_checkpoints(root))[step]
    path = Path(which)
    if checkpoint_step(path.name) is not None and is_complete_checkpoint(path):
        return path
    if path.is_dir() and checkpoint_step(path.name) is None:
        for folder in (path, path / "checkpoints"):  # a checkpoints folder or a run folder
            last = latest_checkpoint(folder)
            if last is not None:
                return last
    what = "an incomplete checkpoint folder" if path.is_dir() else "no such folder"
    raise FileNotFoundError(
        f"--resume {path}: {what}; give a complete step folder (.../checkpoints/step_000100), "
        "a checkpoints or run folder, or a step number of run.out_dir"
    )


def _check_fits(
    tensors: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], path: str | Path
) -> None:
    """One :class:`CheckpointError` when the checkpoint's weights are not this policy's
    trainable weights (other names or shapes: another model or LoRA)."""
    missing = sorted(own.keys() - tensors.keys())
    extra = sorted(tensors.keys() - own.keys())
    shapes = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)} here"
        for k in sorted(own.keys() & tensors.keys())
        if tuple(tensors[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or extra or shapes):
        return
    first = shapes[:1] or [f"{len(missing)} weights missing, {len(extra)} not this model's "
                           f"(e.g. {(missing or extra)[0]})"]  # fmt: skip
    raise CheckpointError(
        f"checkpoint '{path}' holds the weights of another model or LoRA ({first[0]}; "
        f"{len(shapes)} shapes differ): resume with the model settings it was written with "
        "(model.*, flux.lora_*: the run's config.yaml)"
    )


def _on_cpu(tensors: Mapping[str, torch.Tensor], keep: bool) -> dict[str, torch.Tensor]:
    """CPU copies of ``tensors``, one at a time (:func:`cpu_copy`); ``keep=False``: this
    process only helps gather sharded ones (the result is empty)."""
    out = {k: cpu_copy(v, keep) for k, v in tensors.items()}
    return out if keep else {}


def _human(n: float) -> str:
    """Bytes in decimal units: ``512 B``, ``1.5 KB``, ``8.4 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def size_line(folder: Path) -> str:
    """``checkpoint <folder>: <total> (<file> <size>, ...)``, decimal units (1 MB = 10^6 B)."""
    sizes = checkpoint_size(folder)
    files = ", ".join(f"{n} {_human(b)}" for n, b in sizes.items() if n != "meta.json")
    return f"checkpoint {folder}: {_human(sum(sizes.values()))} ({files})"
