"""Table cells of paired figures: a pooled change with its SE, and the per-seed changes,
each starred (*) where it counts (:mod:`cgrpo.experiments.statistics`)."""

from __future__ import annotations

import math

import numpy as np

from cgrpo.experiments.statistics import pooled_sign, seed_stat, sign

__all__ = ["pooled_cell", "seed_cells"]


def pooled_cell(v: tuple[float, ...]) -> str:
    """``+mean ± SE``, starred when a pooled ``(mean, SE, n)`` counts at the t bound
    (:func:`~cgrpo.experiments.statistics.pooled_sign`); ``+mean (1 seed)`` without an SE.
    A ``(mean, SE)`` pair is never starred."""
    if not math.isfinite(v[1]):  # pooled over one seed: no spread to take an SE from
        return f"{v[0]:+.4f} (1 seed)"
    return f"{v[0]:+.4f} ± {v[1]:.4f}" + ("*" if len(v) == 3 and pooled_sign(v) else "")


def seed_cells(d: dict[int, np.ndarray]) -> str:
    """Each seed's mean change (seed -> per-pair differences), starred at >= 2 paired SE."""
    return ", ".join(
        f"{st[0]:+.4f}" + ("*" if sign(*st) else "") for st in map(seed_stat, d.values())
    )
