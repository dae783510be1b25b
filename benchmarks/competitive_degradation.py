"""The competitive-degradation experiment on the embedded world (CPU): does naive GRPO with
static weights trade one reward for the other, and does Customized-GRPO (SARS + TDW) avoid
it? Every arm is the embedded default (``cgrpo/configs/embedded.yaml``: branch k=2, lr 2e-5,
8 pairs x G 8) for the same ``--steps``, differing only in shaping / weighting:

===================  ==========  ==================================================
arm                  shaping     weighting
===================  ==========  ==================================================
naive 1:1            linear      static, identity 1, prompt 1 (weights sum to 2)
naive 0.5:0.5        linear      static, identity 0.5, prompt 0.5 (TDW's scale, 1)
naive 1:1.5          linear      static, identity 1, prompt 1.5 (prompt-heavy)
SARS only            sars 0.4    static 1:1
TDW only             linear      tdw (weights sum to 1 at every step)
SARS + TDW           sars 0.4    tdw   (Customized-GRPO, the default)
naive 2:1            linear      static, identity 2, prompt 1 (identity-heavy; extra)
===================  ==========  ==================================================

The claims are decided on the first six (``--arms``, default); the extra arm is trained
on request (``--arms naive_2_1``) and shown beside them.

A seed fixes the training pairs and every noise, so the arms of one seed are compared
image by image. Each run is a ``cgrpo train`` run folder ``--out/<arm>/seed<k>``
(metrics.csv with the held-out curve every ``--eval-every`` steps on one noise per pair,
eval.json, images), trained in its own process with one thread (``--jobs 2`` on a 2-core
machine: two runs at a time), then evaluated by ``cgrpo eval`` on the held-out pairs (256,
or 8 subjects x ``--eval-prompts``) x ``--eval-images`` noises (``eval_final/``), paired with
one shared evaluation of the base on the same noise (``base_eval/``). Finished runs are
skipped and stopped ones resume from their last checkpoint, so the command continues where
it stopped. The report (``--doc``) is written from whatever has finished.

An experiment longer than a machine's life: ``--records DIR`` (a committed folder) keeps
each finished run's figures, a few hundred kB without checkpoints or images; on a new
machine the same command copies them into ``--out`` and trains only what is not recorded.

    python benchmarks/competitive_degradation.py --jobs 2 [--seeds 5] [--steps 80]
    python benchmarks/competitive_degradation.py --arms naive_2_1 --seeds 2   # the extra arm
    python benchmarks/competitive_degradation.py --report-only
    # another configuration for every arm (e.g. the paper's full schedule), paired with this
    python benchmarks/competitive_degradation.py --out runs/cd_full --doc docs/results_full.md \
        sampler.schedule.kind=full grpo.timestep_fraction=0.6
    python benchmarks/competitive_degradation.py --report-only --out runs/cd_full \
        --against runs/competitive_degradation --doc docs/results_full.md ...
    # the full-schedule sweep of docs/results_full.md: 1024 held-out pairs, records kept
    python benchmarks/competitive_degradation.py --jobs 2 --steps 200 --eval-prompts 128 \
        --budget-images 0 --out runs/cd_full --doc docs/results_full.md \
        --records benchmarks/records/cd_full_200 sampler.schedule.kind=full \
        grpo.timestep_fraction=0.6
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from functools import partial
from pathlib import Path

import numpy as np

from cgrpo.eval.compare import RunResult, load_run
from cgrpo.eval.summary import pair_means, paired_changes, paired_difference
from cgrpo.experiments.records import restore_record, save_record
from cgrpo.experiments.sweep import run_all, run_logged

PRIMARY = ["naive_1_1", "naive_0.5_0.5", "naive_1_1.5", "sars", "tdw", "sars_tdw"]
TRAIN_ORDER = ["sars_tdw", "naive_1_1", "naive_1_1.5", "sars", "tdw", "naive_0.5_0.5"]


def _weights(identity: float, prompt: float) -> str:
    """The override of the embedded rewards with these static weights."""
    return (
        f"rewards={{identity: {{kind: embedded_identity, weight: {identity}}}, "
        f"prompt: {{kind: embedded_prompt, weight: {prompt}}}}}"
    )


_NAIVE = ["method.shaping=linear", "method.weighting=static"]
ARMS: dict[str, list[str]] = {
    "naive_1_1": [*_NAIVE, _weights(1.0, 1.0)],
    "naive_0.5_0.5": [*_NAIVE, _weights(0.5, 0.5)],
    "naive_1_1.5": [*_NAIVE, _weights(1.0, 1.5)],
    "sars": ["method.shaping=sars", "method.weighting=static", _weights(1.0, 1.0)],
    "tdw": ["method.shaping=linear", "method.weighting=tdw", _weights(1.0, 1.0)],
    "sars_tdw": ["method.shaping=sars", "method.weighting=tdw", _weights(1.0, 1.0)],
    "naive_2_1": [*_NAIVE, _weights(2.0, 1.0)],
}
LABELS = {
    "naive_1_1": "naive GRPO 1:1",
    "naive_0.5_0.5": "naive GRPO 0.5:0.5",
    "naive_1_1.5": "naive GRPO 1:1.5",
    "sars": "SARS only",
    "tdw": "TDW only",
    "sars_tdw": "SARS + TDW",
    "naive_2_1": "naive GRPO 2:1",
}
DEFAULT_ARM = "sars_tdw"

#: what --records keeps of a run: what the report reads, the "done" marker last
RUN_RECORD = [
    "config.yaml", "metrics.csv", "eval.json", "eval_budget/source.json",
    "eval_budget/metrics.json", "eval_final/source.json", "eval_final/metrics.json",
]  # fmt: skip
#: ... and of the shared base evaluation
BASE_RECORD = [
    "model.yaml", "copy.json", "budget/source.json", "budget/metrics.json", "source.json",
    "metrics.json",
]  # fmt: skip


def run_config(run_dir: Path, arm: str, seed: int, args: argparse.Namespace):
    """The run's config: the embedded default, the experiment's budget, the arm."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    overrides = [
        f"run.out_dir={run_dir}", f"run.seed={seed}", f"run.steps={args.steps}",
        f"run.eval_every={args.eval_every}", "run.checkpoint_every=10", "run.keep_last=1",
        f"run.image_every={args.steps}", "run.threads=1",
        "data.eval_noises=1",  # the run's own base / trained: the curve's ends (one noise)
        *ARMS[arm], *args.overrides,
    ]  # fmt: skip
    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, overrides)
    if cfg.run.time_budget or cfg.run.log_every != 1:  # a run continued to more steps must
        raise SystemExit(  # end where one started with them ends: steps alone decide
            "competitive_degradation budgets runs in steps and logs every step: drop the "
            "run.time_budget / run.log_every override (use --steps)"
        )
    return cfg


def train_and_eval(run_dir: Path, arm: str, seed: int, args: argparse.Namespace) -> None:
    """One run, in its own process: train (resuming from its last checkpoint), then the
    precise end point (``cgrpo eval``, ``eval_final/``)."""
    from cgrpo.eval.protocol import EvalConfig, eval_command
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.train.trainer import GRPOTrainer

    if not _trained(run_dir, args.steps):
        resume = ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
        GRPOTrainer(run_config(run_dir, arm, seed, args)).train(resume=resume, quiet=True)
    set_aside(run_dir / "eval_final", args.steps)
    cfg = EvalConfig(
        out_dir=str(run_dir / "eval_final"), images_per_pair=args.eval_images,
        prompts_per_subject=args.eval_prompts,
    )  # fmt: skip
    eval_command(cfg, run_dir, None, True)


def base_eval(args: argparse.Namespace) -> Path:
    """One evaluation of the starting model (and the ground truth) shared by every run."""
    from cgrpo.config.core import save_config
    from cgrpo.eval.protocol import EvalConfig, eval_command

    base_dir = args.out / "base_eval"
    model = run_config(base_dir, DEFAULT_ARM, 0, args)  # (a bad override stops here)
    pairs = final_pairs(model, args)
    if not (base_dir / "metrics.json").is_file():
        base_dir.mkdir(parents=True, exist_ok=True)
        save_config(model, base_dir / "model.yaml")
        cfg = EvalConfig(
            out_dir=str(base_dir), images_per_pair=args.eval_images,
            prompts_per_subject=args.eval_prompts,
        )  # fmt: skip
        eval_command(cfg, None, base_dir / "model.yaml", True)
    keys = config_changes(saved_config(base_dir / "model.yaml"), model, ("run.",))  # (runs')
    if keys:
        raise SystemExit(
            f"{base_dir} evaluated a base of other settings ({', '.join(keys)} differ): use "
            "another --out, or the overrides the sweep was run with"
        )
    made = json.loads((base_dir / "metrics.json").read_text())
    if (made["pairs"], made["images_per_pair"]) != (pairs, args.eval_images):
        raise SystemExit(
            f"{base_dir} evaluated {made['pairs']} pairs x {made['images_per_pair']} noises, "
            f"this command asks for {pairs} x {args.eval_images} (--eval-prompts, "
            "--eval-images): use another --out, or the options the sweep was run with"
        )
    return base_dir / "metrics.json"


def final_pairs(cfg, args: argparse.Namespace | None) -> int:
    """The held-out pairs of the final evaluation: every held-out subject x ``--eval-prompts``
    (0, or ``args`` None: the runs' own ``data.eval_prompts_per_subject``, the curves')."""
    from cgrpo.data.base import EmbeddedData

    subjects = len(EmbeddedData().eval_subjects)
    return subjects * ((args and args.eval_prompts) or cfg.data.eval_prompts_per_subject)


def _trained(run_dir: Path, steps: int) -> bool:
    ev = run_dir / "eval.json"
    summary = json.loads(ev.read_text()) if ev.is_file() else {}
    return "trained" in summary and summary.get("steps") == steps


def _evaluated_step(out: Path, record: str = "metrics.json") -> int | None:
    """The training step of the checkpoint ``out`` (an evaluation folder) evaluated, as its
    ``record`` names it (``source.json`` is written before the first image, metrics.json
    last); None when there is none."""
    from cgrpo.io.checkpoint import checkpoint_step

    path = out / record
    if not path.is_file():
        return None
    return checkpoint_step(json.loads(path.read_text()).get("checkpoint") or "")


def _done(run_dir: Path, steps: int) -> bool:
    return _evaluated_step(run_dir / "eval_final") == steps


def set_aside(out: Path, steps: int) -> None:
    """An evaluation folder of an earlier step (a run since continued to ``steps``) is kept
    as ``<out>_step<N>``; its images are not mixed with the new checkpoint's."""
    step = _evaluated_step(out, "source.json")  # (also of an evaluation stopped part-way)
    if step is not None and step != steps:
        kept = out.with_name(f"{out.name}_step{step:06d}")
        if kept.exists():
            raise SystemExit(f"{out} is of step {step}, and {kept} exists: remove one of them")
        out.rename(kept)


def saved_config(path: Path):
    """The config saved at ``path`` (a run's ``config.yaml``, the base's ``model.yaml``)."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import TrainConfig

    return load_config(TrainConfig, path)


def config_changes(old, new, ignore: tuple[str, ...] = ("run.out_dir",)) -> list[str]:
    """The keys (``section.key``) where config ``old`` differs from ``new``, leaving out
    ``ignore`` (a key, or a section ending in ``.``; ``run.out_dir`` by default: where the
    folder is, moved or a record's)."""
    from cgrpo.config.core import config_to_dict

    old, new = config_to_dict(old), config_to_dict(new)
    return sorted(
        f"{sec}.{k}"
        for sec in set(old) | set(new)
        for k in set(old.get(sec) or {}) | set(new.get(sec) or {})
        if (old.get(sec) or {}).get(k) != (new.get(sec) or {}).get(k)
        and f"{sec}.{k}" not in ignore
        and f"{sec}." not in ignore
    )


def check_config(run_dir: Path, arm: str, seed: int, args: argparse.Namespace) -> None:
    """Refuse to skip, resume or report a run folder trained with other settings (another
    ``--steps``, ``--eval-every`` or override): its figures would not be this command's."""
    if not (run_dir / "config.yaml").is_file():
        return
    old = saved_config(run_dir / "config.yaml")
    keys = config_changes(old, run_config(run_dir, arm, seed, args))
    # a shorter run is continued: lr is constant and the checkpoint holds every RNG state,
    # so steps beyond it are the ones a run started with the longer budget trains
    longer = old.run.steps < args.steps and set(keys) <= {"run.steps", "run.image_every"}
    if keys and not longer:
        raise SystemExit(
            f"{run_dir} was trained with other settings ({', '.join(keys)} differ): use "
            "another --out, or the options it was run with (a larger --steps continues it)"
        )


def launch(run_dir: Path, arm: str, seed: int, args: argparse.Namespace) -> None:
    """Train and evaluate one run in a subprocess (one thread), logging to ``train.log``;
    with ``--records``, keep the finished run's record."""
    from cgrpo.io.checkpoint import latest_checkpoint

    check_config(run_dir, arm, seed, args)
    if _done(run_dir, args.steps):
        print(f"[skip] {arm} seed {seed} (finished)", flush=True)
        return
    if (run_dir / "eval.json").is_file() and latest_checkpoint(run_dir / "checkpoints") is None:
        raise SystemExit(  # a record restored on this machine: its figures, no checkpoint
            f"{run_dir} holds a finished run's record without checkpoints, so it cannot be "
            "continued to more steps: use another --out for the longer budget"
        )
    cmd = [
        sys.executable, __file__, "--one", arm, str(seed), "--steps", str(args.steps),
        "--eval-every", str(args.eval_every), "--out", str(args.out),
        "--eval-images", str(args.eval_images), "--eval-prompts", str(args.eval_prompts),
        *args.overrides,
    ]  # fmt: skip
    run_logged(cmd, run_dir, f"{arm} seed {seed}")
    keep_records(args)


def schedule(arms: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The order runs are trained in: the six primary arms seed by seed (every arm gets
    seed 0 before seed 1), then the extra arms seed by seed. Within a seed the default arm
    and naive 1:1 go first (the budget test and claims 2-4 read them) and naive 0.5:0.5,
    the scale check, last: a sweep stopped part-way leaves the arms most claims need."""
    primary = sorted((a for a in arms if a in PRIMARY), key=TRAIN_ORDER.index)
    extra = [a for a in arms if a not in PRIMARY]
    return [(a, k) for k in seeds for a in primary] + [(a, k) for k in seeds for a in extra]


def final_result(run_dir: Path, base: dict) -> RunResult:
    """The run's end point from ``eval_final`` paired with the base on the same images;
    its curve and conflict share from the run's own metrics.csv."""
    out = run_dir / "eval_final"
    run, final = load_run(run_dir), json.loads((out / "metrics.json").read_text())
    end = load_run(out)
    run.trained, run.base, run.pairs = end.trained, dict(base["overall"]), end.pairs
    run.name = run_dir.name
    run.paired = paired_changes(final, base)
    return run


# -- the claims -----------------------------------------------------------------------------

REWARDS = ("identity", "prompt")
STATIC = [a for a in ARMS if a.startswith("naive")] + ["sars"]  #: arms with static weights
NAIVE = [a for a in ARMS if a.startswith("naive")]
Z = 2.0  #: per seed (256 pairs): a difference counts when |mean| >= Z SE (fixed before the run)
#: pooled over n seeds: the two-sided 95 % t quantile with n - 1 degrees of freedom
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}
BUDGET_Z = 5.0  #: the issue's budget test: the default's change >= 5 paired SE on both
PAPER_CONFLICT = 0.502  #: the paper's share of conflicted samples

Diffs = dict[str, dict[int, np.ndarray]]  # reward -> seed -> per-pair mean differences


def per_image(run_dir: Path) -> dict[str, np.ndarray]:
    """The final evaluation's per-image rewards of a run (``eval_final/metrics.json``)."""
    m = json.loads((run_dir / "eval_final" / "metrics.json").read_text())
    return {r: np.asarray(m["per_image"][r], np.float64) for r in REWARDS}


def differences(
    a: dict[int, dict[str, np.ndarray]], b: dict[int, dict[str, np.ndarray]], per_pair: int
) -> Diffs:
    """Per reward, per seed both hold: ``a - b`` image by image, averaged over each pair's
    ``per_pair`` draws (items ``j = i * per_pair + k``)."""
    seeds = sorted(set(a) & set(b))
    return {r: {k: pair_means(a[k][r] - b[k][r], per_pair) for k in seeds} for r in REWARDS}


def seed_stat(d: np.ndarray) -> tuple[float, float]:
    """One seed's paired change: mean and SE over the pairs (a pair's draws are correlated)."""
    return paired_difference(d, np.zeros_like(d))


def pooled(per_seed: dict[int, np.ndarray]) -> tuple[float, float, int]:
    """Mean over seeds of the seed means, and its SE::

        SE^2 = var_seeds(m_s) / n  +  SE_pairs(mean_s d_s)^2

    the seed-to-seed spread of training and data, plus the sampling error of the held-out
    pairs themselves (every seed is evaluated on the same pairs and noise)."""
    ds = list(per_seed.values())
    m = np.array([d.mean() for d in ds])
    if len(m) < 2:
        return float(m.mean()), float("nan"), len(m)
    pairs = seed_stat(np.mean(ds, 0))[1]
    return float(m.mean()), float(math.sqrt(m.var(ddof=1) / len(m) + pairs**2)), len(m)


def sign(mean: float, se: float, crit: float = Z) -> int:
    """+1 / -1 when ``mean`` is at least ``crit`` SE above / below 0, else 0."""
    return 0 if not se > 0 or abs(mean) < crit * se else (1 if mean > 0 else -1)


def pooled_sign(v: tuple[float, float, int]) -> int:
    return sign(v[0], v[1], T95.get(v[2], Z))


def _z(mean: float, se: float) -> float:
    return mean / se if se > 0 else math.copysign(math.inf, mean)


def _fmt(v: tuple[float, ...]) -> str:
    if not math.isfinite(v[1]):  # pooled over one seed: no spread to take an SE from
        return f"{v[0]:+.4f} (1 seed)"
    return f"{v[0]:+.4f} ± {v[1]:.4f}" + ("*" if len(v) == 3 and pooled_sign(v) else "")


def _seed_cells(d: dict[int, np.ndarray]) -> str:
    return ", ".join(
        f"{st[0]:+.4f}" + ("*" if sign(*st) else "") for st in map(seed_stat, d.values())
    )


def claims_section(
    finals: dict[str, dict[int, dict[str, np.ndarray]]],
    base: dict[str, np.ndarray],
    curves: dict[str, dict[int, dict[int, float]]],
    conflict: dict[str, list[float]],
    per_pair: int,
    expected: dict[str, int],
    budget: dict[int, dict[str, tuple[float, float]]] | None = None,
    budget_images: int = 0,
) -> tuple[str, dict[str, str]]:
    """The markdown of the five claims and the budget test, and each verdict.

    ``finals``: arm -> seed -> per-image final rewards (``per_pair`` draws per pair);
    ``base``: the base's per-image rewards on the same images; ``curves``: arm -> seed ->
    step -> held-out identity + prompt (one noise per pair); ``conflict``: arm -> each run's
    mean conflicted share; ``expected``: arm -> the seeds the experiment runs (a claim whose
    arms have fewer finished is ``incomplete``); ``budget``: seed -> reward -> the default
    arm's paired change measured on ``budget_images`` noises per pair."""
    out: list[str] = []
    verdict: dict[str, str] = {}
    change = {a: differences(f, {k: base for k in f}, per_pair) for a, f in finals.items()}

    def missing(arms: list[str]) -> str:
        short = [
            f"{LABELS[a]} {len(finals.get(a, {}))} of {n}"
            for a, n in expected.items()
            if a in arms and len(finals.get(a, {})) < n
        ]
        return f"**incomplete** (seeds finished: {', '.join(short)})" if short else ""

    def hold(ok: bool, arms: list[str]) -> str:
        return missing(arms) or ("**holds**" if ok else "**does not hold**")

    out += [
        "### The claims",
        "",
        f"Per seed: the paired change over that seed's images (same pairs, same noise), its "
        f"SE over the {len(base['identity']) // per_pair} held-out pairs (a pair's "
        f"{per_pair} draws are correlated); it counts (*) at >= {Z:g} SE. Pooled: the mean "
        "of the seeds, its SE from the seed-to-seed spread plus the pairs' sampling error; "
        "it counts (*) at the two-sided 95 % t quantile for n - 1 degrees of freedom (2.78 "
        "for 5 seeds). The thresholds were fixed before the runs.",
        "",
    ]
    d = DEFAULT_ARM
    if d in change:
        test = (
            {r: {k: b[r] for k, b in budget.items()} for r in REWARDS}
            if budget
            else {r: {k: seed_stat(v) for k, v in change[d][r].items()} for r in REWARDS}
        )
        ok = [all(_z(*test[r][k]) >= BUDGET_Z for r in REWARDS) for k in test[REWARDS[0]]]
        where = f", measured on {budget_images} noises per pair" if budget else ""
        verdict["budget"] = f"met in {sum(ok)} of {len(ok)} seeds"
        out += [
            f"**Budget test** (the {LABELS[d]} change >= {BUDGET_Z:g} paired SE on both "
            f"rewards in every seed{where}): {verdict['budget']}. Change ± paired SE "
            "(change / SE) per seed: "
            + "; ".join(
                f"{r} "
                + ", ".join(f"{v[0]:+.4f} ± {v[1]:.4f} ({_z(*v):.1f})" for v in test[r].values())
                for r in REWARDS
            )
            + ".",
            "",
        ]
    # 1. competitive degradation
    rows, degraded = [], []
    static = [a for a in STATIC if a in change and a in expected]
    for a in static:
        p = {r: pooled(change[a][r]) for r in REWARDS}
        if sorted(pooled_sign(p[r]) for r in REWARDS) == [-1, 1]:
            degraded.append(LABELS[a])
        per_seed = sum(
            1
            for k in change[a]["identity"]
            if sorted(sign(*seed_stat(change[a][r][k])) for r in REWARDS) == [-1, 1]
        )
        rows.append(
            f"| {LABELS[a]} | {_fmt(p['identity'])} | {_fmt(p['prompt'])} | "
            f"{_seed_cells(change[a]['identity'])} | {_seed_cells(change[a]['prompt'])} | "
            f"{per_seed} of {len(change[a]['identity'])} |"
        )
    verdict["1"] = hold(bool(degraded), [a for a in STATIC if a in expected])
    out += [
        f"**1. Competitive degradation** (a static-weight arm, naive or SARS only, raises one "
        f"reward* while the other ends below base*, pooled): {verdict['1']}"
        + (f" ({', '.join(degraded)})." if degraded else "."),
        "",
        "| arm | Δ identity pooled | Δ prompt pooled | Δ identity per seed | "
        "Δ prompt per seed | seeds with one up*, one down* |",
        "|---|---:|---:|---|---|---:|",
        *rows,
        "",
    ]
    # 2. SARS + TDW above base on both in every seed
    if d in change:
        stats = [{r: seed_stat(change[d][r][k]) for r in REWARDS} for k in change[d]["identity"]]
        above = [all(st[r][0] > 0 for r in REWARDS) for st in stats]
        strong = [all(sign(*st[r]) > 0 for r in REWARDS) for st in stats]
        verdict["2"] = hold(all(above), [d])
        out += [
            f"**2. {LABELS[d]} ends above base on both rewards in every seed**: "
            f"{verdict['2']}: above on both in {sum(above)} of {len(above)} seeds, by "
            f">= {Z:g} paired SE on both in {sum(strong)}. Per seed, identity: "
            f"{_seed_cells(change[d]['identity'])}; prompt: {_seed_cells(change[d]['prompt'])}.",
            "",
        ]
    # 3. SARS + TDW dominates every naive arm
    naive = [a for a in NAIVE if a in expected]
    if d in finals:
        rows, dominated = [], []
        for a in [a for a in naive if a in finals]:
            diff = differences(finals[d], finals[a], per_pair)
            p = {r: pooled(diff[r]) for r in REWARDS}
            s = [pooled_sign(p[r]) for r in REWARDS]
            dom = min(s) >= 0 and max(s) > 0
            dominated.append(dom)
            rows.append(
                f"| {LABELS[a]} | {_fmt(p['identity'])} | {_fmt(p['prompt'])} | "
                f"{_seed_cells(diff['identity'])} | {_seed_cells(diff['prompt'])} | "
                f"{'yes' if dom else 'no'} |"
            )
        verdict["3"] = hold(bool(dominated) and all(dominated), [d, *naive])
        out += [
            f"**3. {LABELS[d]} dominates every naive arm** (pooled: better* on at least one "
            f"reward and not shown worse* on the other): {verdict['3']}: it dominates "
            f"{sum(dominated)} of {len(dominated)}.",
            "",
            f"| {LABELS[d]} minus | Δ identity pooled | Δ prompt pooled | per seed identity | "
            "per seed prompt | dominates |",
            "|---|---:|---:|---|---|---|",
            *rows,
            "",
        ]
    # 4. steps to naive 1:1's final combined reward
    n11 = "naive_1_1"
    seeds = sorted(set(curves.get(d, {})) & set(curves.get(n11, {})))
    if seeds:
        end = max(curves[n11][seeds[0]])
        target = float(np.mean([curves[n11][k][end] for k in seeds]))
        grid = sorted(set.intersection(*(set(curves[d][k]) for k in seeds)))
        mean_curve = {t: float(np.mean([curves[d][k][t] for k in seeds])) for t in grid}
        reach = next((t for t in grid if t > 0 and mean_curve[t] >= target), None)
        per_seed = [
            next(
                (
                    t
                    for t in sorted(curves[d][k])
                    if 0 < t and curves[d][k][t] >= curves[n11][k][end]
                ),
                None,
            )
            for k in seeds
        ]
        verdict["4"] = hold(reach is not None and reach <= end / 2, [d, n11])
        out += [
            f"**4. {LABELS[d]} reaches naive 1:1's final combined reward (identity + prompt) "
            f"in <= 50 % of its steps**: {verdict['4']}. Naive 1:1 ends at {target:.4f} "
            f"(mean over seeds {', '.join(map(str, seeds))}, step {end}); the {LABELS[d]} "
            "mean curve over the same seeds is "
            + ", ".join(f"{mean_curve[t]:.4f} at step {t}" for t in grid)
            + f": first at or above it at step {reach if reach is not None else 'never'}. "
            "Per seed (against the same seed's naive 1:1): "
            + ", ".join(str(t) if t is not None else "never" for t in per_seed)
            + ". The curves evaluate one noise per held-out pair, so each point carries "
            "an evaluation SE of about 0.006 per reward.",
            "",
        ]
    # the arms beyond the six (naive 2:1): shown, not part of the verdicts
    extra = [a for a in finals if a not in expected]
    if extra:
        out += [
            "**Extra arms** (run on fewer seeds; not part of the verdicts above): change from "
            f"base, and {LABELS[d]} minus the arm, on the seeds both ran.",
            "",
            "| arm | seeds | Δ identity per seed | Δ prompt per seed | "
            f"{LABELS[d]} minus it, identity | prompt |",
            "|---|---:|---|---|---|---|",
        ]
        for a in extra:
            diff = differences(finals[d], finals[a], per_pair) if d in finals else None
            vs = [_seed_cells(diff[r]) for r in REWARDS] if diff else ["-", "-"]
            out.append(
                f"| {LABELS[a]} | {len(finals[a])} | {_seed_cells(change[a]['identity'])} | "
                f"{_seed_cells(change[a]['prompt'])} | {vs[0]} | {vs[1]} |"
            )
        out.append("")
    # 5. conflicted samples
    if conflict:
        allv = [v for vs in conflict.values() for v in vs]
        out += [
            f"**5. Share of conflicted samples** (above the group mean on one reward, below on "
            f"the other), mean over training: {100 * np.mean(allv):.1f} % over all "
            f"{len(allv)} runs (range {100 * min(allv):.1f}-{100 * max(allv):.1f} %), "
            f"against the paper's {100 * PAPER_CONFLICT:.1f} %. Per arm: "
            + ", ".join(f"{LABELS[a]} {100 * np.mean(v):.1f} %" for a, v in conflict.items())
            + ".",
            "",
        ]
        verdict["5"] = f"{100 * np.mean(allv):.1f} % vs 50.2 %"
    return "\n".join(out), verdict


#: the paper's ablation as paired contrasts: (arm, minus arm, what the difference isolates)
COMPONENTS = [
    ("sars", "naive_1_1", "SARS, on static 1:1 weights"),
    ("tdw", "naive_1_1", "TDW, with linear shaping"),
    ("sars_tdw", "tdw", "SARS, on TDW weights"),
    ("sars_tdw", "sars", "TDW, with SARS shaping"),
    ("naive_0.5_0.5", "naive_1_1", "nothing: the same update under Adam (run-to-run drift)"),
]


def components_section(finals: dict[str, dict[int, dict[str, np.ndarray]]], per_pair: int) -> str:
    """What each part of Customized-GRPO adds, as paired contrasts between arms (the
    paper's ablation): for each row of :data:`COMPONENTS` with both arms finished, ``a - b``
    image by image on the seeds both ran, per seed (* at >= 2 SE over the pairs) and pooled
    (:func:`pooled`, * at the t quantile). The 0.5:0.5 - 1:1 row is the yardstick: Adam
    makes the two the same algorithm, so its size is the drift between runs alone."""
    rows = []
    for a, b, what in COMPONENTS:
        if a not in finals or b not in finals:
            continue
        diff = differences(finals[a], finals[b], per_pair)
        pool = [_fmt(pooled(diff[r])) for r in REWARDS]
        cells = [_seed_cells(diff[r]) for r in REWARDS]
        rows.append(
            f"| {LABELS[a]} minus {LABELS[b]} | {what} | {len(diff['identity'])} | "
            + " | ".join(pool + cells)
            + " |"
        )
    if not rows:
        return ""
    return "\n".join(
        [
            "### What each part adds (paired contrasts between arms)",
            "",
            "| contrast | isolates | seeds | Δ identity pooled | Δ prompt pooled | "
            "per seed identity | per seed prompt |",
            "|---|---|---:|---:|---:|---|---|",
            *rows,
            "",
        ]
    )


def against_section(
    finals: dict[str, dict[int, dict[str, np.ndarray]]],
    other: dict[str, dict[int, dict[str, np.ndarray]]],
    per_pair: int,
    name: str,
) -> str:
    """Each arm's runs minus the same arm and seed of another sweep (``--against``): the
    paired difference image by image (same pairs, same noise), per seed with its SE over the
    pairs (* at >= 2 SE) and pooled over the seeds both hold (:func:`pooled`)."""
    out = [
        f"### Paired against `{name}` (this sweep's run minus the same arm and seed there)",
        "",
        "| arm | seeds both ran | Δ identity pooled | Δ prompt pooled | per seed identity | "
        "per seed prompt |",
        "|---|---:|---:|---:|---|---|",
    ]
    rows = []
    for a in finals:
        diff = differences(finals[a], other.get(a, {}), per_pair)
        if not diff["identity"]:
            continue
        pool = [_fmt(pooled(diff[r])) for r in REWARDS]
        cells = [_seed_cells(diff[r]) for r in REWARDS]
        seeds = ", ".join(map(str, diff["identity"]))
        rows.append(f"| {LABELS[a]} | {seeds} | " + " | ".join(pool + cells) + " |")
    if not rows:  # said in the report, not raised: the rest of the report still stands
        print(f"--against {name}: no arm and seed finished at this --steps in both", flush=True)
        return f"{out[0]}\n\nNo arm and seed finished at this `--steps` in both sweeps.\n"
    return "\n".join(out + rows + [""])


def check_against(other: Path, base: dict) -> None:
    """Refuses (before any training) a ``--against`` sweep whose base evaluation is not this
    one's: other held-out pairs or noise cannot be paired image by image."""
    path = other / "base_eval" / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"--against {other}: no {path}; point it at another sweep's --out")
    theirs = json.loads(path.read_text())["per_image"]
    if any(not np.array_equal(theirs.get(r), base["per_image"][r]) for r in REWARDS):
        raise SystemExit(
            f"--against {other}: its base evaluation is not this sweep's (other held-out "
            "pairs, noise or --eval-images), so its runs cannot be paired image by image"
        )


def finished_steps(out: Path) -> dict[Path, int | None]:
    """Every run folder of a sweep (``out/<arm>/seed<k>``) and the step its final
    evaluation is of (None: not evaluated)."""
    return {d: _evaluated_step(d / "eval_final") for d in sorted(out.glob("*/seed*"))}


def runs_at(finished: dict[Path, int | None], arm: str, steps: int) -> dict[int, Path]:
    """Seed -> run folder of ``arm``'s runs finished at ``steps`` (of :func:`finished_steps`)."""
    return {
        int(d.name[4:]): d for d, step in finished.items() if d.parent.name == arm and step == steps
    }


def against_finals(
    other: Path, arms: list[str], steps: int
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """The other sweep's final per-image rewards of ``arms``, its runs finished at ``steps``."""
    finished = finished_steps(other)
    return {a: {k: per_image(d) for k, d in runs_at(finished, a, steps).items()} for a in arms}


def budget_eval(run_dir: Path | None, args: argparse.Namespace) -> Path:
    """The budget test's evaluation on ``--budget-images`` noises per pair of a run of the
    default arm (``run_dir``) or of the base (None), in ``eval_budget/``; the draws the
    4-noise evaluation made (the same seeds) are linked, not drawn again."""
    import shutil

    from cgrpo.eval.protocol import EvalConfig, eval_command

    src = (run_dir / "eval_final") if run_dir else (args.out / "base_eval")
    out = (run_dir / "eval_budget") if run_dir else (args.out / "base_eval" / "budget")
    if run_dir:
        set_aside(out, args.steps)
    if not (out / "metrics.json").is_file():
        if not (out / "images").exists():  # the draws' source (model, checkpoint) goes first
            if not (src / "images").is_dir():  # (a record keeps no image)
                raise SystemExit(
                    f"{src} has no images to extend to --budget-images {args.budget_images} "
                    "(a run restored from --records): pass --budget-images 0, the budget "
                    "test then reads the final evaluation"
                )
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / "source.json", out / "source.json")
            shutil.copytree(src / "images", out / "images", copy_function=os.link)
        cfg = EvalConfig(
            out_dir=str(out), images_per_pair=args.budget_images,
            prompts_per_subject=args.eval_prompts,
        )  # fmt: skip
        if run_dir:
            eval_command(cfg, run_dir, None, True)
        else:
            eval_command(cfg, None, args.out / "base_eval" / "model.yaml", True)
    return out / "metrics.json"


def copy_scores(args: argparse.Namespace) -> dict[str, float]:
    """What pasting the reference scores: each held-out pair's reference taken as its
    generated image, scored by the run's rewards (the paper: DINO 1.0, prompt 0.50)."""
    import torch

    from cgrpo.eval.evaluator import eval_pairs_of
    from cgrpo.run.build import build_data, build_rewards

    path = args.out / "base_eval" / "copy.json"
    if path.is_file():
        return json.loads(path.read_text())
    cfg = run_config(args.out / "base_eval", DEFAULT_ARM, 0, args)
    pairs, rewards = eval_pairs_of(build_data(cfg)), build_rewards(cfg, "cpu")
    scores: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(pairs), 64):
        refs = pairs.references[i : i + 64]
        for k, v in rewards.score(refs, pairs.prompts[i : i + 64], refs).items():
            scores.setdefault(k, []).append(v)
    out = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
    path.write_text(json.dumps(out))
    return out


def _record_dirs(root: Path) -> list[Path]:
    """The run folders (``<arm>/seed<k>``) under ``root``."""
    return sorted(d for a in ARMS for d in (root / a).glob("seed*") if d.is_dir())


def restore_records(args: argparse.Namespace) -> None:
    """Every run (and the base evaluation) recorded under ``--records`` and absent from
    ``--out``, copied in: the sweep skips them and the report reads them."""
    if not args.records:
        return
    n = sum(
        bool(restore_record(d, args.out / d.relative_to(args.records), RUN_RECORD))
        for d in _record_dirs(args.records)
    )
    base = restore_record(args.records / "base_eval", args.out / "base_eval", BASE_RECORD)
    if n or base:
        print(f"restored from {args.records}: {n} runs" + (", the base" if base else ""))


def keep_records(args: argparse.Namespace) -> None:
    """The record of every run finished at ``--steps`` with this command's settings, and of
    the base evaluation, saved under ``--records`` (nothing without it). A run of other
    settings is not recorded; a record of other settings is not replaced (refused)."""
    if not args.records:
        return
    for d in _record_dirs(args.out):
        if not _done(d, args.steps):
            continue
        cfg = run_config(d, d.parent.name, int(d.name.removeprefix("seed")), args)
        if config_changes(saved_config(d / "config.yaml"), cfg):
            print(f"not recorded: {d} (trained with other settings)", flush=True)
            continue
        _keep(d, args.records / d.relative_to(args.out), RUN_RECORD, "config.yaml", cfg)
    base, record = args.out / "base_eval", args.records / "base_eval"
    if (base / "metrics.json").is_file():
        made = json.loads((base / "metrics.json").read_text())
        kept = json.loads(m.read_text()) if (m := record / "metrics.json").is_file() else made
        # (the record's evaluation against --out's, which base_eval checked against args)
        sizes = [k for k in ("pairs", "images_per_pair") if kept[k] != made[k]]
        cfg = run_config(base, DEFAULT_ARM, 0, args)
        _keep(base, record, BASE_RECORD, "model.yaml", cfg, ("run.",), sizes)


def _keep(
    run_dir: Path, record: Path, files: list[str], config: str, cfg, ignore=(), differ=()
) -> None:
    """``save_record``, refused where ``record`` holds a config other than ``cfg`` (or
    ``differ`` names other differences)."""
    keys = [*differ]
    if (record / config).is_file():
        keys += config_changes(saved_config(record / config), cfg, ("run.out_dir", *ignore))
    if keys:
        raise SystemExit(
            f"{record} records a run of other settings ({', '.join(keys)} differ) than "
            f"{run_dir}: use another --records folder for this sweep"
        )
    save_record(run_dir, record, files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=80, help="training steps per run")
    ap.add_argument(
        "--eval-every", type=int, default=20, help="steps between the runs' held-out curve points"
    )
    ap.add_argument(
        "--arms", nargs="*", default=PRIMARY, choices=list(ARMS),
        help="arms to train (default: the six; naive_2_1 is the extra arm); the report reads "
        "every arm with finished runs under --out",
    )  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at a time (one thread each)")
    ap.add_argument("--out", type=Path, default=Path("runs/competitive_degradation"))
    ap.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--report-only", action="store_true", help="only (re)write the report")
    ap.add_argument(
        "--eval-images", type=int, default=4, help="noises per held-out pair in the final eval"
    )
    ap.add_argument(
        "--eval-prompts", type=int, default=0,
        help="prompts per held-out subject in the final (and base, budget) evaluation; 0: the "
        "runs' data.eval_prompts_per_subject (32: 256 pairs), which the curves always use",
    )  # fmt: skip
    ap.add_argument(
        "--budget-images",
        type=int,
        default=16,
        help="noises per pair of the budget test's evaluation of the default arm (0: the final "
        "evaluation's)",
    )
    ap.add_argument(
        "--notes", type=Path, default=None, help="markdown appended to the report (the reading)"
    )
    ap.add_argument(
        "--against", type=Path, default=None,
        help="another sweep's --out (e.g. the other schedule): the report adds each arm and "
        "seed's paired difference, this run minus that one",
    )  # fmt: skip
    ap.add_argument(
        "--records", type=Path, default=None,
        help="a folder that outlives the machine (e.g. committed): each finished run's "
        "figures (config, curve, evaluation summaries; no checkpoint or image) are saved "
        "there, and runs recorded there are copied into --out and not trained again",
    )  # fmt: skip
    ap.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args()
    if args.eval_images < 1 or args.eval_prompts < 0 or args.budget_images < 0:
        ap.error("--eval-images must be >= 1, --eval-prompts and --budget-images >= 0")
    if args.one:
        arm, seed = args.one[0], int(args.one[1])
        train_and_eval(args.out / arm / f"seed{seed}", arm, seed, args)
        return
    restore_records(args)
    base = json.loads(base_eval(args).read_text())
    if args.against:
        check_against(args.against, base)
    failed: SystemExit | None = None
    if not args.report_only:
        runs = schedule(args.arms, list(range(args.seeds)))
        try:  # a failed run stops nothing: the report is written from the finished ones
            run_all([partial(launch, args.out / a / f"seed{k}", a, k, args) for a, k in runs],
                    args.jobs)  # fmt: skip
        except SystemExit as e:
            failed = e
    from cgrpo.experiments.report import ArmResult, write_experiment_report

    arms, finals, curves, conflict = [], {}, {}, {}
    finished = finished_steps(args.out)
    elsewhere = [  # finished at another budget: not this report's
        f"{d.parent.name} {d.name} (step {step})"
        for d, step in finished.items()
        if step not in (None, args.steps)
    ]
    if elsewhere:
        print(f"not in this --steps {args.steps} report: " + ", ".join(elsewhere), flush=True)
    for arm in ARMS:
        dirs = runs_at(finished, arm, args.steps)
        if not dirs:
            continue
        for k, d in dirs.items():  # (restored, or of arms and seeds this command did not run)
            check_config(d, arm, k, args)
        runs = [final_result(d, base) for d in dirs.values()]
        arms.append(ArmResult(arm, LABELS[arm], runs))
        finals[arm] = {k: per_image(d) for k, d in dirs.items()}
        curves[arm] = {
            k: {t: sum(v[r] for r in REWARDS) for t, v in r.curve}
            for k, r in zip(dirs, runs, strict=True)
        }
        conflict[arm] = [float(np.mean([c[1] for c in r.conflict])) for r in runs]
    if not arms:
        if failed is not None:
            raise failed
        raise SystemExit(f"no finished run under {args.out}; run without --report-only first")
    base_images = {r: np.asarray(base["per_image"][r], np.float64) for r in REWARDS}
    budget = None
    if args.budget_images and DEFAULT_ARM in finals:
        dirs = {k: args.out / DEFAULT_ARM / f"seed{k}" for k in finals[DEFAULT_ARM]}
        paths = [budget_eval(None, args)] + [budget_eval(d, args) for d in dirs.values()]
        b16, *runs16 = [json.loads(p.read_text()) for p in paths]
        budget = {k: paired_changes(m, b16) for k, m in zip(dirs, runs16, strict=True)}
    # the verdicts' arms and seeds: the six of --arms; others (naive 2:1) are shown apart
    expected = {a: args.seeds for a in args.arms if a in PRIMARY}
    claims, verdict = claims_section(
        finals, base_images, curves, conflict, args.eval_images, expected, budget,
        args.budget_images,
    )  # fmt: skip
    copy, b, t = copy_scores(args), base["overall"], base["truth"]["overall"]
    reference = (
        "Reference points on the same held-out pairs: "
        + "; ".join(
            f"{name} identity {v['identity']:.4f}, prompt {v['prompt']:.4f}"
            for name, v in (("base", b), ("ground truth", t), ("pasting the reference", copy))
        )
        + "."
    )
    command = "python benchmarks/competitive_degradation.py " + shlex.join(sys.argv[1:])
    curve_pairs = final_pairs(run_config(args.out / "base_eval", DEFAULT_ARM, 0, args), None)
    evaluation = (
        f"Final figures: `cgrpo eval` of each run's last checkpoint on the {base['pairs']} "
        f"held-out pairs x {args.eval_images} noises = {base['images']} images (ODE sampling, "
        "seeded noise per image), paired with one evaluation of the base on the same noise. "
        f"Curves: the runs' own held-out evaluations ({curve_pairs} pairs, one noise "
        "each; step 0 = base)."
    )
    components = components_section(finals, args.eval_images)
    if components:
        claims += "\n\n" + components
    if args.against:
        other = against_finals(args.against, list(finals), args.steps)
        claims += "\n\n" + against_section(finals, other, args.eval_images, str(args.against))
    notes = args.notes.read_text() if args.notes else ""
    write_experiment_report(
        arms, args.doc, command.strip(), evaluation, "\n\n".join([reference, claims, notes])
    )
    keep_records(args)
    print("verdicts: " + "; ".join(f"{k}: {v}" for k, v in verdict.items()))
    print(f"wrote {args.doc}")
    if failed is not None:
        raise failed


if __name__ == "__main__":
    main()
