"""Checkpoint folders: written atomically, found again, loaded safely.

Layout written by :func:`save_checkpoint`::

    <dir>/
      latest.json                 {"step": N, "path": "step_00000N"}   (updated last)
      step_00000N/
        model.safetensors         model tensors (safetensors, no pickle)
        ema.safetensors           optional: their EMA (what :func:`load_weights` prefers)
        state.pt                  optimizer/scheduler/RNG state (loaded with weights_only=True)
        meta.json                 written LAST: marks the folder complete, records file sizes

A step folder is written whole: its files go into a hidden temp folder
(``.step_00000N.tmp-<pid>-<random>``) which is renamed to ``step_00000N`` once complete, so
a crash mid-save leaves the previous folder of that step (a re-save) or none, never a
partial one; a re-save moves the old folder aside (``.replaced-step_00000N-<random>``),
renames the new one into place and deletes the old. Leftovers of a crashed save are
cleared by the next save (an old folder moved aside but not replaced is put back). Each
file is written through :func:`~cgrpo.io.atomic.atomic_write`; the tensor and state files
are those of :mod:`cgrpo.io.tensor_files`, so nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cgrpo.io.atomic import CheckpointError, _fsync_dir, atomic_write
from cgrpo.io.disk_space import no_space_error
from cgrpo.io.tensor_files import (
    load_state,
    load_tensors,
    missing_file_error,
    save_state,
    save_tensors,
)

__all__ = [
    "EMA_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "META_FILE",
    "LATEST_FILE",
    "checkpoint_size",
    "checkpoint_step",
    "clear_leftovers",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "no_checkpoint_detail",
    "save_checkpoint",
    "why_incomplete",
]

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
LATEST_FILE = "latest.json"
CHECKPOINT_FORMAT = 1

_STEP_DIR_RE = re.compile(r"^step_(\d+)$")


def checkpoint_step(name: str) -> int | None:
    """The training step of a checkpoint folder name ``step_N`` (None for any other name)."""
    m = _STEP_DIR_RE.match(name)
    return int(m.group(1)) if m else None


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_FILES = (MODEL_FILE, STATE_FILE)
_FILES_WITH_EMA = (MODEL_FILE, EMA_FILE, STATE_FILE)


def _checkpoint_files(meta: Any) -> tuple[str, ...]:
    """The files besides ``meta.json`` that a step folder's meta says it holds: the EMA
    file only when meta lists it (checkpoints from before EMA was saved have none)."""
    sizes = meta.get("file_sizes") if isinstance(meta, dict) else None
    return _FILES_WITH_EMA if isinstance(sizes, dict) and EMA_FILE in sizes else _FILES


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a step folder whose files (model, state and the EMA file when
    ``meta.json`` lists it) exist and match the sizes in ``meta.json``."""
    folder = Path(path)
    meta = _read_json(folder / META_FILE)
    if not isinstance(meta, dict):
        return False
    sizes = meta.get("file_sizes", {})
    for name in _checkpoint_files(meta):
        f = folder / name
        if not f.is_file():
            return False
        expected = sizes.get(name) if isinstance(sizes, dict) else None
        if expected is not None and f.stat().st_size != expected:
            return False
    return True


def why_incomplete(folder: Path) -> str:
    """What is wrong with a step folder that is not complete (``missing meta.json``,
    ``missing state.pt``, ``model.safetensors has 1000 bytes, meta says 4096``)."""
    meta = _read_json(folder / META_FILE)
    if not isinstance(meta, dict):
        return f"missing or unreadable {META_FILE}"
    sizes = meta.get("file_sizes", {})
    for name in _checkpoint_files(meta):
        f = folder / name
        if not f.is_file():
            return f"missing {name}"
        expected = sizes.get(name) if isinstance(sizes, dict) else None
        if expected is not None and f.stat().st_size != expected:
            return f"{name} has {f.stat().st_size} bytes, meta says {expected}"
    return "complete"


def no_checkpoint_detail(root: Path) -> str:
    """For a message saying ``root`` holds no complete checkpoint: which step folders are
    there and why they are incomplete (``""`` when there are none)."""
    bad = sorted(
        c for c in (root.iterdir() if root.is_dir() else ())
        if checkpoint_step(c.name) is not None and c.is_dir() and not is_complete_checkpoint(c)
    )  # fmt: skip
    if not bad:
        return ""
    return " (" + "; ".join(f"{c.name}: {why_incomplete(c)}" for c in bad[-3:]) + ")"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete step folders directly under ``directory``, as ``(step, path)`` sorted by step."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for child in root.iterdir():
        step = checkpoint_step(child.name)
        if step is not None and child.is_dir() and is_complete_checkpoint(child):
            found.append((step, child))
    found.sort(key=lambda item: item[0])
    return found


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The step folder named by ``latest.json`` if it is complete, else the newest complete one.

    Returns ``None`` when ``directory`` holds no complete checkpoint (or does not exist).
    """
    root = Path(directory)
    latest = _read_json(root / LATEST_FILE)
    if isinstance(latest, dict) and isinstance(latest.get("path"), str):
        candidate = Path(latest["path"])
        if not candidate.is_absolute():
            candidate = root / candidate
        if candidate.is_dir() and is_complete_checkpoint(candidate):
            return candidate
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def checkpoint_size(folder: str | os.PathLike[str]) -> dict[str, int]:
    """The bytes of each file of a step folder (``meta.json`` included), by file name."""
    return {f.name: f.stat().st_size for f in sorted(Path(folder).iterdir()) if f.is_file()}


_TMP_RE = re.compile(r"^\.(step_\d+)\.tmp-")
_REPLACED_RE = re.compile(r"^\.replaced-(step_\d+)-")


def clear_leftovers(root: Path) -> None:
    """Remove the temp folders of crashed saves (at every save, and when a run starts);
    an old step folder moved aside by a save that crashed before renaming its new one into
    place is put back (when complete)."""
    for child in list(root.iterdir()):
        if _TMP_RE.match(child.name) or child.name.startswith(".deleting-"):
            shutil.rmtree(child, ignore_errors=True)
    for child in list(root.iterdir()):
        m = _REPLACED_RE.match(child.name)
        if m is None:
            continue
        home = root / m.group(1)
        if not home.exists() and is_complete_checkpoint(child):
            os.replace(child, home)
        else:
            shutil.rmtree(child, ignore_errors=True)
    _fsync_dir(root)


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename the complete folder ``tmp`` to ``folder``; an existing ``folder`` (a re-save)
    is moved aside first and deleted after."""
    old = None
    if folder.exists():
        old = folder.with_name(f".replaced-{folder.name}-{secrets.token_hex(4)}")
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_step_dir(folder: Path) -> None:
    """Delete a step folder: first rename it out of the way so no half-deleted one remains."""
    trash = folder.with_name(f".deleting-{folder.name}-{secrets.token_hex(4)}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(
    directory: str | os.PathLike[str],
    step: int,
    model_tensors: Mapping[str, torch.Tensor],
    *,
    state: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
    ema_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Save a complete checkpoint for ``step`` and point ``latest.json`` at it.

    Writes ``model.safetensors``, ``ema.safetensors`` (with ``ema_tensors``) and ``state.pt``
    (each atomically), then ``meta.json`` LAST (it marks the folder complete and records the
    file sizes) into a hidden temp folder, renames it to the step folder (replacing a
    re-saved step's folder whole: a crash at any point leaves the previous folder or the
    new one, see the module docstring), then atomically updates ``latest.json``.

    Args:
        directory: Checkpoint root (created if needed).
        step: Training step; the folder is ``step_{step:06d}``.
        model_tensors: Flat ``name -> tensor`` mapping (e.g. trainable/LoRA weights).
        state: Weights-only-loadable state (optimizer state dict, RNG state, counters, ...).
        meta: Extra JSON-serialisable entries for ``meta.json`` (e.g. the config as a dict);
            the keys ``step``, ``format`` and ``file_sizes`` are reserved.
        keep_last: If set (>= 1), after a successful save delete older complete step folders
            so that at most ``keep_last`` remain counting the new one. Newer folders are kept.
        ema_tensors: The EMA of ``model_tensors`` (the same names, else ValueError before
            anything is written), which :func:`load_weights` returns by default.

    Returns:
        The step folder.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"keep_last must be None or an int >= 1, got {keep_last!r}")
    extra = dict(meta or {})
    reserved = {"step", "format", "file_sizes", "saved_at"} & extra.keys()
    if reserved:
        raise ValueError(f"meta keys {sorted(reserved)} are reserved by save_checkpoint")
    json.dumps(extra)  # fail early (TypeError) on non-JSON meta, before touching the disk
    if ema_tensors is not None and set(ema_tensors) != set(model_tensors):
        odd = sorted(set(ema_tensors) ^ set(model_tensors))
        raise ValueError(f"ema_tensors must have the names of model_tensors; differing: {odd[:4]}")

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    clear_leftovers(root)
    folder = root / _step_dir_name(step)
    tmp = root / f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        save_tensors(tmp / MODEL_FILE, model_tensors)
        if ema_tensors is not None:
            save_tensors(tmp / EMA_FILE, ema_tensors)
        save_state(tmp / STATE_FILE, state)
        written = _FILES if ema_tensors is None else _FILES_WITH_EMA
        meta_obj = {
            **extra,
            "step": step,
            "format": CHECKPOINT_FORMAT,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "file_sizes": {name: (tmp / name).stat().st_size for name in written},
        }
        _write_json(tmp / META_FILE, meta_obj)
        _fsync_dir(tmp)
        _move_into_place(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        tensors = (model_tensors, ema_tensors, state)
        full = no_space_error(
            exc, root, step=step, tensors=tensors, previous=latest_checkpoint(root)
        )
        if full is not None:
            raise full from exc
        raise
    _write_json(root / LATEST_FILE, {"step": step, "path": folder.name})

    if keep_last is not None:
        older = [(s, p) for s, p in list_checkpoints(root) if s < step]
        doomed = older[: max(0, len(older) - (keep_last - 1))]
        for _, path in doomed:
            _remove_step_dir(path)
    return folder


def _complete_folder(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The step folder ``path`` names (for a checkpoint root: its latest) and its meta;
    FileNotFoundError if there is none, CheckpointError if it is incomplete."""
    p = Path(path)
    if not p.is_dir():
        raise missing_file_error(p, "checkpoint folder")
    folder = p
    if not (p / META_FILE).exists() and not _STEP_DIR_RE.match(p.name):
        found = latest_checkpoint(p)
        if found is None:
            detail = no_checkpoint_detail(p) or no_checkpoint_detail(p / "checkpoints")
            raise FileNotFoundError(f"no complete checkpoint found in '{p}'{detail}")
        folder = found
    if not is_complete_checkpoint(folder):
        names = (*_checkpoint_files(_read_json(folder / META_FILE)), META_FILE)
        missing = [n for n in names if not (folder / n).is_file()]
        detail = f"missing {', '.join(missing)}" if missing else "file sizes do not match meta"
        raise CheckpointError(f"checkpoint '{folder}' is incomplete ({detail})")
    meta = _read_json(folder / META_FILE)
    assert isinstance(meta, dict)
    return folder, meta


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Load ``(model_tensors, state, meta)`` from a step folder (raw weights: the EMA ones
    come from :func:`load_weights`).

    ``path`` may also be a checkpoint root, in which case :func:`latest_checkpoint` picks the
    folder.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: the folder is incomplete or a file is corrupt/unsafe.
    """
    folder, meta = _complete_folder(path)
    tensors = load_tensors(folder / MODEL_FILE)
    state = load_state(folder / STATE_FILE)
    return tensors, state, meta


def load_weights(
    path: str | os.PathLike[str], ema: bool = True
) -> tuple[dict[str, torch.Tensor], bool]:
    """The weights to evaluate or sample with, and whether they are the EMA ones: with
    ``ema`` (the default, as training evaluates) the EMA weights when the checkpoint has
    them, else the raw model weights. ``path`` is as for :func:`load_checkpoint`.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: the folder is incomplete or the weights file is corrupt.
    """
    folder, meta = _complete_folder(path)
    use_ema = ema and EMA_FILE in _checkpoint_files(meta)
    return load_tensors(folder / (EMA_FILE if use_ema else MODEL_FILE)), use_ema
