"""A bad input the user fixes is one line on stderr and exit code 2, not a traceback: a
corrupt checkpoint under cgrpo eval / sample / train --resume; a judge server that cannot
be reached is one line and exit code 4."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cgrpo.cli import main
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config


def one_line_error(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str, code: int = 2
) -> str:
    capsys.readouterr()
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    return err


def test_a_corrupt_checkpoint_is_one_line_everywhere(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cfg = fast_config(run, tiny_weights, "run.steps=1", "run.eval=false")
    GRPOTrainer(cfg).train(quiet=True)
    step = run / "checkpoints" / "step_000001"
    model = step / "model.safetensors"
    model.write_bytes(b"\xff" * model.stat().st_size)  # same size: passes the completeness check
    args = [["eval", "--run", str(run), f"out_dir={tmp_path / 'eval'}", "--quiet"],
            ["sample", "--run", str(run), "--reference", "red-hstripes-circle",
             "--prompt", "a circle on a sky background", "--out", str(tmp_path / "s.png")],
            ["train", "--resume", "--allow-changes", f"run.out_dir={run}",
             f"model.weights={tiny_weights}", "run.steps=2", "--quiet"]]  # fmt: skip
    for a in args:
        one_line_error(capsys, a, str(model))


def test_an_unreachable_judge_is_one_line(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = (f"rewards.judge={{kind: vlm_judge, base_url: 'http://127.0.0.1:{port}/v1', "
             "model: m, retries: 0, timeout: 2}")  # fmt: skip
    args = ["train", f"model.weights={tiny_weights}", f"run.out_dir={tmp_path / 'r'}",
            "run.steps=1", "--quiet", judge]  # fmt: skip
    one_line_error(capsys, args, f"127.0.0.1:{port}", code=4)
