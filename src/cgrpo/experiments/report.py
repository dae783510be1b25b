"""The multi-seed report of ``benchmarks/competitive_degradation.py``: arms (a method
variant each) x seeds of ``cgrpo train`` runs read by :func:`cgrpo.eval.compare.load_run`;
a table, a Pareto scatter with one point per seed, curves with seed bands, markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgrpo.eval.compare import RunResult, pareto_plot, pyplot, same_axes, save_figure
from cgrpo.io.atomic import atomic_write

__all__ = ["ArmResult", "write_experiment_report"]


@dataclass
class ArmResult:
    """One method variant of the experiment: its finished runs (one per seed), read on
    their axes (the x and y rewards, the same for every run)."""

    key: str
    label: str
    runs: list[RunResult]

    @property
    def axes(self) -> tuple[str, str]:
        return same_axes(self.runs)

    def final(self, what: str) -> np.ndarray:
        """Each run's final held-out mean of reward ``what``."""
        return np.array([r.trained[what] for r in self.runs])

    def change(self, what: str) -> np.ndarray:
        """Each run's final change of reward ``what`` from its base."""
        return np.array([r.trained[what] - r.base[what] for r in self.runs])

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, x reward (seeds x steps), y reward) over the steps every seed evaluated
        both axes at (``RunResult.curve``)."""
        x, y = self.axes
        idx = [{s: v for s, v in r.curve if x in v and y in v} for r in self.runs]
        common = sorted(set.intersection(*(set(d) for d in idx)))
        xs = np.array([[d[s][x] for s in common] for d in idx])
        ys = np.array([[d[s][y] for s in common] for d in idx])
        return np.array(common), xs, ys

    def conflict(self, window: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Steps and the share of conflicted samples, mean over seeds, moving average."""
        n = min(len(r.conflict) for r in self.runs)
        share = np.array([[c[1] for c in r.conflict[:n]] for r in self.runs]).mean(0)
        steps = np.array([c[0] for c in self.runs[0].conflict[:n]])
        if n >= window:
            share = np.convolve(share, np.ones(window) / window, mode="valid")
            steps = steps[window - 1 :]
        return steps, share


def _ms(a: np.ndarray, signed: bool = False) -> str:
    """'mean ± std' (std over seeds, ddof 1; only the mean for a single seed)."""
    sd = float(a.std(ddof=1)) if len(a) > 1 else float("nan")
    m = f"{a.mean():+.4f}" if signed else f"{a.mean():.4f}"
    return f"{m} ± {sd:.4f}" if math.isfinite(sd) else m


def _pareto(arms: list[ArmResult], path: Path, base: dict | None) -> None:
    """The Pareto scatter: each arm's mean over seeds (± std) and each seed's point."""
    x, y = same_axes([r for a in arms for r in a.runs])
    pareto_plot(
        [
            (
                a.label,
                float(a.final(x).mean()),
                float(a.final(y).mean()),
                float(a.final(x).std(ddof=1)) if len(a.runs) > 1 else 0.0,
                float(a.final(y).std(ddof=1)) if len(a.runs) > 1 else 0.0,
            )
            for a in arms
        ],
        path,
        (base[x], base[y]) if base else None,
        axes=(x, y),
        seeds={a.label: [(r.trained[x], r.trained[y]) for r in a.runs] for a in arms},
    )


def _curves(arms: list[ArmResult], path: Path) -> None:
    """The held-out curves of both rewards (mean ± std over seeds) and the conflicted share."""
    x, y = same_axes([r for a in arms for r in a.runs])
    fig, axs = pyplot().subplots(1, 3, figsize=(14, 3.8))
    for a in arms:
        steps, xs, ys = a.curve()
        for ax, vals in ((axs[0], xs), (axs[1], ys)):
            m = vals.mean(0)
            (line,) = ax.plot(steps, m, marker=".", label=a.label)
            if len(vals) > 1:
                s = vals.std(0, ddof=1)
                ax.fill_between(steps, m - s, m + s, alpha=0.12, color=line.get_color())
        cs, share = a.conflict()
        axs[2].plot(cs, share, label=a.label)
    axs[0].set_title(f"held-out {x} (mean ± std over seeds)")
    axs[1].set_title(f"held-out {y}")
    axs[2].set_title("share of conflicted samples per step (5-step mean)")
    for ax in axs:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.2)
    axs[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _end_table(arms: list[ArmResult], base: dict | None) -> list[str]:
    """The end-of-training table: each arm's finals and changes (mean ± std over seeds)."""
    x, y = same_axes([r for a in arms for r in a.runs])
    rows = [
        f"| arm | seeds | {x} | {y} | Δ {x} | Δ {y} | conflicted share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if base:
        rows.append(f"| base | | {base[x]:.4f} | {base[y]:.4f} | | | |")
    for a in arms:
        conf = np.array([np.mean([c[1] for c in r.conflict]) for r in a.runs])
        cells = [
            _ms(a.final(x)),
            _ms(a.final(y)),
            _ms(a.change(x), True),
            _ms(a.change(y), True),
            f"{conf.mean():.3f}",
        ]
        rows.append(f"| {a.label} | {len(a.runs)} | " + " | ".join(cells) + " |")
    return rows


def _per_run(arms: list[ArmResult]) -> list[str]:
    """Each run's paired change from base ± its paired SE (none unless every run has it)."""
    x, y = same_axes([r for a in arms for r in a.runs])
    if not all(x in r.paired and y in r.paired for a in arms for r in a.runs):
        return []
    out = [
        "### Each run: paired change from base (same pairs, same noise)",
        "",
        f"| arm | run | Δ {x} ± paired SE | Δ {y} ± paired SE |",
        "|---|---|---:|---:|",
    ]
    for a in arms:
        for r in a.runs:
            (dx, sx), (dy, sy) = r.paired[x], r.paired[y]
            out.append(f"| {a.label} | {r.name} | {dx:+.4f} ± {sx:.4f} | {dy:+.4f} ± {sy:.4f} |")
    return [*out, ""]


def _along(arms: list[ArmResult]) -> list[str]:
    """The held-out curves as a table: x / y at each step, mean over seeds."""
    along = ["| arm | " + " | ".join(f"step {s}" for s in arms[0].curve()[0]) + " |"]
    along.append("|---|" + "---:|" * len(arms[0].curve()[0]))
    for a in arms:
        steps, xs, ys = a.curve()
        cells = [f"{i:.3f} / {p:.3f}" for i, p in zip(xs.mean(0), ys.mean(0), strict=True)]
        along.append(f"| {a.label} | " + " | ".join(cells) + " |")
    return along


def _generated(
    arms: list[ArmResult], doc: Path, command: str, *, evaluation: str, extra: str
) -> str:
    """The generated part of the page: command, runs, tables, figures' links."""
    x, y = same_axes([r for a in arms for r in a.runs])
    base = next((r.base for a in arms for r in a.runs if r.base is not None), None)
    both = [a.label for a in arms if a.change(x).mean() > 0 and a.change(y).mean() > 0]
    steps_run = sorted({r.steps for a in arms for r in a.runs if r.steps is not None})
    n_pairs = next((r.pairs for a in arms for r in a.runs if r.pairs), None)
    evaluation = evaluation or (
        f"Held-out evaluation: {n_pairs or 'all'} pairs of the 8 held-out subjects, "
        "deterministic sampling from fixed noise."
    )
    return "\n".join(
        [
            "<!-- generated -->",
            "## Figures",
            "",
            f"Command: `{command}`",
            "",
            f"Runs: {sum(len(a.runs) for a in arms)} ({len(arms)} arms), "
            f"{', '.join(map(str, steps_run))} steps each. {evaluation} "
            "± is the std over seeds (ddof 1) unless marked paired SE.",
            "",
            "### At the end of training (mean ± std over seeds)",
            "",
            *_end_table(arms, base),
            "",
            "Arms whose mean moved above base on both rewards: "
            + (", ".join(both) if both else "none")
            + ".",
            "",
            *([extra.strip(), ""] if extra.strip() else []),
            *_per_run(arms),
            f"### Along training (held-out {x} / {y}, mean over seeds; step 0 = base)",
            "",
            *_along(arms),
            "",
            f"![Pareto scatter](images/{doc.stem}_pareto.png)",
            "",
            f"![Curves](images/{doc.stem}_curves.png)",
            "",
        ]
    )


def _preamble(doc: Path) -> str:
    """The hand-written part of an existing page, everything above the ``<!-- generated
    -->`` marker (a page without the marker is all hand-written: kept whole, the figures
    follow it); a title for a new page."""
    if not doc.is_file():
        return "# Results: competitive degradation on the embedded world\n\n"
    old = doc.read_text()
    if "<!-- generated -->" in old:
        return old.split("<!-- generated -->")[0]
    return old.rstrip() + "\n\n"


def write_experiment_report(
    arms: list[ArmResult], doc: Path, command: str, *, evaluation: str = "", extra: str = ""
) -> None:
    """``docs/results.md`` from the arms' runs (their axes' two rewards, x and y): table
    (mean ± std over seeds), Pareto scatter, curves, conflicts.

    Figures go to ``<doc folder>/images/<doc stem>_pareto.png`` and ``..._curves.png``
    (``docs/results.md``: ``results_pareto.png``), so two reports in one folder keep their
    own. The text states facts read from the runs (counts, means, which arms beat base on
    both); interpretation is written by hand in the page's preamble, which is kept from an
    existing file (everything above the ``<!-- generated -->`` marker; all of a file
    without one). ``evaluation`` says how the final figures were measured (default: the
    runs' own held-out evaluation); ``extra`` (markdown) follows the end-of-training table.
    """
    images = doc.parent / "images"
    base = next((r.base for a in arms for r in a.runs if r.base is not None), None)
    _pareto(arms, images / f"{doc.stem}_pareto.png", base)
    _curves(arms, images / f"{doc.stem}_curves.png")
    text = _preamble(doc) + _generated(arms, doc, command, evaluation=evaluation, extra=extra)
    atomic_write(doc, lambda tmp: tmp.write_text(text))
