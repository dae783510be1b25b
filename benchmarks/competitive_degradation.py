"""The competitive-degradation experiment on the embedded world (CPU).

Five arms with the same budget (the embedded default config, ``--steps`` steps each):

=================  ==========  =============================
arm                shaping     weighting
=================  ==========  =============================
naive 1:1          linear      static, identity 1, prompt 1
naive 1:1.5        linear      static, identity 1, prompt 1.5
SARS               sars        static, identity 1, prompt 1
TDW                linear      tdw
SARS + TDW         sars        tdw   (Customized-GRPO)
=================  ==========  =============================

Each arm runs ``--seeds`` seeds; every run is a normal ``cgrpo train`` run folder under
``--out/<arm>/seed<k>`` (metrics.csv, eval.json, images), so ``cgrpo compare`` reads them
too. Finished runs (eval.json with a trained entry) are skipped, so the command resumes.
At the end it writes the report (``--doc``, default docs/results.md) with the table of
held-out means of the two competing rewards (``method.pair``, mean +- std over seeds),
the Pareto scatter, the curves along training and the share of conflicted samples per
step.

    python benchmarks/competitive_degradation.py [--seeds 3] [--steps 40] [key=value ...]
    python benchmarks/competitive_degradation.py --report-only
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from cgrpo.compare import RunResult, load_run
from cgrpo.config import load_config
from cgrpo.evaluation import EvalConfig, eval_command
from cgrpo.experiment_report import ArmResult, write_experiment_report
from cgrpo.summary import paired_changes
from cgrpo.train_config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.trainer import GRPOTrainer

#: The embedded rewards with prompt weighted 1.5 (weights live in ``rewards``).
PROMPT_1_5 = (
    "rewards={identity: {kind: embedded_identity, weight: 1.0}, "
    "prompt: {kind: embedded_prompt, weight: 1.5}}"
)
ARMS: dict[str, list[str]] = {
    "naive_1_1": ["method.shaping=linear", "method.weighting=static"],
    "naive_1_1.5": ["method.shaping=linear", "method.weighting=static", PROMPT_1_5],
    "sars": ["method.shaping=sars", "method.weighting=static"],
    "tdw": ["method.shaping=linear", "method.weighting=tdw"],
    "sars_tdw": ["method.shaping=sars", "method.weighting=tdw"],
}
LABELS = {
    "naive_1_1": "naive GRPO 1:1",
    "naive_1_1.5": "naive GRPO 1:1.5",
    "sars": "SARS only",
    "tdw": "TDW only",
    "sars_tdw": "SARS + TDW",
}


def run_one(out: Path, arm: str, seed: int, steps: int, extra: list[str]) -> None:
    run_dir = out / arm / f"seed{seed}"
    if _finished(run_dir):
        print(f"[skip] {run_dir} (finished)", flush=True)
        return
    overrides = [
        f"run.out_dir={run_dir}",
        f"run.seed={seed}",
        f"run.steps={steps}",
        f"run.eval_every={max(1, steps // 4)}",
        "run.checkpoint_every=10",
        "run.keep_last=1",
        f"run.image_every={steps}",
        *ARMS[arm],
        *extra,
    ]
    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, overrides)
    resume = (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir())
    t0 = time.time()
    GRPOTrainer(cfg).train(resume=resume, quiet=True)
    r = load_run(run_dir)  # eval.json: base and trained held-out means of every reward
    changes = ", ".join(f"{k} {r.base[k]:.4f} -> {v:.4f}" for k, v in r.trained.items())
    print(f"[done] {arm} seed {seed} in {time.time() - t0:.0f} s: {changes}", flush=True)


def _finished(run_dir: Path) -> bool:
    """A run with its final evaluation (runs still training, maybe in another process,
    are left out)."""
    ev = run_dir / "eval.json"
    return ev.is_file() and "trained" in json.loads(ev.read_text())


def final_eval(run_dir: Path, base_dir: Path, images_per_pair: int) -> RunResult:
    """The run's end point, measured precisely: ``cgrpo eval`` of its last checkpoint on
    the 256 held-out pairs x ``images_per_pair`` noises, paired with the base model's
    images (same pairs, same noise; the paired changes from the two metrics.json's
    per-image values); the curves come from the run's own evaluations."""
    out = run_dir / "eval_final"
    if not (out / "metrics.json").is_file():
        eval_command(
            EvalConfig(out_dir=str(out), images_per_pair=images_per_pair), run_dir, None, True
        )
    run = load_run(run_dir)
    final, base = load_run(out), load_run(base_dir)
    run.trained, run.base, run.pairs = final.trained, base.trained, final.pairs
    run.name = run_dir.name
    run.paired = paired_changes(
        json.loads((out / "metrics.json").read_text()),
        json.loads((base_dir / "metrics.json").read_text()),
    )
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--only-seed", type=int, default=None, help="train only this seed (parallel runs)"
    )
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--out", type=Path, default=Path("runs/competitive_degradation"))
    ap.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--report-only", action="store_true", help="only (re)write the report")
    ap.add_argument(
        "--eval-images", type=int, default=4, help="images per held-out pair in the final eval"
    )
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args()
    if not args.report_only:
        seeds = [args.only_seed] if args.only_seed is not None else range(args.seeds)
        for seed in seeds:  # seed-major: every arm gets seed 0 before seed 1
            for arm in args.arms:
                run_one(args.out, arm, seed, args.steps, args.overrides)
    finished = {
        arm: [d for d in sorted((args.out / arm).glob("seed*")) if _finished(d)]
        for arm in args.arms
    }
    first = next((d[0] for d in finished.values() if d), None)
    if first is None:
        raise SystemExit(f"no finished run under {args.out}; run without --report-only first")
    base_dir = args.out / "base_eval"
    if not (base_dir / "metrics.json").is_file():  # the runs' own starting model
        cfg = EvalConfig(out_dir=str(base_dir), images_per_pair=args.eval_images)
        eval_command(cfg, None, first / "config.yaml", True)
    arms = [
        ArmResult(arm, LABELS[arm], [final_eval(d, base_dir, args.eval_images) for d in done])
        for arm, done in finished.items()
        if done
    ]
    command = "python benchmarks/competitive_degradation.py " + shlex.join(sys.argv[1:])
    n = json.loads((base_dir / "metrics.json").read_text())["images"]
    evaluation = (
        f"Final figures: `cgrpo eval` of each run's last checkpoint on the 8 held-out "
        f"subjects x 32 prompts x {args.eval_images} noises = {n} images (ODE sampling, "
        "seeded noise per image), paired with the base model's images on the same noise; "
        "curves: the runs' own held-out evaluations (256 pairs, one noise each)."
    )
    write_experiment_report(arms, args.doc, command.strip(), evaluation)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
