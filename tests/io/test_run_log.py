"""``cgrpo.io.run_log``: metrics.csv appends, resume truncation, trackers, plots, grids."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cgrpo.io import run_log
from cgrpo.io.run_log import MetricsLog, plot_curves, read_metrics, save_grid


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_rows_are_appended_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: the whole CSV was rewritten on every row (quadratic in a long run)."""
    log = MetricsLog(tmp_path, log_with=())
    rewrites = []
    real = run_log.atomic_write
    monkeypatch.setattr(run_log, "atomic_write", lambda p, f: (rewrites.append(p), real(p, f)))
    log.log({"step": 1.0, "a": 0.5})
    for s in range(2, 50):
        log.log({"step": float(s), "a": s / 100})
    assert len(rewrites) == 1  # the first row writes the header; the others append
    log.log({"step": 50.0, "a": 0.1, "eval/x": 0.7})  # a new column: one rewrite
    assert len(rewrites) == 2
    log.log({"step": 51.0, "a": 0.2})
    assert len(rewrites) == 2
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == [float(s) for s in range(1, 52)]
    assert rows[49]["eval/x"] == 0.7 and "eval/x" not in rows[50]
    with (tmp_path / "metrics.csv").open() as f:
        assert next(csv.reader(f)) == ["step", "a", "eval/x"]


def test_resume_drops_rows_after_the_checkpoint_and_appends(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, log_with=())
    for s in range(1, 6):
        log.log({"step": float(s), "a": float(s)})
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("6,0.")  # a line cut by a crash
    again = MetricsLog(tmp_path, resume_step=3, log_with=())
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == [1.0, 2.0, 3.0]
    again.log({"step": 4.0, "a": 40.0})
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["step"], r["a"]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 40)]
    assert len(_lines(tmp_path / "metrics.csv")) == 5


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, write=False)
    log.log({"step": 1.0, "a": 1.0})
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "tensorboard").exists()


def test_tensorboard_through_accelerate(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, log_with=["tensorboard"])
    for s in (1, 2):
        log.log({"step": float(s), "reward/identity/mean": 0.1 * s})
    log.close()
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    values = [(e.step, round(e.value, 6)) for e in acc.Scalars("reward/identity/mean")]
    assert values == [(1, 0.1), (2, 0.2)]


def test_curves_and_grid(tmp_path: Path) -> None:
    rows = [
        {"step": float(s), "reward/a/mean": s, "reward/a/std": 0.1, "reward/b/mean": -s,
         "reward/b/std": 0.2, "reward/c/mean": 1.0, "share/synergy": 0.5, "share/conflict": 0.3,
         "share/joint_failure": 0.2}
        for s in range(1, 4)
    ]  # fmt: skip
    plot_curves(rows, tmp_path / "curves.png", ["a", "b", "c"])
    assert (tmp_path / "curves.png").stat().st_size > 1000
    refs = torch.rand(4, 3, 8, 8)
    save_grid(tmp_path / "grid.png", refs, torch.rand(4, 3, 8, 8), group_size=2)
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == ((8 * 3 + 2) * 32, 8 * 2 * 32)  # 2 rows of ref + gap + 2 samples
