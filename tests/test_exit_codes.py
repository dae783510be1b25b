"""The exit-code table: README and docs/reliability.md show the one in cgrpo.cli.exit_codes;
each expected error class ends in its code and one line, an unexpected one keeps its
traceback, and --debug / CGRPO_DEBUG shows every traceback."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgrpo.cli import main
from cgrpo.cli.exit_codes import EXIT_CODES, exit_code_of, one_line, table
from cgrpo.config.errors import ConfigError
from cgrpo.io.atomic import CheckpointError
from cgrpo.io.errors import DeviceError, ResourceError, ServiceError
from cgrpo.io.interrupts import StopRequested
from cgrpo.rewards.vlm_judge import VLMJudgeError
from cgrpo.run.distributed import ProcessFailed
from cgrpo.train.errors import TrainingError
from cgrpo.train.preemption import Preempted

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("doc", ["README.md", "docs/reliability.md"])
def test_the_docs_show_the_table(doc: str) -> None:
    assert table() in (ROOT / doc).read_text()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 2), (ValueError("x"), 2), (CheckpointError("x"), 2),
        (FileNotFoundError("x"), 2), (OSError(errno.ENAMETOOLONG, "long", "/a/b"), 2),
        (DeviceError("x"), 3), (ResourceError("x"), 3), (MemoryError(), 3),
        (torch.OutOfMemoryError("x"), 3), (OSError(errno.ENOSPC, "No space", "/a"), 3),
        (ServiceError("x"), 4), (VLMJudgeError("x"), 4), (TrainingError("x"), 5),
        (ProcessFailed("x"), 1), (Preempted(3, 15), 75), (StopRequested(15), 75),
        (KeyboardInterrupt(), 130),
        (RuntimeError("x"), None), (KeyError("x"), None), (OSError("no file named"), None),
    ],
)  # fmt: skip
def test_each_expected_class_has_its_code(exc: BaseException, code: int | None) -> None:
    assert exit_code_of(exc) == code
    assert code is None or code in {r.code for r in EXIT_CODES}


def test_one_line_folds_and_names_the_file() -> None:
    assert one_line(ValueError("a\n  b\n\nc")) == "a b c"
    line = one_line(OSError(errno.ENOSPC, "No space left on device", "/runs/x"))
    assert "'/runs/x'" in line and "free space" in line


def _cgrpo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "cgrpo", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = ["train", "run.steps=-1", f"run.out_dir={tmp_path / 'r'}"]
    plain = _cgrpo(*bad)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("cgrpo train: error: run.steps")
    for run in (_cgrpo("--debug", *bad), _cgrpo(*bad, env={"CGRPO_DEBUG": "1"})):
        assert run.returncode != 0 and "Traceback" in run.stderr and "run.steps" in run.stderr


def test_an_unexpected_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from cgrpo.cli import commands

    def broken(args: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setitem(commands.COMMANDS, "compare", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["compare", "x"])
