"""Base vs trained: the paired change of each named metric and the table both ``cgrpo
train`` and ``cgrpo eval`` print.

An evaluation summary (:meth:`cgrpo.evaluator.EvalResult.summary`, one per model in
``eval.json`` / ``metrics.json``) holds ``overall`` (metric -> mean), ``overall_std``,
``pairs``, ``images``, ``images_per_pair`` and ``per_image`` (metric -> values in item
order). Two summaries of the same pairs and noise compare image by image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["gap_closed", "paired_difference", "paired_changes", "summary_table"]


def paired_difference(model: Any, base: Any) -> tuple[float, float]:
    """Mean of ``d = model - base`` over the same images, and its standard error
    ``std(d) / sqrt(n)`` (ddof 1). Raises ``ValueError`` unless both hold the same n >= 2
    images. The one paired computation of the project (argument order: new, then old)."""
    a, b = np.asarray(model, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("the two evaluations do not hold the same images")
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def paired_changes(model: dict[str, Any], base: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """:func:`paired_difference` of every metric both summaries hold per image."""
    m, b = model.get("per_image", {}), base.get("per_image", {})
    return {k: paired_difference(m[k], b[k]) for k in m if k in b}


def gap_closed(
    model: dict[str, Any], base: dict[str, Any], truth: dict[str, Any]
) -> dict[str, tuple[float, float]]:
    """Share of the gap to the ground truth closed, per metric all three hold per image::

        g = mean(d) / mean(e),  d = model - base,  e = truth - base   (image by image)
        SE(g) = std(d - g e) / (sqrt(n) |mean(e)|)                     (delta method)

    ``truth`` scores each pair's ground-truth image (repeated for each of its draws)."""
    out = {}
    m, b, t = model.get("per_image", {}), base.get("per_image", {}), truth.get("per_image", {})
    for k in m:
        if k not in b or k not in t:
            continue
        d = np.asarray(m[k], np.float64) - np.asarray(b[k], np.float64)
        e = np.asarray(t[k], np.float64) - np.asarray(b[k], np.float64)
        if d.shape != e.shape or d.size < 2 or e.mean() == 0:
            continue
        g = d.mean() / e.mean()
        out[k] = (float(g), float((d - g * e).std(ddof=1) / (math.sqrt(d.size) * abs(e.mean()))))
    return out


def summary_table(
    base: dict[str, Any] | None,
    model: dict[str, Any] | None,
    label: str = "trained",
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

    def row(label: str, values: list[float], sign: str = "", digits: int = 4) -> str:
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
            lines.append(row("gap closed", [100 * gap[n][0] for n in names], "+", 1))
            lines.append(row("gap SE", [100 * gap[n][1] for n in names], "", 1))
        if all(n in paired for n in names):
            lines.append("(paired SE: standard error of the image-by-image change)")
        if names and all(n in gap for n in names):
            lines.append(
                "(gap closed, %: (trained - base) / (truth - base), image by image; truth: "
                "the renderer's ground-truth image of each pair, scored alike)"
            )
    return "\n".join(lines)
