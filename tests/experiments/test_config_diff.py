"""Config diffing: the keys where two run configs differ, some left out."""

from __future__ import annotations

from pathlib import Path

from cgrpo.config.core import load_config, save_config
from cgrpo.experiments.config_diff import config_changes, config_of_text, saved_config
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig


def _cfg(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, EMBEDDED_CONFIG, list(overrides))


def test_changes_name_each_key_and_leave_out_what_is_ignored(tmp_path: Path) -> None:
    a = _cfg("run.out_dir=/a", "run.steps=5")
    b = _cfg("run.out_dir=/b", "run.steps=6", "optim.lr=1e-4")
    assert config_changes(a, a) == []
    assert config_changes(a, b) == ["optim.lr", "run.steps"]  # run.out_dir: where it is
    assert config_changes(a, b, ("run.",)) == ["optim.lr"]  # a whole section
    assert config_changes(a, b, ("optim.lr",)) == ["run.out_dir", "run.steps"]
    save_config(b, tmp_path / "config.yaml")
    assert config_changes(saved_config(tmp_path / "config.yaml"), b) == []
    text = (tmp_path / "config.yaml").read_text()
    assert config_changes(config_of_text(text), b) == []  # a config kept in a record
