"""Two "nodes" of one CPU process each on 127.0.0.1 (gloo): ``accelerate launch`` with the
shipped configs/accelerate/two_node.yaml, ``--machine_rank 0|1``, one launcher per node as
on two machines; and a failure on one process stops every process with one line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cgrpo.world
from cgrpo.io import checkpoint as ckpt
from cgrpo.run.distributed import Dist, ProcessFailed

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Path(cgrpo.world.__file__).parent / "weights" / "base.safetensors"
TWO_NODE = ROOT / "configs" / "accelerate" / "two_node.yaml"
#: ``cgrpo`` with a reward that fails on one process, printing each process's rank and count
WORKER = str(ROOT / "tests" / "dist_cli.py")
#: a short embedded run: 3 pairs x G 4 = 12 samples a step, 6 on each node
FAST = [
    f"model.weights={SHIPPED}", "run.threads=1", "sampler.num_steps=3",
    "data.prompts_per_step=3", "grpo.group_size=4", "run.eval=false", "run.image_every=0",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_nodes(tmp_path: Path, *args: str, timeout: float = 120) -> list[tuple[int, str]]:
    """Both nodes' ``accelerate launch`` (2 processes in all, one each) of ``args``, run at
    once; each node's (exit code, output). Past ``timeout`` s both are killed and the test
    fails: nothing here may wait for a collective timeout."""
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs, logs = [], []
    for rank in (0, 1):
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(TWO_NODE),
            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", port, "--num_processes", "2", "--dynamo_backend", "no",
            *args,
        ]  # fmt: skip
        logs.append(tmp_path / f"node{rank}.log")
        with logs[-1].open("w") as out:
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the launcher and its worker
        tails = "\n".join(f"{log.name}: {log.read_text()[-2000:]}" for log in logs)
        pytest.fail(f"the nodes still ran after {timeout} s:\n{tails}")
    return [(c, log.read_text()) for c, log in zip(codes, logs, strict=True)]


def test_two_nodes_train_the_one_process_weights(tmp_path: Path) -> None:
    """2 steps on two nodes of one process each: the final checkpoint is the one-process
    run's with the same global batch (12 samples a step)."""
    run, one = tmp_path / "nodes", tmp_path / "one"
    train = ["train", "--quiet", "run.steps=2", "run.checkpoint_every=1", *FAST]
    nodes = launch_nodes(tmp_path, WORKER, *train, f"run.out_dir={run}")
    for rank, (code, out) in enumerate(nodes):
        assert code == 0, out[-3000:]
        assert f"dist_cli: process {rank} of 2" in out.splitlines()  # one run, not two
    from cgrpo.cli import main

    assert main([*train, f"run.out_dir={one}"]) == 0
    nodes, state, _ = ckpt.load_checkpoint(run / "checkpoints" / "step_000002")
    single, _, _ = ckpt.load_checkpoint(one / "checkpoints" / "step_000002")
    assert int(state["step"]) == 2 and nodes.keys() == single.keys()
    base, _, _ = ckpt.load_checkpoint(one / "checkpoints" / "step_000001")
    assert any(not torch.equal(base[k], single[k]) for k in single)  # training moved them
    for k in single:
        torch.testing.assert_close(nodes[k], single[k], rtol=1e-3, atol=1e-5)


def test_a_reward_failing_on_one_process_stops_both_with_one_line(tmp_path: Path) -> None:
    """Rank 1's reward raises in step 1: both nodes exit non-zero well before any collective
    timeout, each printing the same line, which names the reward and the rank."""
    t0 = time.monotonic()
    nodes = launch_nodes(
        tmp_path, WORKER, "train", "--quiet", "run.steps=2", *FAST,
        f"run.out_dir={tmp_path / 'run'}", "rewards.prompt={kind: fails_on_rank, rank: 1}",
    )  # fmt: skip
    took = time.monotonic() - t0
    want = (
        "cgrpo train: error: step 1, reward 'prompt': RuntimeError on rank 1 of 2: "
        "scorer crashed on process 1"
    )
    for rank, (code, out) in enumerate(nodes):
        assert code != 0, out[-3000:]
        assert f"dist_cli: process {rank} of 2" in out.splitlines()
        lines = [line for line in out.splitlines() if line.startswith("cgrpo train: error:")]
        assert lines == [want], out[-3000:]
        assert "Traceback" not in out.split(want)[0]  # the worker printed no traceback first
    assert took < 120


class _TwoRanks(Dist):
    """Rank 0 of 2 whose collectives return what the other process would send."""

    def __init__(self, other_failed: bool) -> None:
        super().__init__()
        self.accelerator, self.world = object(), 2
        self.other = ("", "ValueError", "bad score") if other_failed else None

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, torch.tensor([self.other is not None])])

    def gather_objects(self, items: list) -> list:
        return [*items, self.other]


def test_agree_raises_the_first_failing_ranks_line_on_every_rank() -> None:
    assert _TwoRanks(other_failed=False).agree(lambda: 7, "step 3") == 7
    with pytest.raises(ProcessFailed) as ok_here:  # this rank went fine; rank 1 did not
        _TwoRanks(other_failed=True).agree(lambda: 7, "step 3")
    assert str(ok_here.value) == "step 3: ValueError on rank 1 of 2: bad score"

    def fails() -> int:
        e = KeyError("k")
        e.__notes__ = ["reward 'identity'"]
        raise e

    with pytest.raises(ProcessFailed) as both:  # the lowest rank's failure, the rest counted
        _TwoRanks(other_failed=True).agree(fails, "step 3")
    assert str(both.value) == "step 3, reward 'identity': KeyError on rank 0 of 2 (and 1 more): 'k'"
    assert isinstance(both.value.__cause__, KeyError)
    with pytest.raises(KeyError):  # one process: the exception as it is
        Dist().agree(fails, "step 3")


@pytest.mark.parametrize("phase", ["step 1, sampling", "step 1", "step 1, update"])
def test_every_part_of_a_step_is_agreed_on(tmp_path: Path, phase: str) -> None:
    """Sampling, rewards and each loss of the update run under Dist.agree: when the other
    process failed in that part, this one raises its line instead of going on."""
    from cgrpo.train.trainer import GRPOTrainer
    from tests.conftest import fast_config

    parts: list[str] = []

    class OtherFailsIn(Dist):
        def agree(self, fn, what):  # this process's part succeeds, rank 1's does not
            parts.append(what)
            return _TwoRanks(other_failed=what == phase).agree(fn, what)

    trainer = GRPOTrainer(fast_config(tmp_path, SHIPPED, "run.eval=false"), dist=OtherFailsIn())
    with pytest.raises(ProcessFailed, match=f"^{phase}: ValueError on rank 1 of 2: bad score$"):
        trainer.train_step()
    assert parts[-1] == phase and parts[0] == "step 1, sampling"
    assert trainer.step == 0
