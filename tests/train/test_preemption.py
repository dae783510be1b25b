"""SIGTERM mid-run: the step in flight finishes, a checkpoint is written, the process exits
with the preemption code, and ``--resume`` ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from cgrpo.io import checkpoint as ckpt
from cgrpo.train.preemption import PREEMPTED_EXIT_CODE, Preemption

ARGS = [
    "run.steps=20", "run.threads=1", "run.checkpoint_every=0", "run.image_every=0",
    "run.eval=false", "data.prompts_per_step=2", "grpo.group_size=4", "sampler.num_steps=3",
    "optim.lr=1e-3", "run.log_with=[]",
]  # fmt: skip


def _train(out: Path, weights: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cgrpo", "train", "--quiet", f"run.out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*cmd, f"model.weights={weights}", *ARGS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def test_preemption_flag_restores_handlers() -> None:
    old = signal.getsignal(signal.SIGTERM)
    with Preemption() as p:
        assert not p.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert p.requested and p.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGTERM) is old


def test_sigterm_then_resume_equals_uninterrupted(tmp_path: Path, tiny_weights: Path) -> None:
    straight = _train(tmp_path / "a", tiny_weights)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    run = tmp_path / "b"
    proc = _train(run, tiny_weights)
    csv = run / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not csv.exists() or len(csv.read_text().splitlines()) < 3):
        time.sleep(0.05)  # two steps done: stop it in the middle of the run
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == PREEMPTED_EXIT_CODE
    err = proc.stderr.read()
    assert "SIGTERM" in err and "--resume" in err
    last = ckpt.latest_checkpoint(run / "checkpoints")
    assert last is not None
    _, state, _ = ckpt.load_checkpoint(last)
    assert 2 <= state["step"] < 20  # stopped mid-run, after a finished step

    resumed = _train(run, tiny_weights, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a, _, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints"))
    b, _, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    rows_b = csv.read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 21
    # same numbers row by row, apart from the timings
    head = rows_a[0].split(",")
    keep = [i for i, k in enumerate(head) if not k.startswith("sec_")]
    assert [[r.split(",")[i] for i in keep] for r in rows_a] == [
        [r.split(",")[i] for i in keep] for r in rows_b
    ]
