"""Sweeps: runs in their own processes, a few at a time, each logging to its folder."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest

from cgrpo.experiments.sweep import run_all, run_logged


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
    import threading
    import time

    done: list[int] = []
    running, peak, lock = [0], [0], threading.Lock()

    def call(k: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if k in (1, 3):
            raise SystemExit(f"run {k} failed")
        done.append(k)

    with pytest.raises(SystemExit, match="run 1 failed"):
        run_all([partial(call, k) for k in range(6)], jobs=2)
    assert sorted(done) == [0, 2, 4, 5]  # the others still ran
    assert peak[0] == 2  # never more than jobs at a time


def test_launch_starts_again_a_run_stopped_before_its_first_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    """A run killed before step ``checkpoint_every`` leaves its step-0 held-out evaluation
    (``eval.json``) and no checkpoint: it is trained from the base, not mistaken for a
    restored record (which has a final evaluation and is refused a longer budget)."""
    from cgrpo.experiments import degradation_sweep
    from cgrpo.experiments.degradation import Settings

    settings = Settings(out=tmp_path, steps=4)
    run_dir = settings.run_dir("naive_1_1", 1)
    run_dir.mkdir(parents=True)
    (run_dir / "eval.json").write_text("{}")
    launched: list[str] = []
    monkeypatch.setattr(degradation_sweep, "check_config", lambda *a: None)
    monkeypatch.setattr(degradation_sweep, "run_logged", lambda cmd, d, name: launched.append(name))
    degradation_sweep.launch(settings, "naive_1_1", 1, command=["train"])
    assert launched == ["naive_1_1 seed 1"]
    (run_dir / "eval_final").mkdir()
    (run_dir / "eval_final" / "metrics.json").write_text("{}")  # a restored record of 2 steps
    with pytest.raises(SystemExit, match="cannot be continued to more steps"):
        degradation_sweep.launch(settings, "naive_1_1", 1, command=["train"])
