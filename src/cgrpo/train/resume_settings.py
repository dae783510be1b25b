"""A resume continues the run its checkpoint belongs to: settings that change what a step
is (the group size, the prompts per step, the sampler, the method, the rewards, the
optimizer, the model, the data, the seed) must be the checkpoint's, or the optimizer state,
the data position and the random streams no longer mean what they meant.

:func:`check_resume_settings` compares the config a checkpoint was written with
(its ``meta.json``) with the one resuming it and refuses, in one line naming the keys,
any difference outside :data:`FREE_TO_CHANGE` (how long to run, where and how often to
write, evaluate and log, the device, threads and memory splits), unless
``cgrpo train --resume --allow-changes`` says the change is meant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cgrpo.config.core import config_to_dict
from cgrpo.config.errors import quoted
from cgrpo.io.atomic import CheckpointError
from cgrpo.run.config import TrainConfig

__all__ = ["FREE_TO_CHANGE", "changed_settings", "check_resume_settings"]

#: Keys (or sections, ending in ".") a resume may change: they do not change what a step
#: computes, only how long the run goes, where and how often it writes, evaluates and
#: logs, and where and in how many pieces it computes.
FREE_TO_CHANGE = (
    "run.steps", "run.out_dir", "run.threads", "run.checkpoint_every", "run.keep_last",
    "run.eval", "run.eval_every", "run.eval_batch_size", "run.eval_micro_batch_size",
    "run.eval_steps", "run.log_every", "run.log_with", "run.image_every", "run.time_budget",
    "run.max_skips", "run.fsdp", "model.device", "grpo.micro_batch_size",
    "sampler.overlap_rewards", "data.eval_prompts_per_subject", "data.eval_seed",
    "data.eval_root", "data.eval_split", "data.skip_bad",
)  # fmt: skip


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _saved_form(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` flattened as a checkpoint's ``meta.json`` stores it (JSON round trip)."""
    return _flat(json.loads(json.dumps(config_to_dict(cfg))))


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in FREE_TO_CHANGE)


def changed_settings(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The keys, outside :data:`FREE_TO_CHANGE`, whose value in ``cfg`` differs from the
    saved config ``saved`` (as :func:`config_to_dict` wrote it), as ``key: old -> new``. A key
    the saved config lacks (a setting added after the checkpoint was written) counts as its
    default, the behaviour the run had."""
    old, new, default = _flat(saved), _saved_form(cfg), _saved_form(TrainConfig())
    old = {**{k: v for k, v in default.items() if k not in old and k in new}, **old}
    keys = sorted(k for k in old.keys() | new.keys() if not _free(k) and old.get(k) != new.get(k))
    return [f"{k}: {quoted(old.get(k), 60)} -> {quoted(new.get(k), 60)}" for k in keys]


def check_resume_settings(checkpoint: Path, cfg: TrainConfig, *, allow_changes: bool) -> None:
    """Refuse to resume ``checkpoint`` with settings that change what a step is (one
    :class:`CheckpointError` naming the keys), unless ``allow_changes``."""
    meta_file = Path(checkpoint) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read '{meta_file}' ({exc}); the checkpoint is damaged"
        ) from exc
    saved = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict) or allow_changes:
        return  # (a checkpoint written without its config: nothing to compare)
    changes = changed_settings(saved, cfg)
    if changes:
        shown = "; ".join(changes[:4]) + (
            f"; and {len(changes) - 4} more" if len(changes) > 4 else ""
        )
        raise CheckpointError(
            f"--resume: {len(changes)} setting(s) differ from the checkpoint's, which change what "
            f"a step is ({shown}): resume with the run's own settings ({checkpoint.parent.parent}"
            "/config.yaml), or add --allow-changes to go on with the new ones"
        )
