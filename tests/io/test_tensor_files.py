"""Tests for :mod:`cgrpo.io.tensor_files`: safetensors files and weights-only state files
(atomic, refused when unsafe, one clear error when missing or damaged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from cgrpo.io.atomic import CheckpointError
from cgrpo.io.tensor_files import load_state, load_tensors, save_state, save_tensors


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


# ------------------------------------------------------------------------------------------
# tensors
# ------------------------------------------------------------------------------------------


def test_tensor_round_trip_with_views_and_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {
        "base": base,
        "tied": base,  # same storage twice (tied weights)
        "transposed": base.t(),  # non-contiguous view
        "slice": base[1:],  # view into the same storage
        "half": torch.randn(5).half(),
        "int": torch.tensor([1, 2, 3], dtype=torch.int64),
        "empty": torch.zeros(0),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "m.safetensors"
    save_tensors(path, tensors, metadata={"kind": "test"})
    loaded = load_tensors(path)
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype
        assert torch.equal(loaded[name], t.detach()), name
    with safetensors.safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"kind": "test"}
    assert _leftovers(tmp_path) == []


def test_save_tensors_rejects_non_tensors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'x'"):
        save_tensors(tmp_path / "m.safetensors", {"x": [1, 2]})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_load_tensors_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_tensors(missing)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_load_tensors_corrupt_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "broken_model.safetensors"
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 this is not a safetensors file")
    else:
        save_tensors(path, {"w": torch.randn(64, 64)})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="broken_model.safetensors"):
        load_tensors(path)


# ------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------


def test_optimizer_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=10)
    for _ in range(3):
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    state = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": 3,
        "name": "run",
        "history": [0.5, 0.25],
        "dtype": torch.bfloat16,
    }
    path = tmp_path / "state.pt"
    save_state(path, state)
    loaded = load_state(path)
    assert loaded["step"] == 3 and loaded["name"] == "run" and loaded["history"] == [0.5, 0.25]
    assert loaded["dtype"] is torch.bfloat16
    assert loaded["scheduler"] == sched.state_dict()

    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1.0)
    opt2.load_state_dict(loaded["optimizer"])
    ref = opt.state_dict()
    new = opt2.state_dict()
    assert new["param_groups"] == ref["param_groups"]
    for idx, entries in ref["state"].items():
        for k, v in entries.items():
            assert torch.equal(new["state"][idx][k], v), (idx, k)


def test_save_state_rejects_unloadable_objects_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    save_state(path, {"ok": 1})
    with pytest.raises(TypeError, match=r"state\['rng'\]\['np'\].*ndarray"):
        save_state(path, {"rng": {"np": np.zeros(3)}})
    assert load_state(path) == {"ok": 1}  # previous file untouched
    assert _leftovers(tmp_path) == []


class _Evil:
    """A pickle payload: unpickling it would call ``_touch`` (arbitrary code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    Path(path).write_text("pwned")


def test_load_state_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil_state.pt"
    torch.save({"x": torch.ones(1), "payload": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match="evil_state.pt") as info:
        load_state(path)
    assert "refusing" in str(info.value) and "_touch" in str(info.value)
    assert not marker.exists()


def test_load_state_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing_state.pt"):
        load_state(tmp_path / "missing_state.pt")
    bad = tmp_path / "bad_state.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="bad_state.pt"):
        load_state(bad)
