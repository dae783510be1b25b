"""``cgrpo.io.progress_plot``: the held-out progress curve's points and its PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cgrpo.io.progress_plot import first_draw_mean, plot_progress, progress_series


def _summary() -> dict:
    # 2 pairs x 2 draws, pair-major: draw 0 of the pairs are items 0 and 2
    return {
        "truth": {"overall": {"id": 0.9}, "per_image": {"id": [0.9, 0.9, 0.9, 0.9]}},
        "base": {
            "overall": {"id": 0.25},
            "images_per_pair": 2,
            "per_image": {"id": [0.1, 0.3, 0.2, 0.4]},
        },
    }


def test_first_draw_is_every_kth_item() -> None:
    s = _summary()
    assert first_draw_mean(s["base"], "id") == pytest.approx(0.15)  # (0.1 + 0.2) / 2
    assert first_draw_mean({"overall": {"id": 0.3}}, "id") == 0.3  # no per-image scores
    assert first_draw_mean(s["base"], "other") is None


def test_points_are_base_draw0_mid_run_rows_then_trained_draw0() -> None:
    rows = [
        {"step": 1.0, "reward/id/mean": 0.5},  # no evaluation on this step
        {"step": 2.0, "eval/id": 0.3},
        {"step": 4.0, "eval/id": 0.35},
    ]
    s = _summary()
    (mid,) = progress_series(rows, s, ["id"])
    assert mid.steps == [0.0, 2.0, 4.0] and mid.values == pytest.approx([0.15, 0.3, 0.35])
    assert mid.base == pytest.approx(0.15) and mid.truth == 0.9 and mid.final is None
    s["trained"] = {"images_per_pair": 2, "per_image": {"id": [0.5, 0.0, 0.3, 0.0]}}
    s["steps"] = 4
    (end,) = progress_series(rows, s, ["id"], gaps={"id": 0.125})
    # the trained draw-0 mean replaces the mid-run point of the same step (same images)
    assert end.steps == [0.0, 2.0, 4.0] and end.values == pytest.approx([0.15, 0.3, 0.4])
    assert end.final == (4.0, pytest.approx(0.4)) and end.gap == 0.125


def test_plot_is_a_png_with_a_panel_per_reward(tmp_path: Path) -> None:
    s = {**_summary(), "trained": _summary()["base"], "steps": 3}
    series = progress_series([{"step": 3.0, "eval/id": 0.2}], s, ["id", "id"])
    assert plot_progress(tmp_path / "p" / "progress.png", series)
    w, h = Image.open(tmp_path / "p" / "progress.png").size
    assert w > h > 100  # two panels side by side
    assert not plot_progress(tmp_path / "none.png", progress_series([], {}, ["id"]))
    assert not (tmp_path / "none.png").exists()
