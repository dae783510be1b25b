"""The competitive-degradation report (``--doc``): the runs finished at the sweep's budget
read from their folders, the claims and their verdicts, the paired contrasts, the reference
points and how the figures were measured, written by
:func:`cgrpo.experiments.report.write_experiment_report`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cgrpo.eval.compare import RunResult, load_run
from cgrpo.eval.summary import paired_changes
from cgrpo.experiments.claims import Figures, claims_section
from cgrpo.experiments.contrasts import against_finals, against_section, components_section
from cgrpo.experiments.degradation import (
    ARMS,
    DEFAULT_ARM,
    LABELS,
    REWARDS,
    Settings,
    final_pairs,
    run_config,
)
from cgrpo.experiments.degradation_sweep import budget_eval, check_config, copy_scores
from cgrpo.experiments.finals import Finals, per_image
from cgrpo.experiments.report import ArmResult, write_experiment_report
from cgrpo.experiments.run_folders import finished_steps, runs_at

__all__ = ["SweepRuns", "collect_runs", "final_result", "write_report"]


def final_result(run_dir: Path, base: dict) -> RunResult:
    """The run's end point from ``eval_final`` paired with the base (``base``, its summary)
    on the same images; its curve and conflict share from the run's own metrics.csv."""
    out = run_dir / "eval_final"
    run, final = load_run(run_dir), json.loads((out / "metrics.json").read_text())
    end = load_run(out)
    run.trained, run.base, run.pairs = end.trained, dict(base["overall"]), end.pairs
    run.name = run_dir.name
    run.paired = paired_changes(final, base)
    return run


@dataclass
class SweepRuns:
    """The runs of a sweep finished at its budget, per arm: as the figures' table reads
    them (``arms``), their per-image finals, held-out combined-reward curves (seed -> step
    -> identity + prompt) and each run's mean conflicted share."""

    arms: list[ArmResult] = field(default_factory=list)
    finals: Finals = field(default_factory=dict)
    curves: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    conflict: dict[str, list[float]] = field(default_factory=dict)


def collect_runs(settings: Settings, base: dict) -> SweepRuns:
    """Every arm's runs under ``out`` finished at ``steps`` (each checked to be of these
    settings: ``SystemExit`` otherwise), paired with ``base``; the runs finished at another
    budget are named and left out."""
    found = SweepRuns()
    finished = finished_steps(settings.out)
    elsewhere = [  # finished at another budget: not this report's
        f"{d.parent.name} {d.name} (step {step})"
        for d, step in finished.items()
        if step not in (None, settings.steps)
    ]
    if elsewhere:
        print(f"not in this --steps {settings.steps} report: " + ", ".join(elsewhere), flush=True)
    for arm in ARMS:
        dirs = runs_at(finished, arm, settings.steps)
        if not dirs:
            continue
        for k, d in dirs.items():  # (restored, or of arms and seeds this command did not run)
            check_config(settings, arm, k, run_dir=d)
        runs = [final_result(d, base) for d in dirs.values()]
        found.arms.append(ArmResult(arm, LABELS[arm], runs))
        found.finals[arm] = {k: per_image(d) for k, d in dirs.items()}
        found.curves[arm] = {
            k: {t: sum(v[r] for r in REWARDS) for t, v in r.curve}
            for k, r in zip(dirs, runs, strict=True)
        }
        found.conflict[arm] = [float(np.mean([c[1] for c in r.conflict])) for r in runs]
    return found


def budget_changes(
    settings: Settings, finals: Finals
) -> dict[int, dict[str, tuple[float, float]]] | None:
    """Seed -> reward -> the default arm's paired change on ``budget_images`` noises per
    pair (evaluated now where missing); None without a budget evaluation (0) or runs."""
    if not settings.budget_images or DEFAULT_ARM not in finals:
        return None
    dirs = {k: settings.run_dir(DEFAULT_ARM, k) for k in finals[DEFAULT_ARM]}
    paths = [budget_eval(settings, None)] + [budget_eval(settings, d) for d in dirs.values()]
    b16, *runs16 = [json.loads(p.read_text()) for p in paths]
    return {k: paired_changes(m, b16) for k, m in zip(dirs, runs16, strict=True)}


def reference_line(copy: dict[str, float], base: dict) -> str:
    """The reference points on the held-out pairs: the base, the ground truth, pasting the
    reference (``copy``)."""
    b, t = base["overall"], base["truth"]["overall"]
    return (
        "Reference points on the same held-out pairs: "
        + "; ".join(
            f"{name} identity {v['identity']:.4f}, prompt {v['prompt']:.4f}"
            for name, v in (("base", b), ("ground truth", t), ("pasting the reference", copy))
        )
        + "."
    )


def evaluation_text(settings: Settings, base: dict) -> str:
    """How the figures were measured: the final evaluation's size, the curves'."""
    cfg = run_config(settings, DEFAULT_ARM, 0, run_dir=settings.out / "base_eval")
    curve_pairs = final_pairs(cfg)
    return (
        f"Final figures: `cgrpo eval` of each run's last checkpoint on the {base['pairs']} "
        f"held-out pairs x {settings.eval_images} noises = {base['images']} images (ODE "
        "sampling, seeded noise per image), paired with one evaluation of the base on the "
        f"same noise. Curves: the runs' own held-out evaluations ({curve_pairs} pairs, one "
        "noise each; step 0 = base)."
    )


def write_report(
    settings: Settings,
    base: dict,
    runs: SweepRuns,
    *,
    doc: Path,
    command: str,
    expected: dict[str, int],
    notes: str = "",
    against: Path | None = None,
) -> dict[str, str]:
    """Write ``doc`` from ``runs`` (of :func:`collect_runs`) and the base evaluation's
    summary ``base``: the claims (``expected``: arm -> the seeds a verdict waits for), the
    'what each part adds' contrasts, each run against the same of sweep ``against``, then
    ``notes``; returns the verdicts."""
    fig = Figures(
        finals=runs.finals,
        base={r: np.asarray(base["per_image"][r], np.float64) for r in REWARDS},
        curves=runs.curves,
        conflict=runs.conflict,
        per_pair=settings.eval_images,
        expected=expected,
        budget=budget_changes(settings, runs.finals),
        budget_images=settings.budget_images,
    )
    claims, verdict = claims_section(fig)
    reference = reference_line(copy_scores(settings), base)
    evaluation = evaluation_text(settings, base)
    components = components_section(runs.finals, settings.eval_images)
    if components:
        claims += "\n\n" + components
    if against:
        other = against_finals(against, list(runs.finals), settings.steps)
        claims += "\n\n" + against_section(
            runs.finals, other, settings.eval_images, name=str(against)
        )
    extra = "\n\n".join([reference, claims, notes])
    write_experiment_report(runs.arms, doc, command.strip(), evaluation=evaluation, extra=extra)
    return verdict
