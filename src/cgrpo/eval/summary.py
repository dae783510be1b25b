"""Base vs trained: the paired change of each named metric and the table both ``cgrpo
train`` and ``cgrpo eval`` print.

An evaluation summary (:meth:`cgrpo.eval.evaluator.EvalResult.summary`, one per model in
``eval.json`` / ``metrics.json``) holds ``overall`` (metric -> mean), ``overall_std``,
``pairs``, ``images``, ``images_per_pair`` and ``per_image`` (metric -> values in item
order). Two summaries of the same pairs and noise compare image by image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["gap_closed", "pair_means", "paired_difference", "paired_changes", "summary_table"]


def pair_means(values: Any, per_pair: int) -> np.ndarray:
    """Item ``j = i * per_pair + k`` (draw k of pair i) averaged over each pair's draws."""
    a = np.asarray(values, dtype=np.float64)
    if per_pair < 1 or a.size % per_pair:
        raise ValueError(f"{a.size} images are not whole pairs of {per_pair} draws")
    return a.reshape(-1, per_pair).mean(1)


def paired_difference(model: Any, base: Any, per_pair: int = 1) -> tuple[float, float]:
    """Mean of ``d = model - base`` over the same images, and its standard error.

    The draws of one pair share its reference and prompt, so their changes are correlated:
    the SE is over pairs, ``std(d_i) / sqrt(P)`` (ddof 1), ``d_i`` the mean change over pair
    i's ``per_pair`` draws (items ``j = i * per_pair + k``; 1: every image is its own pair).
    Raises ``ValueError`` unless both hold the same images, at least 2 pairs. The one paired
    computation of the project (argument order: new, then old)."""
    a, b = np.asarray(model, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if a.shape != b.shape or a.size < 2 * per_pair:
        raise ValueError("the two evaluations do not hold the same images")
    d = pair_means(a - b, per_pair)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def _per_pair(*summaries: dict[str, Any]) -> int:
    """The draws per pair the summaries share (``images_per_pair``; 1 when absent)."""
    ks = {int(s.get("images_per_pair") or 1) for s in summaries}
    if len(ks) > 1:
        raise ValueError(f"the evaluations draw {sorted(ks)} images per pair: not the same images")
    return ks.pop()


def paired_changes(model: dict[str, Any], base: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """:func:`paired_difference` of every metric both summaries hold per image (SE over
    pairs, with the summaries' ``images_per_pair``)."""
    m, b = model.get("per_image", {}), base.get("per_image", {})
    k = _per_pair(model, base)
    return {n: paired_difference(m[n], b[n], k) for n in m if n in b}


def gap_closed(
    model: dict[str, Any], base: dict[str, Any], truth: dict[str, Any]
) -> dict[str, tuple[float, float]]:
    """Share of the gap to the ground truth closed, per metric all three hold per image::

        g = mean(d) / mean(e),  d = model - base,  e = truth - base   (image by image)
        SE(g) = std(d_i - g e_i) / (sqrt(P) |mean(e)|)                 (delta method)

    with ``d_i``, ``e_i`` the means over pair i's draws (P pairs; the draws of a pair are
    correlated). ``truth`` scores each pair's ground-truth image (repeated for each of its
    draws)."""
    out = {}
    m, b, t = model.get("per_image", {}), base.get("per_image", {}), truth.get("per_image", {})
    k = _per_pair(model, base)
    for n in m:
        if n not in b or n not in t:
            continue
        d = np.asarray(m[n], np.float64) - np.asarray(b[n], np.float64)
        e = np.asarray(t[n], np.float64) - np.asarray(b[n], np.float64)
        if d.shape != e.shape or d.size < 2 * k or e.mean() == 0:
            continue
        d, e = pair_means(d, k), pair_means(e, k)
        g = d.mean() / e.mean()
        out[n] = (float(g), float((d - g * e).std(ddof=1) / (math.sqrt(d.size) * abs(e.mean()))))
    return out


def summary_table(
    base: dict[str, Any] | None,
    model: dict[str, Any] | None,
    label: str = "trained",
    *,
    truth: dict[str, Any] | None = None,
) -> str:
    """The base-vs-model table: a column per metric; rows base, model, change, paired SE,
    and with ``truth`` (the ground truth's scores) truth, gap closed and its SE."""
    if not model:
        return "(no evaluation)"
    names = list(model["overall"])
    pairs, images = model.get("pairs", 0), model.get("images", 0)
    what = (
        f"{pairs} pairs" if images == pairs else f"{pairs} pairs x {images // max(pairs, 1)} noises"
    )
    width = max(10, *(len(n) + 1 for n in names))
    head = f"{'':10s} " + " ".join(f"{n:>{width}s}" for n in names)

    def row(label: str, values: list[float], sign: str = "", *, digits: int = 4) -> str:
        return f"{label:10s} " + " ".join(f"{v:{sign}{width}.{digits}f}" for v in values)

    lines = [f"Held-out evaluation ({what}, deterministic sampling, same noise):", head]
    if base:
        lines.append(row("base", [base["overall"][n] for n in names]))
    lines.append(row(label, [model["overall"][n] for n in names]))
    if truth and all(n in truth["overall"] for n in names):
        lines.append(row("truth", [truth["overall"][n] for n in names]))
    if base:
        lines.append(row("change", [model["overall"][n] - base["overall"][n] for n in names], "+"))
        paired = paired_changes(model, base)
        if all(n in paired for n in names):
            lines.append(row("paired SE", [paired[n][1] for n in names]))
        gap = gap_closed(model, base, truth) if truth else {}
        if names and all(n in gap for n in names):
            lines.append(row("gap closed", [100 * gap[n][0] for n in names], "+", digits=1))
            lines.append(row("gap SE", [100 * gap[n][1] for n in names], "", digits=1))
        if all(n in paired for n in names):
            lines.append(
                "(paired SE: standard error of the image-by-image change, over pairs: a "
                "pair's draws are correlated)"
            )
        if names and all(n in gap for n in names):
            lines.append(
                "(gap closed, %: (trained - base) / (truth - base), image by image; truth: "
                "the renderer's ground-truth image of each pair, scored alike)"
            )
    return "\n".join(lines)
