"""Stop signals from the first second of ``cgrpo train``: Ctrl-C does what SIGTERM does
(checkpoint of the last complete step, exit 75, ``--resume`` continues), a second Ctrl-C
stops at once (exit 130, one line); SIGTERM during the base evaluation, or while a judge
request hangs (also when rewards are scored on a worker thread), is answered at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cgrpo.io import checkpoint as ckpt

ARGS = [
    "run.threads=1", "run.checkpoint_every=0", "run.image_every=0", "data.prompts_per_step=2",
    "grpo.group_size=4", "sampler.num_steps=3", "run.log_with=[]",
]  # fmt: skip


def _start(out: Path, weights: Path | None, *extra: str) -> subprocess.Popen:
    """``cgrpo train`` on the tiny model (``weights``) with small steps, or, without
    ``weights``, the embedded default's model and steps."""
    cmd = [sys.executable, "-m", "cgrpo", "train", "--quiet", f"run.out_dir={out}"]
    model = [f"model.weights={weights}", *ARGS] if weights else ["run.threads=1"]
    return subprocess.Popen(
        [*cmd, *model, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def _wait_for(path: Path, lines: int = 0, timeout: float = 240) -> None:
    """Until ``path`` exists (with at least ``lines`` lines)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and (not lines or len(path.read_text().splitlines()) >= lines):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def test_ctrl_c_checkpoints_and_resume_finishes(tmp_path: Path, tiny_weights: Path) -> None:
    run = tmp_path / "r"
    proc = _start(run, tiny_weights, "run.steps=40", "run.eval=false")
    _wait_for(run / "metrics.csv", lines=3)  # two steps done
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 75
    err = proc.stderr.read()
    _no_traceback(err)
    assert "Ctrl-C" in err and "stopped on SIGINT after step" in err and "--resume" in err
    _, state, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    assert 2 <= state["step"] < 40
    done = _start(run, tiny_weights, "run.steps=40", "run.eval=false", "--resume")
    assert done.wait(timeout=300) == 0, done.stderr.read()


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    run = tmp_path / "r"
    # the default model's steps take seconds: the second Ctrl-C comes in the step in flight
    proc = _start(run, None, "run.steps=400", "run.eval=false", "run.log_every=1")
    _wait_for(run / "metrics.csv", lines=2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read()
    _no_traceback(err)
    lines = [x for x in err.splitlines() if x.startswith("cgrpo train:")]
    assert len(lines) == 1 and "second Ctrl-C" in lines[0], err


def test_sigterm_during_the_base_evaluation(tmp_path: Path, tiny_weights: Path) -> None:
    run = tmp_path / "r"
    slow_eval = ["run.eval=true", "run.eval_batch_size=2", "data.eval_prompts_per_subject=64"]
    proc = _start(run, tiny_weights, "run.steps=3", *slow_eval)
    _wait_for(run / "config.yaml")  # the run has started: the base evaluation runs next
    time.sleep(1.0)
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    assert time.time() - start < 20  # abandoned, not finished (it takes minutes)
    err = proc.stderr.read()
    _no_traceback(err)
    assert "stopped on SIGTERM after step 0" in err, err
    assert ckpt.latest_checkpoint(run / "checkpoints") is not None
    assert not (run / "eval.json").exists()  # the abandoned evaluation left no result


class _HangingJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that lists its model and never answers a chat."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(60)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hanging_judge() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HangingJudge)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


@pytest.mark.parametrize("overlap", [False, True])
def test_sigterm_while_a_judge_request_hangs(
    tmp_path: Path, tiny_weights: Path, hanging_judge: str, overlap: bool
) -> None:
    run = tmp_path / "r"
    judge = (f"rewards.judge={{kind: vlm_judge, base_url: '{hanging_judge}', model: m, "
             "timeout: 50, retries: 0, weight: 0.5}")  # fmt: skip
    extra = [f"sampler.overlap_rewards={str(overlap).lower()}", "grpo.micro_batch_size=4"]
    proc = _start(run, tiny_weights, "run.steps=3", "run.eval=false", judge, *extra)
    _wait_for(run / "config.yaml")
    time.sleep(2.0)  # the first step's rollout is done: its scoring waits on the judge
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=45) == 75
    assert time.time() - start < 10, "the hanging request held the stop"
    err = proc.stderr.read()
    _no_traceback(err)
    assert "stopped on SIGTERM after step 0 with a checkpoint" in err, err
    assert ckpt.latest_checkpoint(run / "checkpoints") is not None
