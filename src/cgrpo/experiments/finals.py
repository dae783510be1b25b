"""The runs' final evaluations image by image: each run's per-image rewards, and the
paired differences of two arms (or an arm and the base) pair by pair, per seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cgrpo.eval.summary import pair_means
from cgrpo.experiments.degradation import REWARDS

__all__ = ["Diffs", "Finals", "differences", "per_image"]

#: arm -> seed -> reward -> per-image final rewards (every seed on the same images)
Finals = dict[str, dict[int, dict[str, np.ndarray]]]
#: reward -> seed -> per-pair mean differences
Diffs = dict[str, dict[int, np.ndarray]]


def per_image(run_dir: Path) -> dict[str, np.ndarray]:
    """The final evaluation's per-image rewards of a run (``eval_final/metrics.json``)."""
    m = json.loads((run_dir / "eval_final" / "metrics.json").read_text())
    return {r: np.asarray(m["per_image"][r], np.float64) for r in REWARDS}


def differences(
    a: dict[int, dict[str, np.ndarray]], b: dict[int, dict[str, np.ndarray]], per_pair: int
) -> Diffs:
    """Per reward, per seed both hold: ``a - b`` image by image, averaged over each pair's
    ``per_pair`` draws (items ``j = i * per_pair + k``): ``d_i = mean_k (a_ik - b_ik)``."""
    seeds = sorted(set(a) & set(b))
    return {r: {k: pair_means(a[k][r] - b[k][r], per_pair) for k in seeds} for r in REWARDS}
