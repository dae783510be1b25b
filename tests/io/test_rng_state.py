"""Tests for :mod:`cgrpo.io.rng_state`: every global RNG captured and restored, in memory
and through a weights-only state file."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cgrpo.io.atomic import CheckpointError
from cgrpo.io.rng_state import get_rng_state, set_rng_state
from cgrpo.io.tensor_files import load_state, save_state


def _draw() -> tuple[list[float], list[float], list[float], list[float]]:
    return (
        [random.random() for _ in range(5)] + [random.gauss(0, 1)],
        np.random.rand(5).tolist(),
        np.random.standard_normal(3).tolist(),  # exercises numpy's cached gaussian
        torch.rand(5).tolist(),
    )


def test_rng_state_restore_in_memory() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()  # odd numbers of gaussians: both python and numpy now cache one
    state = get_rng_state()
    assert state["python"]["gauss_next"] is not None
    assert state["numpy"]["has_gauss"] == 1
    first = _draw()
    assert _draw() != first  # the generators really advance
    set_rng_state(state)
    assert _draw() == first


def test_rng_state_survives_save_state_round_trip(tmp_path: Path) -> None:
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    np.random.standard_normal(1)
    state = get_rng_state()
    first = _draw()
    path = tmp_path / "rng.pt"
    save_state(path, {"rng": state})
    _draw()
    set_rng_state(load_state(path)["rng"])
    assert _draw() == first


def test_unknown_rng_state_format_is_refused() -> None:
    with pytest.raises(CheckpointError, match="unsupported RNG state format 99"):
        set_rng_state({"format": 99})
