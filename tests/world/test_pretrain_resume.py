"""cgrpo pretrain: stopped by its time budget and resumed, it ends where a run that never
stopped ends, bit for bit; resume checks the settings; the weights carry the split and the
held-out figure is written beside them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cgrpo.config.core import load_config
from cgrpo.config.errors import ConfigError
from cgrpo.io.tensor_files import load_state
from cgrpo.world.pretrain import PretrainConfig, pretrain, state_folder
from cgrpo.world.pretrain_state import STATE_FILE
from cgrpo.world.split import read_split, wide_split
from tests.conftest import TINY


def tiny(out: Path, *overrides: str) -> PretrainConfig:
    keys = [f"out={out}", "steps=4", "batch_size=4", "warmup=1", "lr=3e-3", "save_every=2",
            "subjects=wide", "held_out=32", "report_prompts=0", "log_every=1000",
            *(f"model.{k}={v}" for k, v in asdict(TINY).items())]  # fmt: skip
    return load_config(PretrainConfig, None, [*keys, *overrides])


def test_stopped_and_resumed_equals_straight(tmp_path: Path) -> None:
    straight = pretrain(tiny(tmp_path / "a" / "base.safetensors"))
    out = tmp_path / "b" / "base.safetensors"
    pretrain(tiny(out, "time_budget=1e-9"))  # the budget is spent after one step
    assert load_state(state_folder(tiny(out)) / STATE_FILE)["step"] == 1
    pretrain(tiny(out, "time_budget=1e-9", "resume=true"))  # step 2 = N / 2
    pretrain(tiny(out, "resume=true"))  # the other half
    a, b = load_file(str(straight)), load_file(str(out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = load_state(state_folder(tiny(straight)) / STATE_FILE)
    sb = load_state(state_folder(tiny(out)) / STATE_FILE)
    assert sa["step"] == sb["step"] == 4 and sa["running"] == sb["running"]
    for part in ("model", "ema"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part])
    for i, s in sa["optimizer"]["state"].items():
        assert all(torch.equal(v, sb["optimizer"]["state"][i][k]) for k, v in s.items())
    assert torch.equal(sa["torch_rng"], sb["torch_rng"]) and sa["python_rng"] == sb["python_rng"]


def test_weights_carry_the_split_and_the_report_sits_beside_them(tmp_path: Path) -> None:
    out = pretrain(tiny(tmp_path / "base.safetensors", "steps=2", "report_prompts=1"))
    assert read_split(out) == wide_split(32)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["finished"] and report["step"] == 2 and report["training_subjects"] == 224
    assert report["held_out_subjects"] == [s.name for s in wide_split(32).held_out]
    assert report["weights"] == str(out)
    for model in ("weights", "shipped_base"):  # paired figures, the shipped base's beside
        assert set(report["loss"][model]) == {"held_out_loss", "train_loss"}
        assert all(v > 0 for v in report["loss"][model].values())


def test_resume_checks_its_checkpoint_and_settings(tmp_path: Path) -> None:
    out = tmp_path / "base.safetensors"
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*base.state"):
        pretrain(tiny(out, "resume=true"))
    with pytest.raises(ValueError, match="resume=true needs out="):
        pretrain(load_config(PretrainConfig, None, ["resume=true"]))
    pretrain(tiny(out, "steps=2"))
    assert not out.with_suffix(".json").exists()  # report_prompts=0
    with pytest.raises(FileExistsError, match="resume=true"):  # never clobbers a checkpoint
        pretrain(tiny(out, "steps=2"))
    with pytest.raises(ValueError, match=r"lr=0\.001 \(checkpoint: 0\.003\)"):
        pretrain(tiny(out, "steps=2", "lr=1e-3", "resume=true"))
    # run-length settings may change; a finished run resumed just writes its weights again
    pretrain(tiny(out, "steps=2", "resume=true", "log_every=5", "time_budget=60"))


def test_size_and_split_are_command_line_settings() -> None:
    cfg = load_config(PretrainConfig, None, ["model.dim=128", "model.depth=8", "held_out=48"])
    assert (cfg.model.dim, cfg.model.depth, cfg.held_out) == (128, 8, 48)
    with pytest.raises(ConfigError, match="held_out must be a multiple of 8"):
        load_config(PretrainConfig, None, ["subjects=wide", "held_out=36"])
    with pytest.raises(ConfigError, match="subjects"):
        load_config(PretrainConfig, None, ["subjects=all"])
