"""``cgrpo compare``: runs side by side, and the paper's picture.

The paper's claim is a scatter: the identity reward on x, prompt following on y, one point
per method, the base model marked. Naive GRPO moves along one axis at the cost of the
other (*competitive degradation*); Customized-GRPO moves up and to the right. Any number
of named rewards is tabled; the scatter's x and y are a run's two competing rewards.

A *run* here is any folder this project writes (``S`` is an evaluation summary of
:mod:`cgrpo.eval.summary`: ``overall`` {reward: mean}, ``overall_std``, ``pairs``, ``images``,
``images_per_pair``, ``per_image`` {reward: values in item order}):

- a ``cgrpo train`` run folder: ``config.yaml`` (``method.pair``: the x and y rewards),
  ``eval.json`` ``{"base": S, "trained": S, "steps": n}`` and ``metrics.csv`` (``step``,
  held-out ``eval/<reward>`` every ``run.eval_every`` steps, ``share/conflict``);
- a ``cgrpo eval`` folder: ``metrics.json``: ``S``'s keys, ``identity_column`` /
  ``prompt_column`` (the axes), ``base``: ``S`` of the base model when evaluated.

:func:`load_run` reads a folder (paired changes: :func:`cgrpo.eval.summary.paired_changes`),
:func:`compare_table` and :func:`pareto_plot` render; the multi-seed report of
``benchmarks/competitive_degradation.py`` is :mod:`cgrpo.experiments.report`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cgrpo.eval.summary import gap_closed, paired_changes
from cgrpo.io.atomic import atomic_write
from cgrpo.io.paths import check_output_dir
from cgrpo.io.run_log import read_metrics

__all__ = [
    "RunResult",
    "compare_command",
    "compare_table",
    "load_run",
    "pareto_plot",
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
    # share of the gap to the ground truth closed: {reward: (share, SE)} (summary.gap_closed)
    gap: dict[str, tuple[float, float]] = field(default_factory=dict)


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


def _means(s: Any, path: Path, file: str, *, what: str, axes: tuple[str, str]) -> dict[str, float]:
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


def _paired(run: RunResult, model: Any, base: Any, *, truth: Any, file: str) -> None:
    """``run.paired`` (:func:`cgrpo.eval.summary.paired_changes`) and, with the ground truth's
    scores, ``run.gap`` (:func:`cgrpo.eval.summary.gap_closed`) from summaries of ``file``."""
    try:
        run.paired = paired_changes(model, base)
        run.gap = gap_closed(model, base, truth) if isinstance(truth, dict) else {}
    except (TypeError, ValueError) as e:
        raise _malformed(run.path, file, f"per_image of base and model differ: {e}") from None


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
        run = RunResult(
            name, path, _means(m, path, file, what="the top level", axes=axes), axes=axes
        )
        if m.get("base") is not None:
            run.base = _means(m["base"], path, file, what="base", axes=axes)
            _paired(run, m, m["base"], truth=m.get("truth"), file=file)
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
        run.base = _means(ev["base"], path, file, what="base", axes=axes)
    if "trained" in ev:
        run.trained = _means(ev["trained"], path, file, what="trained", axes=axes)
        run.pairs = ev["trained"].get("pairs")
        if "base" in ev:
            _paired(run, ev["trained"], ev["base"], truth=ev.get("truth"), file=file)
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
            if k in r.gap:
                cell += f" gap {100 * r.gap[k][0]:+.1f} ± {100 * r.gap[k][1]:.1f} %"
            cells.append(cell)
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    note = (
        "Cells: held-out mean (change from base ± its paired SE where per-image rewards "
        "exist); gap: share of the gap to the ground truth closed ± SE, where it is known"
    )
    return "\n".join([*lines, "", note])


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    pyplot().close(fig)


def pareto_plot(
    points: list[tuple[str, float, float, float, float]],
    path: Path,
    base: tuple[float, float] | None = None,
    *,
    axes: tuple[str, str] = DEFAULT_AXES,
    seeds: dict[str, list[tuple[float, float]]] | None = None,
) -> None:
    """Scatter of reward ``axes[0]`` (x) vs ``axes[1]`` (y) into PNG ``path``: ``points``
    are (label, x, y, x_err, y_err).

    ``base`` is drawn as a black star with dashed lines through it (the quadrant up and to
    the right of it is "both better"); ``seeds`` adds each label's single runs, faint.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
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
    # outside the axes: inside, "best" still covered the base star when it sat in a corner
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.2)
    save_figure(fig, path)


def same_axes(runs: list[RunResult]) -> tuple[str, str]:
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
    check_output_dir(out, "--out")
    runs = [load_run(p, name=str(p)) for p in paths]
    done = [r for r in runs if r.trained is not None]
    if not done:
        raise ValueError(
            "none of the runs has a finished evaluation (eval.json 'trained' or metrics.json)"
        )
    x, y = same_axes(done)
    base = next((r.base for r in done if r.base is not None), None)
    pareto_plot(
        [(r.name, r.trained[x], r.trained[y], 0.0, 0.0) for r in done],
        out / "compare.png",
        (base[x], base[y]) if base else None,
        axes=(x, y),
    )
    table = compare_table(runs)
    text = f"# Run comparison\n\n{table}\n\n![{x} vs {y}](compare.png)\n"
    atomic_write(out / "compare.md", lambda tmp: tmp.write_text(text))
    return table


# ----------------------------------------------------------------------------- experiment
