"""The claims of the competitive-degradation experiment and their verdicts: the budget test,
(1) competitive degradation in a static-weight arm, (2) SARS + TDW above base on both
rewards in every seed, (3) SARS + TDW dominating every naive arm, (4) reaching naive 1:1's
final combined reward in half the steps, (5) the share of conflicted samples; the extra arms
shown apart. Each claim is one step of :func:`claims_section`, its markdown and verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cgrpo.experiments.cells import pooled_cell, seed_cells
from cgrpo.experiments.degradation import DEFAULT_ARM, LABELS, NAIVE, REWARDS, STATIC
from cgrpo.experiments.finals import Diffs, Finals, differences
from cgrpo.experiments.statistics import (
    Z,
    pooled,
    pooled_criterion,
    pooled_sign,
    seed_stat,
    sign,
    z_score,
)

__all__ = ["BUDGET_Z", "PAPER_CONFLICT", "Figures", "claims_section"]

BUDGET_Z = 5.0  #: the issue's budget test: the default's change >= 5 paired SE on both
PAPER_CONFLICT = 0.502  #: the paper's share of conflicted samples

Section = tuple[list[str], dict[str, str]]  #: a claim's markdown lines and its verdicts


@dataclass(kw_only=True)
class Figures:
    """What the claims read. ``finals``: arm -> seed -> per-image final rewards
    (``per_pair`` draws per pair); ``base``: the base's per-image rewards on the same images;
    ``curves``: arm -> seed -> step -> held-out identity + prompt (one noise per pair);
    ``conflict``: arm -> each run's mean conflicted share; ``expected``: arm -> the seeds
    the experiment runs (a claim whose arms have fewer finished is ``incomplete``);
    ``budget``: seed -> reward -> the default arm's paired change measured on
    ``budget_images`` noises per pair (None: the final evaluation's)."""

    finals: Finals
    base: dict[str, np.ndarray]
    curves: dict[str, dict[int, dict[int, float]]]
    conflict: dict[str, list[float]]
    per_pair: int
    expected: dict[str, int]
    budget: dict[int, dict[str, tuple[float, float]]] | None = None
    budget_images: int = 0
    #: arm -> its change from base (:func:`~cgrpo.experiments.finals.differences`)
    change: dict[str, Diffs] = field(init=False)

    def __post_init__(self) -> None:
        self.change = {
            a: differences(f, {k: self.base for k in f}, self.per_pair)
            for a, f in self.finals.items()
        }

    def hold(self, ok: bool, arms: list[str]) -> str:
        """The verdict of a claim on ``arms``: ``**incomplete**`` (naming the arms short of
        their seeds), else ``**holds**`` / ``**does not hold**`` as ``ok``."""
        short = [
            f"{LABELS[a]} {len(self.finals.get(a, {}))} of {n}"
            for a, n in self.expected.items()
            if a in arms and len(self.finals.get(a, {})) < n
        ]
        if short:
            return f"**incomplete** (seeds finished: {', '.join(short)})"
        return "**holds**" if ok else "**does not hold**"


def _preface(fig: Figures) -> list[str]:
    n = max(fig.expected.values(), default=0)
    t_n = f"{pooled_criterion(n):g} for {n} seeds" if n >= 2 else "none below 2 seeds"
    return [
        "### The claims",
        "",
        f"Per seed: the paired change over that seed's images (same pairs, same noise), its "
        f"SE over the {len(fig.base['identity']) // fig.per_pair} held-out pairs (a pair's "
        f"{fig.per_pair} draws are correlated); it counts (*) at >= {Z:g} SE. Pooled: the mean "
        "of the seeds, its SE from the seed-to-seed spread plus the pairs' sampling error; "
        "it counts (*) at the two-sided 95 % t quantile for n - 1 degrees of freedom "
        f"({t_n}). The thresholds were fixed before the runs.",
        "",
    ]


def budget_test(fig: Figures) -> Section:
    """The default arm's change >= :data:`BUDGET_Z` paired SE on both rewards, per seed."""
    d = DEFAULT_ARM
    if d not in fig.change:
        return [], {}
    test = (
        {r: {k: b[r] for k, b in fig.budget.items()} for r in REWARDS}
        if fig.budget
        else {r: {k: seed_stat(v) for k, v in fig.change[d][r].items()} for r in REWARDS}
    )
    ok = [all(z_score(*test[r][k]) >= BUDGET_Z for r in REWARDS) for k in test[REWARDS[0]]]
    where = f", measured on {fig.budget_images} noises per pair" if fig.budget else ""
    verdict = f"met in {sum(ok)} of {len(ok)} seeds"
    per_seed = "; ".join(
        f"{r} "
        + ", ".join(f"{v[0]:+.4f} ± {v[1]:.4f} ({z_score(*v):.1f})" for v in test[r].values())
        for r in REWARDS
    )
    return [
        f"**Budget test** (the {LABELS[d]} change >= {BUDGET_Z:g} paired SE on both "
        f"rewards in every seed{where}): {verdict}. Change ± paired SE "
        "(change / SE) per seed: " + per_seed + ".",
        "",
    ], {"budget": verdict}


def degradation_claim(fig: Figures) -> Section:
    """1. A static-weight arm raises one reward* while the other ends below base*, pooled."""
    rows, degraded = [], []
    for a in [a for a in STATIC if a in fig.change and a in fig.expected]:
        ch = fig.change[a]
        p = {r: pooled(ch[r]) for r in REWARDS}
        if sorted(pooled_sign(p[r]) for r in REWARDS) == [-1, 1]:
            degraded.append(LABELS[a])
        per_seed = sum(
            1
            for k in ch["identity"]
            if sorted(sign(*seed_stat(ch[r][k])) for r in REWARDS) == [-1, 1]
        )
        rows.append(
            f"| {LABELS[a]} | {pooled_cell(p['identity'])} | {pooled_cell(p['prompt'])} | "
            f"{seed_cells(ch['identity'])} | {seed_cells(ch['prompt'])} | "
            f"{per_seed} of {len(ch['identity'])} |"
        )
    verdict = fig.hold(bool(degraded), [a for a in STATIC if a in fig.expected])
    return [
        f"**1. Competitive degradation** (a static-weight arm, naive or SARS only, raises one "
        f"reward* while the other ends below base*, pooled): {verdict}"
        + (f" ({', '.join(degraded)})." if degraded else "."),
        "",
        "| arm | Δ identity pooled | Δ prompt pooled | Δ identity per seed | "
        "Δ prompt per seed | seeds with one up*, one down* |",
        "|---|---:|---:|---|---|---:|",
        *rows,
        "",
    ], {"1": verdict}


def above_base_claim(fig: Figures) -> Section:
    """2. The default arm ends above base on both rewards in every seed."""
    d = DEFAULT_ARM
    if d not in fig.change:
        return [], {}
    ch = fig.change[d]
    stats = [{r: seed_stat(ch[r][k]) for r in REWARDS} for k in ch["identity"]]
    above = [all(st[r][0] > 0 for r in REWARDS) for st in stats]
    strong = [all(sign(*st[r]) > 0 for r in REWARDS) for st in stats]
    verdict = fig.hold(all(above), [d])
    return [
        f"**2. {LABELS[d]} ends above base on both rewards in every seed**: "
        f"{verdict}: above on both in {sum(above)} of {len(above)} seeds, by "
        f">= {Z:g} paired SE on both in {sum(strong)}. Per seed, identity: "
        f"{seed_cells(ch['identity'])}; prompt: {seed_cells(ch['prompt'])}.",
        "",
    ], {"2": verdict}


def dominance_claim(fig: Figures) -> Section:
    """3. The default arm dominates every naive arm: pooled, better* on at least one reward
    and not shown worse* on the other."""
    d = DEFAULT_ARM
    if d not in fig.finals:
        return [], {}
    naive = [a for a in NAIVE if a in fig.expected]
    rows, dominated = [], []
    for a in [a for a in naive if a in fig.finals]:
        diff = differences(fig.finals[d], fig.finals[a], fig.per_pair)
        p = {r: pooled(diff[r]) for r in REWARDS}
        s = [pooled_sign(p[r]) for r in REWARDS]
        dom = min(s) >= 0 and max(s) > 0
        dominated.append(dom)
        rows.append(
            f"| {LABELS[a]} | {pooled_cell(p['identity'])} | {pooled_cell(p['prompt'])} | "
            f"{seed_cells(diff['identity'])} | {seed_cells(diff['prompt'])} | "
            f"{'yes' if dom else 'no'} |"
        )
    verdict = fig.hold(bool(dominated) and all(dominated), [d, *naive])
    return [
        f"**3. {LABELS[d]} dominates every naive arm** (pooled: better* on at least one "
        f"reward and not shown worse* on the other): {verdict}: it dominates "
        f"{sum(dominated)} of {len(dominated)}.",
        "",
        f"| {LABELS[d]} minus | Δ identity pooled | Δ prompt pooled | per seed identity | "
        "per seed prompt | dominates |",
        "|---|---:|---:|---|---|---|",
        *rows,
        "",
    ], {"3": verdict}


def first_step_at(curve: dict[int, float], target: float) -> int | None:
    """The first step after 0 whose value is at or above ``target`` (None: never)."""
    return next((t for t in sorted(curve) if 0 < t and curve[t] >= target), None)


def speed_claim(fig: Figures) -> Section:
    """4. The default arm's mean curve reaches naive 1:1's final combined reward (identity
    + prompt, mean over the seeds both ran) in <= 50 % of the steps."""
    d, n11, curves = DEFAULT_ARM, "naive_1_1", fig.curves
    seeds = sorted(set(curves.get(d, {})) & set(curves.get(n11, {})))
    if not seeds:
        return [], {}
    end = max(curves[n11][seeds[0]])
    target = float(np.mean([curves[n11][k][end] for k in seeds]))
    grid = sorted(set.intersection(*(set(curves[d][k]) for k in seeds)))
    mean_curve = {t: float(np.mean([curves[d][k][t] for k in seeds])) for t in grid}
    reach = first_step_at(mean_curve, target)
    per_seed = [first_step_at(curves[d][k], curves[n11][k][end]) for k in seeds]
    verdict = fig.hold(reach is not None and reach <= end / 2, [d, n11])
    return [
        f"**4. {LABELS[d]} reaches naive 1:1's final combined reward (identity + prompt) "
        f"in <= 50 % of its steps**: {verdict}. Naive 1:1 ends at {target:.4f} "
        f"(mean over seeds {', '.join(map(str, seeds))}, step {end}); the {LABELS[d]} "
        "mean curve over the same seeds is "
        + ", ".join(f"{mean_curve[t]:.4f} at step {t}" for t in grid)
        + f": first at or above it at step {reach if reach is not None else 'never'}. "
        "Per seed (against the same seed's naive 1:1): "
        + ", ".join(str(t) if t is not None else "never" for t in per_seed)
        + ". The curves evaluate one noise per held-out pair, so each point carries "
        "an evaluation SE of about 0.006 per reward.",
        "",
    ], {"4": verdict}


def extra_arms(fig: Figures) -> Section:
    """The arms beyond the verdicts' (naive 2:1): change from base, and the default arm
    minus each, per seed; no verdict."""
    d = DEFAULT_ARM
    extra = [a for a in fig.finals if a not in fig.expected]
    if not extra:
        return [], {}
    out = [
        "**Extra arms** (run on fewer seeds; not part of the verdicts above): change from "
        f"base, and {LABELS[d]} minus the arm, on the seeds both ran.",
        "",
        "| arm | seeds | Δ identity per seed | Δ prompt per seed | "
        f"{LABELS[d]} minus it, identity | prompt |",
        "|---|---:|---|---|---|---|",
    ]
    for a in extra:
        diff = differences(fig.finals[d], fig.finals[a], fig.per_pair) if d in fig.finals else None
        vs = [seed_cells(diff[r]) for r in REWARDS] if diff else ["-", "-"]
        out.append(
            f"| {LABELS[a]} | {len(fig.finals[a])} | {seed_cells(fig.change[a]['identity'])} | "
            f"{seed_cells(fig.change[a]['prompt'])} | {vs[0]} | {vs[1]} |"
        )
    return [*out, ""], {}


def conflict_claim(fig: Figures) -> Section:
    """5. The share of conflicted samples, mean over training, against the paper's."""
    if not fig.conflict:
        return [], {}
    allv = [v for vs in fig.conflict.values() for v in vs]
    return [
        f"**5. Share of conflicted samples** (above the group mean on one reward, below on "
        f"the other), mean over training: {100 * np.mean(allv):.1f} % over all "
        f"{len(allv)} runs (range {100 * min(allv):.1f}-{100 * max(allv):.1f} %), "
        f"against the paper's {100 * PAPER_CONFLICT:.1f} %. Per arm: "
        + ", ".join(f"{LABELS[a]} {100 * np.mean(v):.1f} %" for a, v in fig.conflict.items())
        + ".",
        "",
    ], {"5": f"{100 * np.mean(allv):.1f} % vs 50.2 %"}


#: the sections in the report's order
STEPS = (
    budget_test,
    degradation_claim,
    above_base_claim,
    dominance_claim,
    speed_claim,
    extra_arms,
    conflict_claim,
)


def claims_section(fig: Figures) -> tuple[str, dict[str, str]]:
    """The markdown of the five claims and the budget test (:data:`STEPS` in order), and
    each verdict (``budget``, ``1``-``5``; a claim whose arms did not run has none)."""
    out, verdict = _preface(fig), {}
    for step in STEPS:
        lines, v = step(fig)
        out += lines
        verdict |= v
    return "\n".join(out), verdict
