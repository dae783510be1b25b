"""Every RNG a run draws from: python ``random``, numpy's global generator, torch CPU and
CUDA — capture them as one plain state, and restore them.

The state holds only ints, floats, strings, lists and tensors, so it can be stored with
:func:`cgrpo.io.checkpoint.save_state` and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cgrpo.io.atomic import CheckpointError

__all__ = [
    "RNG_STATE_FORMAT", "get_rng_state", "random_state", "set_random_state", "set_rng_state",
]  # fmt: skip

RNG_STATE_FORMAT = 1


def get_rng_state() -> dict[str, Any]:
    """Capture the python ``random``, numpy global and torch (CPU + CUDA) generator states.

    The result holds only ints, floats, strings, lists and tensors, so it can be stored with
    :func:`cgrpo.io.checkpoint.save_state` and read back with ``weights_only=True``.
    """
    state: dict[str, Any] = {
        "format": RNG_STATE_FORMAT,
        "python": _python_state(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state().clone(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore generator states captured by :func:`get_rng_state` (sections present only).

    CUDA states are restored for the devices that exist; a warning is issued when the saved
    state covers GPUs that are not available.

    Raises:
        cgrpo.io.atomic.CheckpointError: the state has an unknown format.
    """
    fmt = state.get("format", RNG_STATE_FORMAT)
    if fmt != RNG_STATE_FORMAT:
        raise CheckpointError(f"unsupported RNG state format {fmt!r}")
    if "python" in state:
        _set_python_state(state["python"])
    if "numpy" in state:
        _set_numpy_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(dtype=torch.uint8, device="cpu"))
    if "cuda" in state:
        _set_cuda_states(list(state["cuda"]))


def random_state(rng: random.Random) -> list[Any]:
    """A ``random.Random``'s state as ``[version, [internal ints], gauss_next]``: plain
    values that ``torch.load(weights_only=True)`` reads back (:func:`set_random_state`)."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def set_random_state(rng: random.Random, state: Sequence[Any]) -> None:
    """Restore what :func:`random_state` captured into ``rng``."""
    version, internal, gauss_next = state
    rng.setstate((version, tuple(internal), gauss_next))


def _python_state() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    return {
        "version": int(version),
        "internal": [int(x) for x in internal],
        "gauss_next": None if gauss_next is None else float(gauss_next),
    }


def _set_python_state(py: Mapping[str, Any]) -> None:
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"]), py["gauss_next"]))


def _numpy_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    name, keys, pos, has_gauss, cached = np_state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_state(npst: Mapping[str, Any]) -> None:
    keys = npst["keys"]
    keys_arr = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state(
        (
            str(npst["name"]),
            keys_arr.astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )


def _set_cuda_states(cuda_states: list[torch.Tensor]) -> None:
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i, s in enumerate(cuda_states[:available]):
        torch.cuda.set_rng_state(s.to(dtype=torch.uint8, device="cpu"), device=i)
    if len(cuda_states) > available:
        warnings.warn(
            f"RNG state has {len(cuda_states)} CUDA generator(s) but only {available} "
            "device(s) are available; the rest were not restored",
            stacklevel=3,
        )
