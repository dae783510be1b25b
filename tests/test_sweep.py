"""Sweeps: runs in their own processes, a few at a time, each logging to its folder."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest

from cgrpo.sweep import run_all, run_logged


def test_run_logged_appends_output_and_names_the_failed_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "arm" / "seed0"
    code = "import os; print('threads', os.environ['OMP_NUM_THREADS'])"
    run_logged([sys.executable, "-c", code], run, "arm seed 0")
    run_logged([sys.executable, "-c", code], run, "arm seed 0", threads=2)
    assert (run / "train.log").read_text() == "threads 1\nthreads 2\n"  # appended, not replaced
    assert capsys.readouterr().out.count("[done] arm seed 0") == 2
    with pytest.raises(SystemExit, match=r"arm seed 1 failed \(exit 3\): see .*seed1/train.log"):
        run_logged([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "seed1", "arm seed 1")


def test_run_all_runs_every_call_and_raises_the_first_failure(tmp_path: Path) -> None:
    done: list[int] = []

    def call(k: int) -> None:
        if k == 1:
            raise SystemExit("run 1 failed")
        done.append(k)

    with pytest.raises(SystemExit, match="run 1 failed"):
        run_all([partial(call, k) for k in range(4)], jobs=2)
    assert sorted(done) == [0, 2, 3]  # the others still ran
