"""What a checkpoint write guarantees when things go wrong: a full disk is one line saying
how much space was needed, and the previous checkpoint is kept with nothing half-written;
what a killed run left (temp files, temp checkpoint folders) is removed when the next run
starts; weights of another LoRA are refused in one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cgrpo.io.checkpoint as ckpt
from cgrpo.cli import main
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config

ARGS = ["run.eval=false", "run.image_every=0", "run.checkpoint_every=1"]


def test_a_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    real = ckpt.save_tensors

    def fill_up(path: Path, tensors: object, *a: object, **k: object) -> Path:
        if "step_000002" in str(path):
            path.write_bytes(b"\0" * 1000)  # a part written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, tensors, *a, **k)

    monkeypatch.setattr(ckpt, "save_tensors", fill_up)
    args = ["train", "--quiet", f"run.out_dir={run}", f"model.weights={tiny_weights}",
            "run.threads=1", "data.prompts_per_step=2", "grpo.group_size=4",
            "sampler.num_steps=3", "run.steps=3", *ARGS]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "checkpoint of step 2 not written" in err and "GB are free" in err
    assert "step_000001) is kept" in err and "--resume" in err
    root = run / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [1]
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_000001"]


def test_leftovers_of_a_killed_run_are_removed_at_start(tmp_path: Path, tiny_weights: Path) -> None:
    run = tmp_path / "run"
    GRPOTrainer(fast_config(run, tiny_weights, "run.steps=1", *ARGS)).train(quiet=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)  # a process id that has ended
    stale_file = run / f".metrics.csv.tmp-{pid}-0123abcd"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = run / "checkpoints" / f".step_000002.tmp-{pid}-89abcdef"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 1000)  # no meta.json: never finished
    live = run / f".other.tmp-{os.getpid()}-00000000"  # a live writer's: kept
    live.write_bytes(b"y")
    again = GRPOTrainer(fast_config(run, tiny_weights, "run.steps=2", *ARGS))
    again.train(resume=True, quiet=True)
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [1, 2]


def test_weights_of_another_lora_are_one_line(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    GRPOTrainer(fast_config(run, tiny_weights, "run.steps=1", *ARGS)).train(quiet=True)
    capsys.readouterr()
    args = ["train", "--quiet", "--resume", "--allow-changes", f"run.out_dir={run}",
            f"model.weights={tiny_weights}", "run.steps=2", "model.lora_rank=2", *ARGS]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another model or LoRA" in err and "config.yaml" in err
