"""A run's ``progress.png``: written at each mid-run evaluation and at the end, its points
those of metrics.csv and eval.json, on the same images (draw 0 of each pair)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cgrpo.io.run_log import read_metrics
from cgrpo.train import hooks
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config


def test_progress_plot_points_match_metrics_and_eval_json(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = []
    real = hooks.plot_progress
    monkeypatch.setattr(hooks, "plot_progress", lambda p, s: (drawn.append(s), real(p, s))[1])
    run = tmp_path / "run"
    cfg = fast_config(run, tiny_weights, "data.eval_noises=2", "run.eval_every=1")
    GRPOTrainer(cfg).train(quiet=True)
    assert (run / "progress.png").stat().st_size > 0
    # after the evaluation at step 1, at step 2, and after the trained evaluation
    assert [s[0].steps for s in drawn] == [[0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]
    summary = json.loads((run / "eval.json").read_text())
    rows = read_metrics(run / "metrics.csv")
    mid = {r["step"]: r for r in rows if "eval/identity" in r}
    assert sorted(mid) == [1.0, 2.0]
    for s in drawn[-1]:
        draw0 = {k: summary[k]["per_image"][s.name][::2] for k in ("base", "trained")}
        assert s.values[0] == pytest.approx(sum(draw0["base"]) / len(draw0["base"]))
        assert s.base == s.values[0]
        assert s.values[1] == mid[1.0][f"eval/{s.name}"]
        assert s.truth == summary["truth"]["overall"][s.name]
        # the mid-run evaluation at the last step drew the trained evaluation's draw 0:
        # the two agree (up to eval.json's 6 decimals), so the curve's points compare
        trained = sum(draw0["trained"]) / len(draw0["trained"])
        assert s.final == (2.0, pytest.approx(trained))
        assert mid[2.0][f"eval/{s.name}"] == pytest.approx(trained, abs=1e-6)
        assert s.gap is not None


def test_no_evaluation_no_progress_plot(tmp_path: Path, tiny_weights: Path) -> None:
    run = tmp_path / "run"
    GRPOTrainer(fast_config(run, tiny_weights, "run.eval=false")).train(quiet=True)
    assert (run / "metrics.csv").exists() and not (run / "progress.png").exists()
