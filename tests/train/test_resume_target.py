"""``cgrpo train --resume [PATH_OR_STEP]``: the latest checkpoint of run.out_dir, its step
N, or a checkpoint folder; a missing one is one line before any model loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cgrpo.cli import main
from cgrpo.io.checkpoint import load_checkpoint
from cgrpo.train.checkpointing import resume_checkpoint


def _args(out: Path, weights: Path, *extra: str) -> list[str]:
    """fast_config's settings as command-line overrides (2 steps, a checkpoint each)."""
    return [
        "train", "--quiet", f"run.out_dir={out}", f"model.weights={weights}", "run.steps=2",
        "run.threads=1", "run.image_every=0", "run.checkpoint_every=1", "run.eval=false",
        "data.prompts_per_step=2", "grpo.group_size=4", "sampler.num_steps=3", "optim.lr=1e-3",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main(_args(out, tiny_weights)) == 0
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder)[0]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_targets_resolve(run: Path, tmp_path: Path) -> None:
    ckpts = run / "checkpoints"
    assert resume_checkpoint(True, run) == ckpts / "step_000002"
    assert resume_checkpoint("1", run) == resume_checkpoint(1, run) == ckpts / "step_000001"
    assert resume_checkpoint(str(ckpts / "step_000001"), tmp_path) == ckpts / "step_000001"
    assert resume_checkpoint(ckpts, tmp_path) == ckpts / "step_000002"  # a checkpoints folder
    assert resume_checkpoint(run, tmp_path) == ckpts / "step_000002"  # a run folder


@pytest.mark.parametrize(
    ("which", "message"),
    [
        (True, "no complete checkpoint under"),
        ("7", r"--resume 7: no complete checkpoint of step 7 .*\(complete steps there: none\)"),
        ("nowhere/step_000003", "--resume nowhere/step_000003: no such folder"),
    ],
)
def test_missing_targets_are_one_line(tmp_path: Path, which: object, message: str) -> None:
    with pytest.raises(FileNotFoundError, match=message) as e:
        resume_checkpoint(which, tmp_path)
    assert "\n" not in str(e.value)


def test_incomplete_step_folder_is_refused(run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "step_000001"
    shutil.copytree(run / "checkpoints" / "step_000001", broken)
    (broken / "state.pt").unlink()
    with pytest.raises(FileNotFoundError, match="an incomplete checkpoint folder"):
        resume_checkpoint(broken, tmp_path)


def test_resume_from_a_step_or_a_folder_repeats_the_run(
    run: Path, tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpts = run / "checkpoints"
    step2 = _weights(ckpts / "step_000002")
    step1 = _weights(ckpts / "step_000001")
    assert not _same(step1, step2)
    # from another run's step folder into a new run folder: the same step 2
    other = tmp_path / "other"
    assert main(_args(other, tiny_weights, "--resume", str(ckpts / "step_000001"))) == 0
    assert _same(_weights(other / "checkpoints" / "step_000002"), step2)
    # from step 1 of the run itself: step 2 written again, the same weights
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(_args(copy, tiny_weights, "--resume", "1")) == 0
    assert _same(_weights(copy / "checkpoints" / "step_000002"), step2)
    # `--resume key=value`: the value is an override and --resume takes the latest
    assert (
        main(
            ["train", "--quiet", "--resume", f"run.out_dir={copy}", *_args(copy, tiny_weights)[3:]]
        )
        == 0
    )
    capsys.readouterr()
    assert main(_args(copy, tiny_weights, "--resume", "5")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resume 5: no complete checkpoint of step 5" in err
    assert "(complete steps there: 1, 2)" in err
