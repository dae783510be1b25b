"""A re-save of a step replaces its folder whole (temp folder + rename): a crash at any
point of it leaves the previous complete folder, never a partial one that
``latest_checkpoint`` could pick, and the next save clears what a crash left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from cgrpo.io import checkpoint as ckpt
from cgrpo.io import tensor_files
from cgrpo.io.checkpoint import (
    checkpoint_size,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)


def _model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _is_first_save(root: Path) -> None:
    """step 1 is the first save's: model 1, EMA 2, state step 1."""
    assert latest_checkpoint(root) == root / "step_000001"
    tensors, state, _ = load_checkpoint(root / "step_000001")
    assert torch.equal(tensors["w"], _model(1)["w"]) and state["step"] == 1
    ema, used = load_weights(root / "step_000001")
    assert used and torch.equal(ema["w"], _model(2)["w"])


def test_resave_replaces_the_folder_whole(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _model(1), state={"step": 1}, ema_tensors=_model(2))
    first = (tmp_path / "step_000001").stat().st_ino
    save_checkpoint(tmp_path, 1, _model(3), state={"step": 7})  # no EMA this time
    folder = tmp_path / "step_000001"
    assert folder.stat().st_ino != first  # a new folder, not the old one rewritten
    assert _names(folder) == ["meta.json", "model.safetensors", "state.pt"]
    tensors, state, _ = load_checkpoint(folder)
    assert torch.equal(tensors["w"], _model(3)["w"]) and state["step"] == 7
    assert _names(tmp_path) == ["latest.json", "step_000001"]


def test_crash_inside_the_writer_keeps_the_previous_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 1, _model(1), state={"step": 1}, ema_tensors=_model(2))

    def dying_save(path: Any, state: Any) -> None:
        Path(path).write_bytes(b"half a state file")
        raise RuntimeError("killed inside the writer")

    monkeypatch.setattr(ckpt, "save_state", dying_save)
    with pytest.raises(RuntimeError, match="inside the writer"):
        save_checkpoint(tmp_path, 1, _model(5), state={"step": 9}, ema_tensors=_model(6))
    monkeypatch.undo()
    _is_first_save(tmp_path)
    assert _names(tmp_path) == ["latest.json", "step_000001"]  # the temp folder is gone


def test_hard_kill_leaves_only_hidden_folders_that_the_next_save_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 1, _model(1), state={"step": 1}, ema_tensors=_model(2))

    def partial_save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
        raise KeyboardInterrupt("SIGKILL")

    monkeypatch.setattr(tensor_files, "_st_save_file", partial_save_file)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # killed: no clean-up runs
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 1, _model(5), state={"step": 9})
    monkeypatch.undo()
    hidden = [n for n in _names(tmp_path) if n.startswith(".")]
    assert len(hidden) == 1 and hidden[0].startswith(".step_000001.tmp-")
    _is_first_save(tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    save_checkpoint(tmp_path, 2, _model(3), state={"step": 2})
    assert _names(tmp_path) == ["latest.json", "step_000001", "step_000002"]


def test_kill_between_the_two_renames_is_undone_by_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-save moves the old folder aside, then renames the new one into place: killed
    in between, the old one is put back by the next save."""
    save_checkpoint(tmp_path, 1, _model(1), state={"step": 1}, ema_tensors=_model(2))
    real_replace = os.replace

    def dying_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "step_000001":
            raise KeyboardInterrupt("SIGKILL")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 1, _model(5), state={"step": 9})
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) is None  # no step folder: nothing partial is picked
    assert any(n.startswith(".replaced-step_000001-") for n in _names(tmp_path))
    save_checkpoint(tmp_path, 2, _model(3), state={"step": 2})
    assert _names(tmp_path) == ["latest.json", "step_000001", "step_000002"]
    tensors, state, _ = load_checkpoint(tmp_path / "step_000001")
    assert torch.equal(tensors["w"], _model(1)["w"]) and state["step"] == 1


def test_checkpoint_size_lists_every_file(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, 3, _model(1), state={"step": 3}, ema_tensors=_model(2))
    sizes = checkpoint_size(folder)
    assert list(sizes) == ["ema.safetensors", "meta.json", "model.safetensors", "state.pt"]
    assert all(sizes[n] == (folder / n).stat().st_size > 0 for n in sizes)
