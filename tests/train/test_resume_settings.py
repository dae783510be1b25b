"""A resume continues its own run: a setting that changes what a step is (group size,
sampler, method, rewards, optimizer, seed) is refused in one line naming the keys, before
anything is loaded or written, unless --allow-changes; how long to run, how often to write
or evaluate, devices and threads may change."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgrpo.cli import main
from cgrpo.config.core import config_to_dict
from cgrpo.io import checkpoint as ckpt
from cgrpo.train.resume_settings import FREE_TO_CHANGE, changed_settings
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config

ARGS = ["run.eval=false", "run.image_every=0", "run.threads=1", "data.prompts_per_step=2",
        "grpo.group_size=4", "sampler.num_steps=3", "run.checkpoint_every=1"]  # fmt: skip


def test_changed_settings_names_what_changes_a_step(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path, tiny_weights)
    saved = config_to_dict(cfg)
    free = ["run.steps=9", "run.checkpoint_every=3", "run.eval_every=2", "model.device=cpu",
            "grpo.micro_batch_size=2", "run.threads=2", "run.keep_last=5"]  # fmt: skip
    assert changed_settings(saved, fast_config(tmp_path, tiny_weights, *free)) == []
    bound = ["grpo.group_size=8", "optim.lr=0.5", "run.seed=3", "sampler.num_steps=5",
             "method.shaping.gamma=0.3"]  # fmt: skip
    changes = changed_settings(saved, fast_config(tmp_path, tiny_weights, *bound))
    keys = [c.split(":")[0] for c in changes]
    assert keys == sorted(["grpo.group_size", "optim.lr", "run.seed", "sampler.num_steps",
                           "method.shaping.gamma"])  # fmt: skip
    assert "grpo.group_size: 4 -> 8" in changes
    assert all(
        k.split(".")[0] in ("run", "model", "grpo", "sampler", "data") for k in FREE_TO_CHANGE
    )


def test_a_setting_added_after_the_checkpoint_counts_as_its_default(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """A checkpoint written before a setting existed (its saved config lacks the key) resumes
    when the setting is at its (dataclass) default, and is refused when it is not."""
    cfg = fast_config(tmp_path, tiny_weights)
    saved = config_to_dict(cfg)
    del saved["grpo"]["kl_coef"], saved["sampler"]["ode_solver"]
    assert changed_settings(saved, cfg) == []
    changes = changed_settings(saved, fast_config(tmp_path, tiny_weights, "grpo.kl_coef=0.5"))
    assert changes == ["grpo.kl_coef: 0.0 -> 0.5"]


@pytest.fixture
def one_step_run(tmp_path: Path, tiny_weights: Path) -> Path:
    run = tmp_path / "run"
    GRPOTrainer(fast_config(run, tiny_weights, "run.steps=1", *ARGS)).train(quiet=True)
    return run


def test_a_resume_with_another_group_size_is_refused_in_one_line(
    one_step_run: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = one_step_run
    common = ["train", "--quiet", "--resume", f"run.out_dir={run}", f"model.weights={tiny_weights}",
              "optim.lr=1e-3", "data.eval_prompts_per_subject=1", "run.steps=2", *ARGS]  # fmt: skip
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    capsys.readouterr()
    assert main([*common, "grpo.group_size=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "grpo.group_size: 4 -> 2" in err and "--allow-changes" in err and "config.yaml" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written
    # the same settings resume; a run-length change is free
    assert main(common) == 0
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")][-1] == 2
    # --allow-changes: the user means it
    assert main([*common, "run.steps=3", "grpo.group_size=2", "--allow-changes"]) == 0
