"""Tests for :mod:`cgrpo.io.checkpoint` (atomic IO, checkpoint dirs, EMA) and
:mod:`cgrpo.io.rng_state`."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from cgrpo.io import checkpoint as ckpt
from cgrpo.io import rng_state
from cgrpo.io.atomic import CheckpointError, atomic_write
from cgrpo.io.checkpoint import (
    is_complete_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state,
    load_tensors,
    load_weights,
    save_checkpoint,
    save_state,
    save_tensors,
)
from cgrpo.io.rng_state import get_rng_state, set_rng_state


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def _model(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


# ------------------------------------------------------------------------------------------
# atomic_write
# ------------------------------------------------------------------------------------------


def test_atomic_write_replaces_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new contents"))
    assert target.read_bytes() == b"new contents"
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old contents")
    seen: list[Path] = []

    def partial_then_crash(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp != target
        with open(tmp, "wb") as fh:
            fh.write(b"half-writ")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, partial_then_crash)
    assert target.read_bytes() == b"old contents"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_write_failure_in_replace_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_creates_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.txt"
    atomic_write(target, lambda tmp: tmp.write_text("hi"))
    assert target.read_text() == "hi"


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


# ------------------------------------------------------------------------------------------
# RNG
# ------------------------------------------------------------------------------------------


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


def test_rng_state_reexported_by_checkpoint_and_format_checked() -> None:
    assert ckpt.get_rng_state is rng_state.get_rng_state
    assert ckpt.set_rng_state is rng_state.set_rng_state
    with pytest.raises(CheckpointError, match="unsupported RNG state format 99"):
        set_rng_state({"format": 99})


# ------------------------------------------------------------------------------------------
# checkpoint folders
# ------------------------------------------------------------------------------------------


def _assert_checkpoint_equals(
    folder: Path, step: int, model: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    tensors, loaded_state, meta = load_checkpoint(folder)
    assert meta["step"] == step
    assert set(tensors) == set(model)
    for k in model:
        assert torch.equal(tensors[k], model[k])
    assert loaded_state["step"] == state["step"]


def test_save_and_load_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    assert latest_checkpoint(root) is None
    model = _model(0)
    state = {"step": 5, "rng": get_rng_state()}
    folder = save_checkpoint(root, 5, model, state, meta={"config": {"lr": 0.1}})
    assert folder == root / "step_000005"
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "model.safetensors",
        "state.pt",
    ]
    assert json.loads((root / "latest.json").read_text()) == {"step": 5, "path": "step_000005"}
    assert latest_checkpoint(root) == folder
    _assert_checkpoint_equals(folder, 5, model, state)
    _, _, meta = load_checkpoint(root)  # a root resolves to its latest checkpoint
    assert meta["config"] == {"lr": 0.1}
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("with_ema", [False, True])
def test_meta_is_written_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_ema: bool
) -> None:
    order: list[str] = []
    real_replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        order.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    save_checkpoint(tmp_path, 1, _model(), {"step": 1}, ema_tensors=_model(9) if with_ema else None)
    ema = ["ema.safetensors"] if with_ema else []
    assert order == ["model.safetensors", *ema, "state.pt", "meta.json", "latest.json"]


@pytest.mark.parametrize(
    "fail_on", ["model.safetensors", "ema.safetensors", "state.pt", "meta.json"]
)
def test_killed_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str
) -> None:
    model1 = _model(1)
    save_checkpoint(tmp_path, 1, model1, {"step": 1})
    real_replace = os.replace

    def dying_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == fail_on and Path(dst).parent.name == "step_000002":
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, _model(2), {"step": 2}, ema_tensors=_model(3))
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    _assert_checkpoint_equals(tmp_path / "step_000001", 1, model1, {"step": 1})
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "step_000002")
    assert _leftovers(tmp_path / "step_000002") == []


def test_killed_midway_through_tensor_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model1 = _model(1)
    save_checkpoint(tmp_path, 1, model1, {"step": 1})

    def partial_save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        with open(filename, "wb") as fh:
            fh.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
        raise OSError("killed mid-write")

    monkeypatch.setattr(ckpt, "_st_save_file", partial_save_file)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(tmp_path, 1, _model(2), {"step": 1})  # re-save of the same step
    monkeypatch.undo()
    # step 1 was being overwritten, so it no longer counts as complete; nothing else exists.
    assert latest_checkpoint(tmp_path) is None
    # but its previous model file is intact (the new one never replaced it)
    assert torch.equal(
        load_tensors(tmp_path / "step_000001" / "model.safetensors")["w"], model1["w"]
    )


def test_latest_json_pointing_at_incomplete_folder_falls_back(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _model(1), {"step": 1})
    save_checkpoint(tmp_path, 2, _model(2), {"step": 2})
    save_checkpoint(tmp_path, 3, _model(3), {"step": 3})
    (tmp_path / "step_000003" / "state.pt").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000002"
    # a truncated file (size mismatch with meta.json) also makes a folder incomplete
    model_file = tmp_path / "step_000002" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:10])
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    (tmp_path / "latest.json").write_text("{not json")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"


def test_ema_round_trip(tmp_path: Path) -> None:
    model, ema = _model(0), _model(1)
    folder = save_checkpoint(tmp_path, 7, model, {"step": 7}, ema_tensors=ema)
    assert (folder / "ema.safetensors").is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["file_sizes"]["ema.safetensors"] == (folder / "ema.safetensors").stat().st_size
    for where in (folder, tmp_path):  # a step folder or a checkpoint root
        weights, is_ema = load_weights(where)
        assert is_ema and all(torch.equal(weights[k], ema[k]) for k in ema)
        raw, is_ema = load_weights(where, ema=False)
        assert not is_ema and all(torch.equal(raw[k], model[k]) for k in model)
    _assert_checkpoint_equals(folder, 7, model, {"step": 7})  # load_checkpoint: raw weights


def test_load_weights_without_ema_gives_raw_weights(tmp_path: Path) -> None:
    model = _model(0)
    save_checkpoint(tmp_path, 1, model, {"step": 1}, ema_tensors=_model(1))
    save_checkpoint(tmp_path, 1, model, {"step": 1})  # a re-save without EMA drops the old one
    assert not (tmp_path / "step_000001" / "ema.safetensors").exists()
    save_checkpoint(tmp_path, 2, model, {"step": 2})
    for step in (1, 2):
        weights, is_ema = load_weights(tmp_path / f"step_{step:06d}", ema=True)
        assert not is_ema and all(torch.equal(weights[k], model[k]) for k in model)


@pytest.mark.parametrize("damage", ["truncated", "deleted", "garbage"])
def test_damaged_ema_is_never_loaded(tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path, 1, _model(1), {"step": 1}, ema_tensors=_model(2))
    save_checkpoint(tmp_path, 2, _model(3), {"step": 2}, ema_tensors=_model(4))
    folder = tmp_path / "step_000002"
    ema_file = folder / "ema.safetensors"
    data = ema_file.read_bytes()
    if damage == "garbage":  # same size, so only reading it shows the damage
        ema_file.write_bytes(b"\xff" * len(data))
        assert is_complete_checkpoint(folder)
        with pytest.raises(CheckpointError, match="ema.safetensors"):
            load_weights(folder)
        return
    if damage == "truncated":
        ema_file.write_bytes(data[: len(data) // 2])
    else:
        ema_file.unlink()
    assert not is_complete_checkpoint(folder)
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    detail = "file sizes do not match" if damage == "truncated" else "missing ema.safetensors"
    for load in (load_weights, load_checkpoint):
        with pytest.raises(CheckpointError, match=f"incomplete \\({detail}"):
            load(folder)


def test_keep_last(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, _model(step), {"step": step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000040"
    save_checkpoint(tmp_path, 50, _model(50), {"step": 50}, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [50]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_000050"]


def test_save_checkpoint_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, 1, _model(), {}, keep_last=0)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, 1, _model(), {}, meta={"step": 3})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, -1, _model(), {})
    with pytest.raises(ValueError, match=r"ema_tensors.*\['x'\]"):
        save_checkpoint(tmp_path, 1, _model(), {}, ema_tensors={**_model(), "x": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []  # all checked before anything is written


def test_load_checkpoint_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="step_000009"):
        load_checkpoint(tmp_path / "step_000009")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)


def test_atomic_write_gives_umask_permissions(tmp_path: Path) -> None:
    """A file written through a 0600-creating writer ends with the usual 0644-style mode."""
    import stat

    def private_writer(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    old = os.umask(0o022)
    try:
        out = atomic_write(tmp_path / "f.bin", private_writer)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
