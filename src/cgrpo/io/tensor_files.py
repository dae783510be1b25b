"""The two files a checkpoint is made of, written atomically and read without unpickling.

- **tensor files** (:func:`save_tensors` / :func:`load_tensors`): a flat ``name -> tensor``
  mapping as safetensors (no pickle at all);
- **state files** (:func:`save_state` / :func:`load_state`): a ``torch.save`` of tensors,
  numbers, strings, lists and dicts, read back with ``torch.load(..., weights_only=True)``.
  :func:`save_state` refuses up front any object such a load could not read back (numpy
  arrays, custom classes, ...).

Both go through :func:`cgrpo.io.atomic.atomic_write`; a missing or damaged file is one
clear error naming it (:func:`missing_file_error`, :class:`~cgrpo.io.atomic.CheckpointError`).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save_file as _st_save_file

from cgrpo.io.atomic import CheckpointError, atomic_write

__all__ = ["load_state", "load_tensors", "missing_file_error", "save_state", "save_tensors"]


def missing_file_error(path: Path, what: str) -> FileNotFoundError:
    """The error for a checkpoint file or folder that is not there, with what is there."""
    hint = "check the path; checkpoints are folders like <run>/checkpoints/step_000100"
    if path.parent.is_dir():
        siblings = sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("."))
        hint += f"; '{path.parent}' contains: {', '.join(siblings[:10]) or 'nothing'}"
    else:
        hint += f"; the folder '{path.parent}' does not exist"
    return FileNotFoundError(f"{what} not found: '{path}' ({hint})")


# --------------------------------------------------------------------------------------------
# Tensors (safetensors)
# --------------------------------------------------------------------------------------------


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Atomically save a flat ``name -> tensor`` mapping as a safetensors file.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing storage with an
    earlier entry (tied weights, views) are cloned, since safetensors refuses shared storage.
    ``metadata`` must map strings to strings.
    """
    prepared: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"'{name}' is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.layout != torch.strided:
            raise TypeError(f"'{name}' has layout {tensor.layout}; only dense tensors are saved")
        t = tensor.detach().cpu()
        if t.numel() > 0:
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen_storages:
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            seen_storages.add(ptr)
        prepared[name] = t.contiguous()
    meta: dict[str, str] | None = None
    if metadata is not None:
        meta = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"safetensors metadata must be str -> str, got {k!r}: {v!r}")
            meta[k] = v
    return atomic_write(path, lambda tmp: _st_save_file(prepared, str(tmp), metadata=meta))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it and gives a hint).
        CheckpointError: the file is corrupt or truncated (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise missing_file_error(p, "tensor file")
    try:
        return _st_load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot read safetensors file '{p}': {exc} (corrupt or truncated?)"
        ) from exc


# --------------------------------------------------------------------------------------------
# Plain state (torch.save / weights_only load)
# --------------------------------------------------------------------------------------------

_PLAIN_LEAVES = (bool, int, float, complex, str, bytes, bytearray, type(None))
_SAFE_LEAVES = (torch.Tensor, torch.Size, torch.device, torch.dtype, *_PLAIN_LEAVES)


def _check_weights_only_safe(obj: Any, where: str) -> None:
    """Raise TypeError if ``obj`` holds anything ``torch.load(weights_only=True)`` rejects."""
    if isinstance(obj, _SAFE_LEAVES):
        return
    if isinstance(obj, dict):  # includes OrderedDict
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise TypeError(f"{where} has a key of type {type(k).__name__}: {k!r}")
            _check_weights_only_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple, set)):
        if isinstance(obj, tuple) and type(obj) is not tuple:
            raise TypeError(f"{where} is a {type(obj).__name__} (named tuples are not allowed)")
        for i, v in enumerate(obj):
            _check_weights_only_safe(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which cannot be loaded "
        "with torch.load(weights_only=True); store tensors, numbers, strings, lists and dicts only"
    )


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` a state dict made of tensors, numbers, strings, lists, dicts.

    Raises:
        TypeError: ``state`` contains an object :func:`load_state` would refuse (checked before
            anything is written, so a bad state never replaces a good file).
    """
    _check_weights_only_safe(dict(state), "state")
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a file written by :func:`save_state` with ``weights_only=True`` onto the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is corrupt, or holds objects other than tensors and plain
            containers (they are never unpickled).
    """
    p = Path(path)
    if not p.is_file():
        raise missing_file_error(p, "state file")
    try:
        # mmap: processes resuming from one file share its pages; writes stay private
        state = torch.load(p, weights_only=True, map_location="cpu", mmap=True)
    except Exception as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in text.lower():
            match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            culprit = f"found {match.group(1)}" if match else text.strip().splitlines()[0]
            raise CheckpointError(
                f"refusing to load '{p}': it contains objects other than tensors and plain "
                f"containers, which are never unpickled ({culprit})"
            ) from exc
        raise CheckpointError(
            f"cannot read state file '{p}': {exc} (corrupt or truncated?)"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"state file '{p}' holds a {type(state).__name__}, not a dict")
    return state
