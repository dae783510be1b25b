"""Two CPU processes (gloo) through ``accelerate launch``: the same step as one process.

A step's 3 pairs x G 4 = 12 samples split 6 / 6, so the middle group straddles the two
processes; its advantages can only be right if the rewards are gathered with group ids.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import fast_config
from tests.dist_worker import one_step

import cgrpo.world
from cgrpo import checkpoint as ckpt
from cgrpo.trainer import GRPOTrainer

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = Path(cgrpo.world.__file__).parent / "weights" / "base.safetensors"
STEP = ["data.prompts_per_step=3", "grpo.group_size=4", "run.eval=false", "run.image_every=0"]


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` on ``processes`` CPU processes; fails the test with its output.

    accelerate's ``--cpu`` multi-process launcher goes through MPI; ``--multi_gpu`` is its
    torchrun launcher, and with ``model.device=cpu`` the trainer asks accelerate for CPU
    processes (``Accelerator(cpu=True)``: MULTI_CPU, gloo).
    """
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_processes_give_the_one_process_step(tmp_path: Path) -> None:
    launch(str(ROOT / "tests" / "dist_worker.py"), str(tmp_path), str(SHIPPED), *STEP)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = one_step(GRPOTrainer(fast_config(tmp_path / "one", SHIPPED, *STEP)))

    assert [int(r["world"]) for r in ranks] == [2, 2] and int(single["world"]) == 1
    assert [r["shard"].tolist() for r in ranks] == [[0, 6], [6, 12]]
    assert single["group_ids"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for r in ranks:  # every process holds the whole step, in the one-process order
        assert torch.equal(r["group_ids"], single["group_ids"])
        for k in ("r_id", "r_p", "a_id", "a_p"):
            torch.testing.assert_close(r[k], single[k], rtol=1e-4, atol=1e-5)
    assert single["r_id"].std() > 0 and single["a_id"].abs().max() > 0.5  # not a trivial step
    assert single["grad"].abs().max() > 0
    # DDP averaged the two halves' gradients into the one-process gradient
    torch.testing.assert_close(ranks[0]["grad"], ranks[1]["grad"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["grad"], single["grad"], rtol=1e-3, atol=1e-6)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_cli_run_on_two_processes_resumes_on_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [
        f"model.weights={SHIPPED}", "run.threads=1", "data.eval_prompts_per_subject=1",
        "sampler.num_steps=3", "run.checkpoint_every=1", "run.image_every=1", *STEP[:2],
    ]  # fmt: skip
    launch("-m", "cgrpo", "train", "--quiet", f"run.out_dir={run}", "run.steps=2", *common)
    assert [r["step"] for r in _rows(run)] == ["1.0", "2.0"]  # one writer, no duplicate rows
    two = ckpt.latest_checkpoint(run / "checkpoints")
    assert two is not None and two.name == "step_000002"
    assert (run / "eval.json").is_file() and (run / "images" / "step_000001.png").is_file()

    # the checkpoint of 2 processes continues on 1
    from cgrpo.cli import main

    assert main(["train", "--resume", "--quiet", f"run.out_dir={run}", "run.steps=3", *common]) == 0
    assert [r["step"] for r in _rows(run)] == ["1.0", "2.0", "3.0"]
    three = ckpt.latest_checkpoint(run / "checkpoints")
    assert three is not None and three.name == "step_000003"
    before, _, _ = ckpt.load_checkpoint(two)
    after, state, _ = ckpt.load_checkpoint(three)
    assert int(state["step"]) == 3
    assert any(not torch.equal(before[k], after[k]) for k in before)
