"""``cgrpo compare``: runs side by side, and the paper's picture.

The paper's claim is a scatter: the identity reward on x, prompt following on y, one point
per method, the base model marked. Naive GRPO moves along one axis at the cost of the
other (*competitive degradation*); Customized-GRPO moves up and to the right. Any number
of named rewards is tabled; the scatter's x and y are a run's two competing rewards.

A *run* here is any folder this project writes (``S`` is an evaluation summary of
:mod:`cgrpo.summary`: ``overall`` {reward: mean}, ``overall_std``, ``pairs``, ``images``,
``images_per_pair``, ``per_image`` {reward: values in item order}):

- a ``cgrpo train`` run folder: ``config.yaml`` (``method.pair``: the x and y rewards),
  ``eval.json`` ``{"base": S, "trained": S, "steps": n}`` and ``metrics.csv`` (``step``,
  held-out ``eval/<reward>`` every ``run.eval_every`` steps, ``share/conflict``);
- a ``cgrpo eval`` folder: ``metrics.json``: ``S``'s keys, ``identity_column`` /
  ``prompt_column`` (the axes), ``base``: ``S`` of the base model when evaluated.

:func:`load_run` reads a folder (paired changes: :func:`cgrpo.summary.paired_changes`),
:func:`compare_table` and :func:`pareto_plot` render, :func:`write_experiment_report`
writes the multi-seed report of ``benchmarks/competitive_degradation.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cgrpo.checkpoint import atomic_write
from cgrpo.run_log import read_metrics
from cgrpo.summary import paired_changes

__all__ = [
    "ArmResult",
    "RunResult",
    "compare_command",
    "compare_table",
    "load_run",
    "pareto_plot",
    "write_experiment_report",
]

#: The axes of a train run whose config.yaml names no ``method.pair``.
DEFAULT_AXES = ("identity", "prompt")

_S = 'S = {"overall": {reward: mean}, "per_image": {reward: [value, ...]}, "pairs": n, ...}'
#: What each file of a run folder should hold (said by every error about it).
_HOLDS = {
    "eval.json": '{"base": S, "trained": S, "steps": n}',
    "metrics.json": 'S\'s keys, "identity_column" and "prompt_column" (the x and y reward), '
    '"base": S (optional)',
    "config.yaml": "the run's TrainConfig as YAML, method.pair: [x reward, y reward]",
}


@dataclass
class RunResult:
    """What a run folder says about its rewards: final means, curves, paired changes."""

    name: str
    path: Path
    trained: dict[str, float] | None  # {reward: held-out mean} at the end; None: unfinished
    base: dict[str, float] | None = None  # the same for the starting model
    steps: int | None = None
    # (step, {reward: held-out mean}) of the evaluations along training; step 0 = base
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    conflict: list[tuple[int, float]] = field(default_factory=list)  # (step, share)
    axes: tuple[str, str] = DEFAULT_AXES  # the rewards on x and y
    # per-image paired change from base: {reward: (mean, standard error)}
    paired: dict[str, tuple[float, float]] = field(default_factory=dict)
    pairs: int | None = None  # held-out pairs of the final evaluation


def _malformed(path: Path, file: str, why: str) -> ValueError:
    s = "" if file == "config.yaml" else f"; {_S}"
    return ValueError(f"{path}: {file} is malformed ({why}); it should hold {_HOLDS[file]}{s}")


def _read_json(path: Path, file: str) -> dict[str, Any]:
    """``path / file`` as a JSON object."""
    try:
        data = json.loads((path / file).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _malformed(path, file, str(e)) from None
    if not isinstance(data, dict):
        raise _malformed(path, file, f"not a JSON object but {type(data).__name__}")
    return data


def _means(s: Any, path: Path, file: str, what: str, axes: tuple[str, str]) -> dict[str, float]:
    """``s["overall"]`` of summary ``s`` (``what`` says where it sits in ``file``) as
    floats; it must hold both ``axes`` and, if any, a ``per_image`` mapping."""
    overall = s.get("overall") if isinstance(s, dict) else None
    ok = isinstance(overall, dict) and isinstance(s.get("per_image", {}), dict)
    if not ok or not all(type(v) in (int, float) for v in overall.values()):
        raise _malformed(path, file, f"{what} is not a summary with 'overall' reward means")
    missing = [a for a in axes if a not in overall]
    if missing:
        why = f"{what} has no {missing} (x / y rewards: {list(axes)}); it has {list(overall)}"
        raise _malformed(path, file, why)
    return {k: float(v) for k, v in overall.items()}


def _paired(model: Any, base: Any, path: Path, file: str) -> dict[str, tuple[float, float]]:
    """:func:`cgrpo.summary.paired_changes` of two summaries of ``file``."""
    try:
        return paired_changes(model, base)
    except (TypeError, ValueError) as e:
        raise _malformed(path, file, f"per_image of base and model differ: {e}") from None


def _pair(path: Path) -> tuple[str, str]:
    """``method.pair`` of ``path / "config.yaml"`` (:data:`DEFAULT_AXES` without one)."""
    file = path / "config.yaml"
    if not file.is_file():
        return DEFAULT_AXES
    try:
        cfg = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise _malformed(path, "config.yaml", str(e)) from None
    cfg = {} if cfg is None else cfg
    method = (cfg.get("method") or {}) if isinstance(cfg, dict) else None
    if not isinstance(method, dict):
        raise _malformed(path, "config.yaml", "not a mapping of TrainConfig sections")
    pair = method.get("pair", DEFAULT_AXES)
    ok = isinstance(pair, list | tuple) and len(pair) == 2
    if not ok or not all(isinstance(p, str) and p for p in pair):
        raise _malformed(path, "config.yaml", f"method.pair is {pair!r}, not two reward names")
    return pair[0], pair[1]


def _history(run: RunResult) -> None:
    """``run.curve`` (``eval/<reward>`` rows, step 0 = base) and ``run.conflict``
    (``share/conflict``) from ``run.path / "metrics.csv"`` when there is one."""
    if not (run.path / "metrics.csv").is_file():
        return
    rows = read_metrics(run.path / "metrics.csv")
    for r in rows:
        evals = {k[5:]: v for k, v in r.items() if k.startswith("eval/")}
        if evals:
            run.curve.append((int(r["step"]), evals))
    if run.base is not None and not (run.curve and run.curve[0][0] == 0):
        run.curve.insert(0, (0, dict(run.base)))
    run.conflict = [(int(r["step"]), r["share/conflict"]) for r in rows if "share/conflict" in r]


def load_run(path: str | Path, name: str | None = None) -> RunResult:
    """Read a ``cgrpo eval`` folder (its ``metrics.json``) or a ``cgrpo train`` run folder
    (``eval.json``, ``config.yaml``'s ``method.pair`` and ``metrics.csv``).

    Raises ``FileNotFoundError`` naming the folder when it holds neither ``eval.json`` nor
    ``metrics.json``, and ``ValueError`` naming the file and what it should hold when one
    is malformed.
    """
    path = Path(path)
    name = name or (path.name if not path.name.startswith("seed") else path.parent.name)
    if (path / "metrics.json").is_file():
        file, m = "metrics.json", _read_json(path, "metrics.json")
        axes = m.get("identity_column"), m.get("prompt_column")
        if not all(isinstance(a, str) and a for a in axes):
            raise _malformed(path, file, f"identity_column / prompt_column are {axes}")
        run = RunResult(name, path, _means(m, path, file, "the top level", axes), axes=axes)
        if m.get("base") is not None:
            run.base = _means(m["base"], path, file, "base", axes)
            run.paired = _paired(m, m["base"], path, file)
        run.pairs = m.get("pairs")
        return run
    if not (path / "eval.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a run: it has neither eval.json (cgrpo train: {_HOLDS['eval.json']}) "
            f"nor metrics.json (cgrpo eval: {_HOLDS['metrics.json']}), {_S}; pass run "
            "folders written by those commands"
        )
    file, axes = "eval.json", _pair(path)
    ev = _read_json(path, file)
    steps = ev.get("steps")
    if type(steps) not in (int, type(None)):
        raise _malformed(path, file, f"steps is {steps!r}, not a whole number")
    run = RunResult(name, path, None, steps=steps, axes=axes)
    if "base" in ev:
        run.base = _means(ev["base"], path, file, "base", axes)
    if "trained" in ev:
        run.trained = _means(ev["trained"], path, file, "trained", axes)
        run.pairs = ev["trained"].get("pairs")
        if "base" in ev:
            run.paired = _paired(ev["trained"], ev["base"], path, file)
    _history(run)
    return run


def _columns(runs: list[RunResult]) -> list[str]:
    """The rewards every finished run measured (every base if none finished), the first
    run's axes first."""
    done = [r.trained for r in runs if r.trained] or [r.base for r in runs if r.base] or [{}]
    shared = [k for k in done[0] if all(k in d for d in done)]
    first = [a for a in runs[0].axes if a in shared]
    return first + [k for k in shared if k not in first]


def compare_table(runs: list[RunResult]) -> str:
    """Markdown table, a column per reward all runs share: the base row (the first run's
    base), then each run's value and its change from its base (``± paired SE`` where the
    run kept per-image rewards of both)."""
    cols = _columns(runs)
    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    base = next((r.base for r in runs if r.base is not None), None)
    if base is not None:
        lines.append("| base | " + " | ".join(f"{base.get(k, math.nan):.4f}" for k in cols) + " |")
    for r in runs:
        if r.trained is None:
            lines.append(f"| {r.name} | (unfinished) |" + " |" * (len(cols) - 1))
            continue
        b = r.base or base or {}
        cells = []
        for k in cols:
            cell = f"{r.trained[k]:.4f}"
            if k in b:
                se = f" ± {r.paired[k][1]:.4f}" if k in r.paired else ""
                cell += f" ({r.trained[k] - b[k]:+.4f}{se})"
            cells.append(cell)
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    note = "Cells: held-out mean (change from base ± its paired SE where per-image rewards exist)"
    return "\n".join([*lines, "", note])


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
    axes: tuple[str, str] = DEFAULT_AXES,
    seeds: dict[str, list[tuple[float, float]]] | None = None,
) -> None:
    """Scatter of reward ``axes[0]`` (x) vs ``axes[1]`` (y) into PNG ``path``: ``points``
    are (label, x, y, x_err, y_err).

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


def _same_axes(runs: list[RunResult]) -> tuple[str, str]:
    """The axes all ``runs`` share; ``ValueError`` when they differ."""
    axes = {r.axes for r in runs}
    if len(axes) > 1:
        raise ValueError(
            f"the runs measure different things ({sorted(axes)}); compare like with like"
        )
    return runs[0].axes


def compare_command(paths: list[Path], out: Path) -> str:
    """``cgrpo compare``: read each folder of ``paths`` (:func:`load_run`), write the table
    and the scatter of the finished ones into ``out`` (compare.md, compare.png); returns
    the table."""
    runs = [load_run(p, name=str(p)) for p in paths]
    done = [r for r in runs if r.trained is not None]
    if not done:
        raise ValueError(
            "none of the runs has a finished evaluation (eval.json 'trained' or metrics.json)"
        )
    x, y = _same_axes(done)
    base = next((r.base for r in done if r.base is not None), None)
    pareto_plot(
        [(r.name, r.trained[x], r.trained[y], 0.0, 0.0) for r in done],
        out / "compare.png",
        (base[x], base[y]) if base else None,
        (x, y),
    )
    table = compare_table(runs)
    text = f"# Run comparison\n\n{table}\n\n![{x} vs {y}](compare.png)\n"
    atomic_write(out / "compare.md", lambda tmp: tmp.write_text(text))
    return table


# ----------------------------------------------------------------------------- experiment


@dataclass
class ArmResult:
    """One method variant of the experiment: its finished runs (one per seed), read on
    their axes (the x and y rewards, the same for every run)."""

    key: str
    label: str
    runs: list[RunResult]

    @property
    def axes(self) -> tuple[str, str]:
        return _same_axes(self.runs)

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


def write_experiment_report(
    arms: list[ArmResult], doc: Path, command: str, evaluation: str = ""
) -> None:
    """``docs/results.md`` from the arms' runs (their axes' two rewards, x and y): table
    (mean ± std over seeds), Pareto scatter, curves, conflicts.

    Figures go to ``<doc folder>/images/results_*.png``. The text states facts read from
    the runs (counts, means, which arms beat base on both); interpretation is written by
    hand in the page's preamble, which is kept from an existing file (everything above
    the ``<!-- generated -->`` marker). ``evaluation`` says how the final figures were
    measured (default: the runs' own held-out evaluation).
    """
    images = doc.parent / "images"
    x, y = _same_axes([r for a in arms for r in a.runs])
    base = next((r.base for a in arms for r in a.runs if r.base is not None), None)
    plt = _plt()

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
        images / "results_pareto.png",
        (base[x], base[y]) if base else None,
        (x, y),
        seeds={a.label: [(r.trained[x], r.trained[y]) for r in a.runs] for a in arms},
    )

    fig, axs = plt.subplots(1, 3, figsize=(14, 3.8))
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
    _save(fig, images / "results_curves.png")

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
    per_run = []
    if all(x in r.paired and y in r.paired for a in arms for r in a.runs):
        per_run = [
            "### Each run: paired change from base (same pairs, same noise)",
            "",
            f"| arm | run | Δ {x} ± paired SE | Δ {y} ± paired SE |",
            "|---|---|---:|---:|",
        ]
        for a in arms:
            for r in a.runs:
                (dx, sx), (dy, sy) = r.paired[x], r.paired[y]
                per_run.append(
                    f"| {a.label} | {r.name} | {dx:+.4f} ± {sx:.4f} | {dy:+.4f} ± {sy:.4f} |"
                )
        per_run.append("")
    along = ["| arm | " + " | ".join(f"step {s}" for s in arms[0].curve()[0]) + " |"]
    along.append("|---|" + "---:|" * len(arms[0].curve()[0]))
    for a in arms:
        steps, xs, ys = a.curve()
        cells = [f"{i:.3f} / {p:.3f}" for i, p in zip(xs.mean(0), ys.mean(0), strict=True)]
        along.append(f"| {a.label} | " + " | ".join(cells) + " |")
    both = [a.label for a in arms if a.change(x).mean() > 0 and a.change(y).mean() > 0]
    steps_run = sorted({r.steps for a in arms for r in a.runs if r.steps is not None})
    n_pairs = next((r.pairs for a in arms for r in a.runs if r.pairs), None)
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
            f"### Along training (held-out {x} / {y}, mean over seeds; step 0 = base)",
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
