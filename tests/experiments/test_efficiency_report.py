"""The learning-efficiency report's figures: a mean over seeds and its SE, a training
curve against seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cgrpo.experiments.efficiency_report import reward_curve, seed_mean


def test_seed_mean_takes_the_spread_over_seeds_or_one_seeds_paired_se() -> None:
    m, se = seed_mean([(0.1, 0.01), (0.3, 0.02), (0.2, 0.5)])
    assert m == pytest.approx(0.2) and se == pytest.approx(0.1 / math.sqrt(3))
    assert seed_mean([(0.1, 0.01)]) == (pytest.approx(0.1), 0.01)


def test_reward_curve_is_a_moving_mean_against_training_seconds() -> None:
    rows = [{"sec_sample": 0.5, "sec_update": 0.5, "r": float(i)} for i in range(5)]
    grid = np.array([0.5, 2.0, 3.0, 5.0, 6.0])
    curve = reward_curve(rows, "r", grid, window=2)  # means 0.5 .. 3.5 at seconds 2 .. 5
    assert np.isnan(curve[[0, 4]]).all()  # before the first full window, after the run
    assert curve[1:4].tolist() == pytest.approx([0.5, 1.5, 3.5])
    assert reward_curve(rows, "missing", grid) is None
