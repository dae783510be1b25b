"""``cgrpo compare``: runs side by side, and the paper's picture.

The paper's claim is a scatter: identity on x, prompt following on y, one point per
method, the base model marked. Naive GRPO moves along one axis at the cost of the other
(*competitive degradation*); Customized-GRPO moves up and to the right.

A *run* here is any folder this project writes:

- a ``cgrpo train`` run folder: ``eval.json`` (held-out ``base`` and ``trained``),
  ``metrics.csv`` (held-out ``eval_identity`` / ``eval_prompt`` every
  ``run.eval_every`` steps; ``share_conflict`` every step);
- a ``cgrpo eval`` folder: ``metrics.json`` (its ``identity_column`` /
  ``prompt_column`` give the axes, ``base`` the base model's figures when evaluated).

Functions here are plain: :func:`load_run` reads a folder, :func:`compare_table` and
:func:`pareto_plot` render, :func:`write_experiment_report` writes the multi-seed report
of ``benchmarks/competitive_degradation.py``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cgrpo.checkpoint import atomic_write

__all__ = [
    "ArmResult",
    "RunResult",
    "compare_command",
    "compare_table",
    "load_run",
    "paired_change",
    "paired_difference",
    "pareto_plot",
    "write_experiment_report",
]


@dataclass
class RunResult:
    """What a run folder says about identity (x) and prompt following (y)."""

    name: str
    path: Path
    trained: dict[str, float] | None  # {"identity": .., "prompt": ..} at the end
    base: dict[str, float] | None = None
    steps: int | None = None
    # (step, identity, prompt) of held-out evaluations along training; step 0 = base
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    conflict: list[tuple[int, float]] = field(default_factory=list)  # (step, share)
    axes: tuple[str, str] = ("identity", "prompt")  # what x and y measure
    # per-image paired change from base: {"identity": (mean, standard error), ...}
    paired: dict[str, tuple[float, float]] = field(default_factory=dict)


def _read_csv(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]


def _point(d: dict[str, Any], x: str, y: str) -> dict[str, float]:
    return {"identity": float(d[x]), "prompt": float(d[y])}


def load_run(path: str | Path, name: str | None = None) -> RunResult:
    """Read a ``cgrpo train`` run folder or a ``cgrpo eval`` folder.

    Raises ``FileNotFoundError`` naming the folder when it holds neither ``eval.json``
    nor ``metrics.json``.
    """
    path = Path(path)
    name = name or (path.name if not path.name.startswith("seed") else path.parent.name)
    ev, mj = path / "eval.json", path / "metrics.json"
    if mj.is_file():
        m = json.loads(mj.read_text())
        x, y = m["identity_column"], m["prompt_column"]
        base = _point(m["base"], x, y) if m.get("base") else None
        return RunResult(name, path, _point(m["overall"], x, y), base, axes=(x, y))
    if not ev.is_file():
        raise FileNotFoundError(
            f"{path} is not a run: it has neither eval.json (cgrpo train) nor metrics.json "
            "(cgrpo eval); pass run folders written by those commands"
        )
    summary = json.loads(ev.read_text())
    base = _point(summary["base"], "identity", "prompt") if "base" in summary else None
    trained = _point(summary["trained"], "identity", "prompt") if "trained" in summary else None
    run = RunResult(name, path, trained, base, summary.get("steps"))
    if all("per_image" in summary.get(k, {}) for k in ("base", "trained")):
        b, t = summary["base"]["per_image"], summary["trained"]["per_image"]
        run.paired = {k: paired_difference(t[k], b[k]) for k in ("identity", "prompt")}
    if (path / "metrics.csv").is_file():
        rows = _read_csv(path / "metrics.csv")
        if base is not None:
            run.curve.append((0, base["identity"], base["prompt"]))
        run.curve += [
            (int(r["step"]), r["eval_identity"], r["eval_prompt"])
            for r in rows
            if "eval_identity" in r
        ]
        run.conflict = [
            (int(r["step"]), r["share_conflict"]) for r in rows if "share_conflict" in r
        ]
    return run


def paired_difference(model: Any, base: Any) -> tuple[float, float]:
    """Mean of ``d = model - base`` over the same images, and its standard error
    ``std(d) / sqrt(n)`` (ddof 1). Raises ``ValueError`` unless both hold the same n >= 2
    images."""
    a, b = np.asarray(model, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("the two evaluations do not hold the same images")
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def paired_change(
    model_csv: Path, base_csv: Path, columns: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    """Mean per-image change from base and its standard error, per column.

    Both files are ``cgrpo eval`` ``metrics.csv`` of the same protocol and seed: row by
    row the same (subject, prompt, sample) and the same initial noise, so the difference
    is paired and its standard error ``std(d) / sqrt(n)`` is much smaller than that of
    either mean (the noise draw dominates the variance of a single image).
    """

    def rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
        with path.open() as f:
            return {(r["subject"], r["prompt_index"], r["sample"]): r for r in csv.DictReader(f)}

    a, b = rows(model_csv), rows(base_csv)
    if set(a) != set(b):
        raise ValueError(f"{model_csv} and {base_csv} hold different images; evaluate alike")
    return {
        c: paired_difference([float(a[k][c]) for k in a], [float(b[k][c]) for k in a])
        for c in columns
    }


def compare_table(runs: list[RunResult]) -> str:
    """Markdown table: base and each run's identity / prompt, and the change from base
    (± its paired standard error where the run kept per-image rewards)."""
    x, y = runs[0].axes if runs else ("identity", "prompt")
    lines = [
        f"| run | {x} | {y} | change {x} | change {y} |",
        "|---|---:|---:|---:|---:|",
    ]
    base = next((r.base for r in runs if r.base is not None), None)
    if base is not None:
        lines.append(f"| base | {base['identity']:.4f} | {base['prompt']:.4f} | | |")
    for r in runs:
        if r.trained is None:
            lines.append(f"| {r.name} | (unfinished) | | | |")
            continue
        b = r.base or base
        d = (
            tuple(
                f"{r.trained[k] - b[k]:+.4f}"
                + (f" ± {r.paired[k][1]:.4f}" if k in r.paired else "")
                for k in ("identity", "prompt")
            )
            if b
            else ("", "")
        )
        lines.append(
            f"| {r.name} | {r.trained['identity']:.4f} | {r.trained['prompt']:.4f} "
            f"| {d[0]} | {d[1]} |"
        )
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    _plt().close(fig)


def pareto_plot(
    points: list[tuple[str, float, float, float, float]],
    path: Path,
    base: tuple[float, float] | None = None,
    axes: tuple[str, str] = ("identity", "prompt"),
    seeds: dict[str, list[tuple[float, float]]] | None = None,
) -> None:
    """Scatter of identity (x) vs prompt (y): ``points`` are (label, x, y, x_err, y_err).

    ``base`` is drawn as a black star with dashed lines through it (the quadrant up and to
    the right of it is "both better"); ``seeds`` adds each label's single runs, faint.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    if base is not None:
        ax.axvline(base[0], color="0.6", ls="--", lw=0.8)
        ax.axhline(base[1], color="0.6", ls="--", lw=0.8)
        ax.plot(*base, marker="*", ms=15, color="black", ls="", label="base", zorder=5)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, x, y, xe, ye) in enumerate(points):
        c = colors[i % len(colors)]
        for sx, sy in (seeds or {}).get(label, []):
            ax.plot(sx, sy, "o", color=c, alpha=0.3, ms=4)
        ax.errorbar(x, y, xerr=xe or None, yerr=ye or None, fmt="o", ms=8, color=c, label=label)
    ax.set_xlabel(f"{axes[0]} (held-out mean)")
    ax.set_ylabel(f"{axes[1]} (held-out mean)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.2)
    _save(fig, path)


def compare_command(paths: list[Path], out: Path) -> str:
    """Table + scatter of the given runs into ``out`` (compare.md, compare.png)."""
    runs = [load_run(p, name=str(p)) for p in paths]
    done = [r for r in runs if r.trained is not None]
    if not done:
        raise ValueError("none of the runs has a finished evaluation (eval.json 'trained')")
    axes = {r.axes for r in done}
    if len(axes) > 1:
        raise ValueError(
            f"the runs measure different things ({sorted(axes)}); compare like with like"
        )
    base = next((r.base for r in done if r.base is not None), None)
    pareto_plot(
        [(r.name, r.trained["identity"], r.trained["prompt"], 0.0, 0.0) for r in done],
        out / "compare.png",
        (base["identity"], base["prompt"]) if base else None,
        done[0].axes,
    )
    table = compare_table(runs)
    text = f"# Run comparison\n\n{table}\n\n![identity vs prompt](compare.png)\n"
    atomic_write(out / "compare.md", lambda tmp: tmp.write_text(text))
    return table


# ----------------------------------------------------------------------------- experiment


@dataclass
class ArmResult:
    """One method variant of the experiment: its finished runs (one per seed)."""

    key: str
    label: str
    runs: list[RunResult]

    def final(self, what: str) -> np.ndarray:
        return np.array([r.trained[what] for r in self.runs])

    def change(self, what: str) -> np.ndarray:
        return np.array([r.trained[what] - r.base[what] for r in self.runs])

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, identity (seeds x steps), prompt) over the steps all seeds evaluated."""
        common = sorted(set.intersection(*({c[0] for c in r.curve} for r in self.runs)))
        idx = [{c[0]: c for c in r.curve} for r in self.runs]
        ids = np.array([[d[s][1] for s in common] for d in idx])
        ps = np.array([[d[s][2] for s in common] for d in idx])
        return np.array(common), ids, ps

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


def write_experiment_report(
    arms: list[ArmResult], doc: Path, command: str, evaluation: str = ""
) -> None:
    """``docs/results.md``: table (mean ± std over seeds), Pareto scatter, curves, conflicts.

    Figures go to ``<doc folder>/images/results_*.png``. The text states facts read from
    the runs (counts, means, which arms beat base on both); interpretation is written by
    hand in the page's preamble, which is kept from an existing file (everything above
    the ``<!-- generated -->`` marker). ``evaluation`` says how the final figures were
    measured (default: the runs' own held-out evaluation).
    """
    images = doc.parent / "images"
    base = next((r.base for a in arms for r in a.runs if r.base is not None), None)
    plt = _plt()

    pareto_plot(
        [
            (
                a.label,
                float(a.final("identity").mean()),
                float(a.final("prompt").mean()),
                float(a.final("identity").std(ddof=1)) if len(a.runs) > 1 else 0.0,
                float(a.final("prompt").std(ddof=1)) if len(a.runs) > 1 else 0.0,
            )
            for a in arms
        ],
        images / "results_pareto.png",
        (base["identity"], base["prompt"]) if base else None,
        seeds={
            a.label: [(r.trained["identity"], r.trained["prompt"]) for r in a.runs] for a in arms
        },
    )

    fig, axs = plt.subplots(1, 3, figsize=(14, 3.8))
    for a in arms:
        steps, ids, ps = a.curve()
        for ax, vals in ((axs[0], ids), (axs[1], ps)):
            m = vals.mean(0)
            (line,) = ax.plot(steps, m, marker=".", label=a.label)
            if len(vals) > 1:
                s = vals.std(0, ddof=1)
                ax.fill_between(steps, m - s, m + s, alpha=0.12, color=line.get_color())
        cs, share = a.conflict()
        axs[2].plot(cs, share, label=a.label)
    axs[0].set_title("held-out identity (mean ± std over seeds)")
    axs[1].set_title("held-out prompt following")
    axs[2].set_title("share of conflicted samples per step (5-step mean)")
    for ax in axs:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.2)
    axs[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, images / "results_curves.png")

    rows = [
        "| arm | seeds | identity | prompt | Δ identity | Δ prompt | conflicted share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if base:
        rows.append(f"| base | | {base['identity']:.4f} | {base['prompt']:.4f} | | | |")
    for a in arms:
        conf = np.array([np.mean([c[1] for c in r.conflict]) for r in a.runs])
        cells = [
            _ms(a.final("identity")),
            _ms(a.final("prompt")),
            _ms(a.change("identity"), True),
            _ms(a.change("prompt"), True),
            f"{conf.mean():.3f}",
        ]
        rows.append(f"| {a.label} | {len(a.runs)} | " + " | ".join(cells) + " |")
    per_run = []
    if all(r.paired for a in arms for r in a.runs):
        per_run = [
            "| arm | run | Δ identity ± paired SE | Δ prompt ± paired SE |",
            "|---|---|---:|---:|",
        ]
        for a in arms:
            for r in a.runs:
                (di, si), (dp, sp) = r.paired["identity"], r.paired["prompt"]
                per_run.append(
                    f"| {a.label} | {r.name} | {di:+.4f} ± {si:.4f} | {dp:+.4f} ± {sp:.4f} |"
                )
        per_run = [
            "### Each run: paired change from base (same pairs, same noise)",
            "",
            *per_run,
            "",
        ]
    along = ["| arm | " + " | ".join(f"step {s}" for s in arms[0].curve()[0]) + " |"]
    along.append("|---|" + "---:|" * len(arms[0].curve()[0]))
    for a in arms:
        steps, ids, ps = a.curve()
        cells = [f"{i:.3f} / {p:.3f}" for i, p in zip(ids.mean(0), ps.mean(0), strict=True)]
        along.append(f"| {a.label} | " + " | ".join(cells) + " |")
    both = [
        a.label for a in arms if a.change("identity").mean() > 0 and a.change("prompt").mean() > 0
    ]
    steps_run = sorted({r.steps for a in arms for r in a.runs if r.steps is not None})
    n_pairs = next((r.base.get("n") for a in arms for r in a.runs if r.base), None)
    evaluation = evaluation or (
        f"Held-out evaluation: {n_pairs or 'all'} pairs of the 8 held-out subjects, "
        "deterministic sampling from fixed noise."
    )
    generated = "\n".join(
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
            *rows,
            "",
            "Arms whose mean moved above base on both rewards: "
            + (", ".join(both) if both else "none")
            + ".",
            "",
            *per_run,
            "### Along training (held-out identity / prompt, mean over seeds; step 0 = base)",
            "",
            *along,
            "",
            "![Pareto scatter](images/results_pareto.png)",
            "",
            "![Curves](images/results_curves.png)",
            "",
        ]
    )
    preamble = "# Results: competitive degradation on the embedded world\n\n"
    if doc.is_file():
        old = doc.read_text()
        if "<!-- generated -->" in old:
            preamble = old.split("<!-- generated -->")[0]
    text = preamble + generated
    atomic_write(doc, lambda tmp: tmp.write_text(text))
