"""The learning-efficiency report: per arm, the share of the gap to the truth closed and
the paired change of each reward (per seed and the mean over seeds), the steps taken, the
seconds per step by phase, and training reward against training seconds (PNG)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from cgrpo.experiments.efficiency import LABELS, REWARDS, TITLE
from cgrpo.io.atomic import atomic_write

__all__ = ["arm_figures", "reward_curve", "seed_mean", "write_report"]


def _phases() -> tuple[str, ...]:
    """The timed phases of a training step (``metrics.csv``'s ``sec_<phase>``)."""
    from cgrpo.train.trainer import PHASES

    return PHASES


def _rows(run_dir: Path) -> list[dict[str, float]]:
    """The run's ``metrics.csv``, one dict per step (empty cells left out)."""
    with open(run_dir / "metrics.csv") as f:
        return [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]


def arm_figures(arm: str, dirs: list[Path], *, base: dict, truth: dict) -> dict:
    """``{"arm", "seeds"}``: per run folder in ``dirs`` its gap closed and paired change
    (against the base and truth summaries), steps, mean seconds per phase, logged rows."""
    from cgrpo.eval.summary import gap_closed, paired_changes

    phases, seeds = _phases(), []
    for d in dirs:
        model = json.loads((d / "eval_final" / "metrics.json").read_text())
        rows = _rows(d)
        seeds.append({
            "gap": gap_closed(model, base, truth),
            "change": paired_changes(model, base),
            "steps": len(rows),
            "sec": {p: float(np.mean([r.get(f"sec_{p}", 0.0) for r in rows])) for p in phases},
            "rows": rows,
        })  # fmt: skip
    return {"arm": arm, "seeds": seeds}


def reward_curve(
    rows: list[dict[str, float]], key: str, grid: np.ndarray, *, window: int = 10
) -> np.ndarray | None:
    """Column ``key`` as a moving mean of ``window`` steps, on ``grid`` (training seconds,
    the cumulative sum of each step's phases; nan outside the run); None without values."""
    phases = _phases()
    t = np.cumsum([sum(r.get(f"sec_{p}", 0.0) for p in phases) for r in rows])
    y = np.array([r.get(key, np.nan) for r in rows])
    if np.isnan(y).all() or len(y) < 2:
        return None
    k = min(window, len(y))
    smooth = np.convolve(y, np.ones(k) / k, mode="valid")
    return np.interp(grid, t[k - 1 :], smooth, left=np.nan, right=np.nan)


def plot(figs: list[dict], path: Path, budget: float) -> None:
    """Training reward vs training seconds, per reward, the seed mean of each arm."""
    from cgrpo.eval.compare import pyplot, save_figure

    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
    grid = np.linspace(0, budget, 200)
    for f in figs:
        if f["arm"] == "supervised":
            continue
        for ax, r in zip(axes, REWARDS, strict=True):
            curves = [reward_curve(s["rows"], f"reward/{r}/mean", grid) for s in f["seeds"]]
            curves = [c for c in curves if c is not None]
            if curves:
                ax.plot(grid, np.nanmean(np.stack(curves), 0), label=LABELS[f["arm"]])
    for ax, r in zip(axes, REWARDS, strict=True):
        ax.set_xlabel("training seconds (rollout + reward + update)")
        ax.set_ylabel(f"training reward: {r} (moving mean of 10 steps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _pct(g: tuple[float, float]) -> str:
    return f"{100 * g[0]:+.1f} ± {100 * g[1]:.1f} %"


def seed_mean(vals: list[tuple[float, float]]) -> tuple[float, float]:
    """The mean over seeds of ``(value, paired SE)`` pairs and its SE: over several seeds
    ``std_s(value) / sqrt(n)`` (ddof 1: training, data and noise all vary); one seed: its
    paired SE (evaluation noise only)."""
    means = [v[0] for v in vals]
    m = float(np.mean(means))
    if len(vals) > 1:
        return m, float(np.std(means, ddof=1) / math.sqrt(len(vals)))
    return m, vals[0][1]


def _arm_rows(figs: list[dict]) -> list[str]:
    """The table of arms: seeds, steps, seconds per phase, changes, gaps closed."""
    phases, lines = _phases(), []
    for f in figs:
        ss = f["seeds"]
        sec = " / ".join(f"{np.mean([s['sec'][p] for s in ss]):.2f}" for p in phases)
        cells = []
        for what in ("change", "gap"):
            for r in REWARDS:
                m, se = seed_mean([s[what][r] for s in ss if r in s[what]])
                cells.append(_pct((m, se)) if what == "gap" else f"{m:+.4f} ± {se:.4f}")
        steps = f"{np.mean([s['steps'] for s in ss]):.0f}"
        lines.append(
            f"| {LABELS[f['arm']]} | {len(ss)} | {steps} | {sec} | " + " | ".join(cells) + " |"
        )
    return lines


def _seed_rows(figs: list[dict]) -> list[str]:
    """The table of runs: each seed's steps and gaps closed with its paired SE."""
    lines = []
    for f in figs:
        for k, s in enumerate(f["seeds"]):
            g = [_pct(s["gap"][r]) if r in s["gap"] else "-" for r in REWARDS]
            lines.append(f"| {LABELS[f['arm']]} | {k} | {s['steps']} | {g[0]} | {g[1]} |")
    return lines


def write_report(
    figs: list[dict],
    doc: Path,
    command: str,
    *,
    base: dict,
    truth: dict,
    budget: float,
    eval_images: int,
    notes: str = "",
    title: str = TITLE,
) -> None:
    """``doc`` (and its figure, ``images/<doc stem>.png``) from the arms' figures
    (:func:`arm_figures`), the base and truth summaries, the run budget, the evaluation's
    noises per pair; ``notes`` (the reading) last."""
    img = doc.parent / "images" / f"{doc.stem}.png"  # learning_efficiency.png for the default doc
    plot(figs, img, budget)
    b, t = base["overall"], truth["overall"]
    lines = [
        f"# {title}",
        "",
        "Written by `benchmarks/learning_efficiency.py` from the runs it trained:",
        "",
        f"    {command}",
        "",
        f"Budget: {budget:.0f} s of rollout + reward + update per run, one thread each "
        "(evaluation not counted). Everything else is the embedded default (SARS + TDW). "
        f"Final figures: `cgrpo eval` of each run's last checkpoint on 256 held-out pairs x "
        f"{eval_images} noises, image by image against the base model on the same noise. "
        "The gap closed is `(trained - base) / (truth - base)`, with the truth the "
        "renderer's image of each pair; its SE is paired (delta method).",
        "",
        f"Base: identity {b['identity']:.4f}, prompt {b['prompt']:.4f}; "
        f"truth: identity {t['identity']:.4f}, prompt {t['prompt']:.4f}.",
        "",
        "| arm | seeds | steps | s/step sample / reward / update | identity change | "
        "prompt change | gap closed identity | gap closed prompt |",
        "|---|---|---|---|---|---|---|---|",
        *_arm_rows(figs),
        "",
        "Mean over seeds; the ± is the standard error of that mean across seeds (it holds the "
        "seed-to-seed spread of training, not only the evaluation noise; with one seed, the "
        "paired SE). Per seed, with each seed's paired SE:",
        "",
        "| arm | seed | steps | gap closed identity | gap closed prompt |",
        "|---|---|---|---|---|",
        *_seed_rows(figs),
        "",
        f"![training reward vs training seconds](images/{img.name})",
        "",
        "The curves are the training rollouts' mean rewards (moving mean of 10 steps, mean over "
        "seeds) against the training seconds spent: `nft` with `sample_old` draws them with its "
        "old policy.",
        "",
    ]
    if notes:
        lines += [notes.rstrip(), ""]
    text = "\n".join(lines)
    atomic_write(doc, lambda tmp: tmp.write_text(text))
