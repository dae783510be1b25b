"""Tests for :mod:`cgrpo.io.checkpoint`: step folders written whole (meta.json last, in a
temp folder renamed into place), found again after a crash, pruned, and loaded with or
without their EMA."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from cgrpo.io import tensor_files
from cgrpo.io.atomic import CheckpointError
from cgrpo.io.checkpoint import (
    is_complete_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from cgrpo.io.rng_state import get_rng_state


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def _model(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


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
    folder = save_checkpoint(root, 5, model, state=state, meta={"config": {"lr": 0.1}})
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
    save_checkpoint(
        tmp_path, 1, _model(), state={"step": 1}, ema_tensors=_model(9) if with_ema else None
    )
    ema = ["ema.safetensors"] if with_ema else []
    files = ["model.safetensors", *ema, "state.pt", "meta.json"]
    assert order == [*files, "step_000001", "latest.json"]  # the folder renamed into place


@pytest.mark.parametrize(
    "fail_on", ["model.safetensors", "ema.safetensors", "state.pt", "meta.json", "step_000002"]
)
def test_killed_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str
) -> None:
    model1 = _model(1)
    save_checkpoint(tmp_path, 1, model1, state={"step": 1})
    real_replace = os.replace

    def dying_replace(src: Any, dst: Any) -> None:
        # a file into step 2's temp folder, or that folder into place
        if Path(dst).name == fail_on and ".step_000002.tmp-" in str(src):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, _model(2), state={"step": 2}, ema_tensors=_model(3))
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    _assert_checkpoint_equals(tmp_path / "step_000001", 1, model1, {"step": 1})
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "step_000002")  # never renamed into place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_000001"]


def test_killed_midway_through_tensor_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model1 = _model(1)
    save_checkpoint(tmp_path, 1, model1, state={"step": 1})

    def partial_save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        with open(filename, "wb") as fh:
            fh.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
        raise OSError("killed mid-write")

    monkeypatch.setattr(tensor_files, "_st_save_file", partial_save_file)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(tmp_path, 1, _model(2), state={"step": 2})  # re-save of the same step
    monkeypatch.undo()
    # the re-save never touched step 1's folder: it is complete and the previous save's
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    _assert_checkpoint_equals(tmp_path / "step_000001", 1, model1, {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_000001"]


def test_latest_json_pointing_at_incomplete_folder_falls_back(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _model(1), state={"step": 1})
    save_checkpoint(tmp_path, 2, _model(2), state={"step": 2})
    save_checkpoint(tmp_path, 3, _model(3), state={"step": 3})
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
    folder = save_checkpoint(tmp_path, 7, model, state={"step": 7}, ema_tensors=ema)
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
    save_checkpoint(tmp_path, 1, model, state={"step": 1}, ema_tensors=_model(1))
    save_checkpoint(
        tmp_path, 1, model, state={"step": 1}
    )  # a re-save without EMA drops the old one
    assert not (tmp_path / "step_000001" / "ema.safetensors").exists()
    save_checkpoint(tmp_path, 2, model, state={"step": 2})
    for step in (1, 2):
        weights, is_ema = load_weights(tmp_path / f"step_{step:06d}", ema=True)
        assert not is_ema and all(torch.equal(weights[k], model[k]) for k in model)


@pytest.mark.parametrize("damage", ["truncated", "deleted", "garbage"])
def test_damaged_ema_is_never_loaded(tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path, 1, _model(1), state={"step": 1}, ema_tensors=_model(2))
    save_checkpoint(tmp_path, 2, _model(3), state={"step": 2}, ema_tensors=_model(4))
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
        save_checkpoint(tmp_path, step, _model(step), state={"step": step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000040"
    save_checkpoint(tmp_path, 50, _model(50), state={"step": 50}, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [50]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_000050"]


def test_save_checkpoint_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, 1, _model(), state={}, keep_last=0)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, 1, _model(), state={}, meta={"step": 3})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, -1, _model(), state={})
    with pytest.raises(ValueError, match=r"ema_tensors.*\['x'\]"):
        save_checkpoint(
            tmp_path, 1, _model(), state={}, ema_tensors={**_model(), "x": torch.ones(1)}
        )
    with pytest.raises(TypeError, match="positional"):
        save_checkpoint(tmp_path, 1, _model(), {})  # type: ignore[misc]  # state by name
    assert list(tmp_path.iterdir()) == []  # all checked before anything is written


def test_load_checkpoint_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="step_000009"):
        load_checkpoint(tmp_path / "step_000009")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)
