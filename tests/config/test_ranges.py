"""Declared value ranges (option(..., check=...)): parsed once, checked when a config is
built, a bad number refused in one line naming the key before anything is created."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cgrpo.cli import main
from cgrpo.config.core import load_config
from cgrpo.config.errors import ConfigError
from cgrpo.config.ranges import parse_check, violates
from cgrpo.run.config import TrainConfig


def test_parse_and_violates() -> None:
    assert parse_check("> 0, finite") == [(">", 0), ("finite", 0)]
    assert parse_check(">= 0, < 1") == [(">=", 0), ("<", 1)]
    with pytest.raises(ValueError, match="bad range"):
        parse_check("positive")
    assert violates(math.nan, ">= 0") and violates(math.inf, "> 0, finite")
    assert violates(-1, ">= 0") and violates(1.0, ">= 0, < 1") and not violates(0, ">= 0, < 1")
    assert not violates(True, ">= 2") and not violates("x", ">= 0") and not violates(None, "> 0")


@pytest.mark.parametrize(
    "override",
    [
        "run.steps=-1", "run.checkpoint_every=-5", "run.eval_every=-1", "run.log_every=0",
        "run.eval_batch_size=0", "run.keep_last=0", "run.threads=-1",
        "run.seed=18446744073709551616", "optim.lr=-1", "optim.beta1=2", "optim.grad_clip=-1",
        "grpo.micro_batch_size=-1", "grpo.timestep_fraction=1.5", "sampler.shift=0",
    ],
)  # fmt: skip
def test_cgrpo_train_refuses_an_out_of_range_value_in_one_line(
    override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, out = override.split("=")[0], tmp_path / "run"
    assert main(["train", override, f"run.out_dir={out}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{key} must be" in err, err
    assert not out.exists()  # refused before the run folder is made


def test_nan_and_inf_from_yaml_are_refused(tmp_path: Path) -> None:
    """YAML's .nan / .inf are floats (the command line's 'nan' is a string, refused as one)."""
    for text, key in (("optim:\n  lr: .nan\n", "optim.lr"), ("optim:\n  grad_clip: .inf\n",
                                                             "optim.grad_clip")):  # fmt: skip
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"{key} must be .*finite"):
            load_config(TrainConfig, path)


def test_direct_construction_is_checked_too() -> None:
    from cgrpo.run.config import GRPOConfig

    with pytest.raises(ConfigError, match="grpo.micro_batch_size must be >= 0"):
        TrainConfig(grpo=GRPOConfig(micro_batch_size=-1))
