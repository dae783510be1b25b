"""``progress.png``: a run's held-out reward against the training step, one panel per
reward, with the base's and the ground truth's values as horizontal lines and the trained
model's final value marked.

**Which images the points are.** The mid-run evaluations (``run.eval_every``, the
``eval/<reward>`` columns of ``metrics.csv``) draw one image per held-out pair; the base
and final evaluations draw ``data.eval_noises`` per pair (``eval.json``). Every image's
noise is seeded by (seed, pair, draw) alone
(:func:`cgrpo.eval.evaluator.image_seed`), so a mid-run evaluation's one image of a pair
*is* draw 0 of the full evaluation. The curve is therefore drawn on draw 0 throughout:
its step-0 point and the base line are the mean of the base's draw-0 images, its last
point the trained model's draw-0 mean (equal to a mid-run evaluation at the last step),
both read from ``eval.json``'s per-image scores. This was chosen over plotting the
all-noise base beside one-noise points (not the same images: the one-noise mean differs
from the all-noise mean by its own noise, ~0.006 here, as large as the changes), and over
evaluating the base once more on one noise (the images exist already: it would cost an
evaluation for numbers ``eval.json`` holds). The truth scores each pair's one
ground-truth image, so its line is the same on any number of draws. The all-noise
figures (gap closed) go into the legend, as ``eval.json`` and the printed table have
them.

:func:`progress_series` gathers the points from the metric rows and the evaluation
summary; :func:`plot_progress` draws them. Written through
:func:`cgrpo.io.atomic.atomic_write`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgrpo.io.atomic import atomic_write

__all__ = ["ProgressSeries", "first_draw_mean", "plot_progress", "progress_series"]


@dataclass
class ProgressSeries:
    """One reward's held-out curve on draw 0 of each pair."""

    name: str
    steps: list[float]  # 0 (the base), each mid-run evaluation, the final step (trained)
    values: list[float]
    base: float | None  # the base's draw-0 mean (the curve's step-0 point)
    truth: float | None  # the ground truth's mean
    final: tuple[float, float] | None = None  # (step, trained draw-0 mean), once trained
    gap: float | None = None  # all-noise share of the gap closed (legend), once trained


def first_draw_mean(result: Mapping[str, Any], name: str) -> float | None:
    """The mean of ``name`` over each pair's draw 0 of an evaluation summary (items are
    pair-major: draw 0 of pair i is item ``i * images_per_pair``); the overall mean when
    it has no per-image scores; None when it lacks ``name``."""
    values = result.get("per_image", {}).get(name)
    if values:
        first = values[:: int(result.get("images_per_pair", 1))]
        return sum(first) / len(first)
    overall = result.get("overall", {}).get(name)
    return None if overall is None else float(overall)


def progress_series(
    rows: Sequence[Mapping[str, float]],
    summary: Mapping[str, Any],
    names: Sequence[str],
    *,
    gaps: Mapping[str, float] | None = None,
) -> list[ProgressSeries]:
    """Each reward's points: the base's draw 0 at step 0, the ``eval/<name>`` of each
    metric row that has it (a later row of the same step wins: a resumed run), and the
    trained model's draw 0 at ``summary["steps"]`` once ``summary`` has ``trained``
    (replacing a mid-run point of that step: the same images). ``summary``: ``eval.json``'s
    dict; ``gaps``: the all-noise gap closed per reward, for the legend."""
    out = []
    for name in names:
        points: dict[float, float] = {}
        base = first_draw_mean(summary["base"], name) if "base" in summary else None
        if base is not None:
            points[0.0] = base
        for r in rows:
            if f"eval/{name}" in r:
                points[float(r["step"])] = float(r[f"eval/{name}"])
        final = None
        trained = first_draw_mean(summary["trained"], name) if "trained" in summary else None
        if trained is not None:
            final = (float(summary.get("steps", max(points, default=0.0))), trained)
            points[final[0]] = trained
        truth = summary.get("truth", {}).get("overall", {}).get(name)
        steps = sorted(points)
        out.append(
            ProgressSeries(
                name=name,
                steps=steps,
                values=[points[s] for s in steps],
                base=base,
                truth=None if truth is None else float(truth),
                final=final,
                gap=(gaps or {}).get(name),
            )
        )
    return out


def plot_progress(path: Path, series: Sequence[ProgressSeries]) -> bool:
    """One panel per reward: the curve, the base and truth lines, the final value marked
    (PNG at ``path``); False (nothing written) when no series has a point."""
    series = [s for s in series if s.steps]
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.4), squeeze=False)
    for ax, s in zip(axes[0], series, strict=True):
        ax.plot(s.steps, s.values, "o-", color="C0", ms=4, label="held-out, 1 noise per pair")
        if s.truth is not None:
            ax.axhline(s.truth, color="C2", ls="--", lw=1.2, label=f"truth {s.truth:.3f}")
        if s.base is not None:
            ax.axhline(s.base, color="0.4", ls=":", lw=1.2, label=f"base {s.base:.3f} (same noise)")
        if s.final is not None:
            gap = "" if s.gap is None else f"\ngap closed {100 * s.gap:+.1f} % on all noises"
            label = f"trained {s.final[1]:.3f} (same noise){gap}"
            ax.plot(*s.final, "*", color="C3", ms=13, label=label)
        ax.set_title(f"held-out {s.name} reward")
        ax.set_xlabel("step")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return True
