"""The resumable checkpoint of ``cgrpo pretrain``: one file, written atomically.

``<state>/pretrain_state.pt`` (:func:`cgrpo.io.tensor_files.save_state`, read back with
``torch.load(weights_only=True)``) holds everything a step depends on: the model's and the
EMA's float32 weights, AdamW's state, the torch and Python RNG states, the step, the
running loss, the wall time spent so far and the settings. One file, so a crash leaves the
previous checkpoint or the new one, never a mix. ``resume=true`` continues from it exactly
(the same weights as a run that never stopped, at the same thread count); settings that
change what a step is must match the checkpoint's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from cgrpo.io.rng_state import random_state, set_random_state
from cgrpo.io.tensor_files import load_state, save_state

__all__ = [
    "STATE_FILE",
    "check_same_settings",
    "load_pretrain_state",
    "restore_pretrain_state",
    "save_pretrain_state",
]

STATE_FILE = "pretrain_state.pt"
FORMAT = 1

#: settings that may differ on resume: they change where things go, when they are written
#: or how long this process runs, not what a step computes (threads changes float sums:
#: the same thread count gives the same weights)
FREE_KEYS = frozenset(
    {"resume", "time_budget", "log_every", "save_every", "threads", "out", "state",
     "report_prompts"}
)  # fmt: skip


def save_pretrain_state(
    folder: Path,
    *,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    rng: random.Random,
    running: float | None,
    elapsed: float,
    settings: dict[str, Any],
) -> Path:
    """Write the checkpoint after ``step`` optimizer steps (atomically); returns its path."""
    state = {
        "format": FORMAT,
        "step": step,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ema": {k: v.detach().clone() for k, v in ema.state_dict().items()},
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random_state(rng),
        "running": running,
        "elapsed": elapsed,
        "settings": settings,
    }
    return save_state(Path(folder) / STATE_FILE, state)


def load_pretrain_state(folder: Path) -> dict[str, Any]:
    """The checkpoint in ``folder`` (``step``, ``running``, ``elapsed``, ``settings`` and the
    tensors :func:`restore_pretrain_state` puts back)."""
    path = Path(folder) / STATE_FILE
    state = load_state(path)
    if state.get("format") != FORMAT or "settings" not in state:
        raise ValueError(
            f"'{path}' is not a cgrpo pretrain checkpoint of format {FORMAT} "
            f"(format {state.get('format')!r}); start afresh without resume=true"
        )
    return state


def restore_pretrain_state(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    rng: random.Random,
    path: Path,
) -> None:
    """Put the checkpoint's model, EMA, optimizer and both RNG states back in place."""
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        set_random_state(rng, state["python_rng"])
        torch.set_rng_state(state["torch_rng"].clone())
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"'{path}' does not fit this model ({first})") from exc
    for group in opt.state.values():  # no tensor stays backed by the (mapped) file
        for k, v in group.items():
            if isinstance(v, torch.Tensor):
                group[k] = v.clone()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_settings(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Raise ValueError naming each setting (other than :data:`FREE_KEYS`) that differs."""
    a, b = _flat(saved), _flat(now)
    diff = sorted(k for k in a.keys() | b.keys() if k not in FREE_KEYS and a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(f"{k}={b.get(k)!r} (checkpoint: {a.get(k)!r})" for k in diff[:5])
        raise ValueError(
            f"resume=true: '{path}' was written with other settings: {shown}; resume with the "
            "checkpoint's settings, or start afresh in another out="
        )
