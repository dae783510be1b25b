"""Learning efficiency on the embedded world: rollout schedule x objective at one
wall-clock budget, several seeds, against a supervised reference.

Every arm is the embedded default (SARS + TDW, the same rewards) with its own
``sampler.schedule`` / ``method.objective`` (``--arms``, see ARMS). Each run trains until
``run.time_budget`` seconds of rollout + reward + update are spent (evaluation is not
counted), then its last checkpoint is evaluated with ``cgrpo eval`` on the 256 held-out
pairs x ``--eval-images`` noises, image by image against one shared evaluation of the base
(same pairs, same noise) and against the renderer's ground truth. Reported per arm:

* the share of the gap to the truth closed per reward, ``(trained - base) / (truth - base)``,
  with its paired SE, per seed and the mean over seeds;
* the paired change of each reward, and the steps taken;
* seconds per step by phase (sample, reward, update) from ``metrics.csv``;
* training reward vs training seconds (PNG, seed means of moving averages).

The ``supervised`` row is a calibration, not a method: flow-matching fine-tuning of the
base on ground-truth renders of random training pairs (no copy bias), for the same
budget, evaluated the same way.

Runs are ordinary run folders under ``--out/<arm>/seed<k>``; finished ones are skipped
and unfinished ones resume, so the command continues where it stopped. ``--jobs 2``
trains two runs at a time (one thread each on a 2-core machine).

    python benchmarks/learning_efficiency.py [--seeds 3] [--budget 300] [--jobs 2]
    python benchmarks/learning_efficiency.py --report-only

The logic is :mod:`cgrpo.experiments` (``efficiency``: the arms and runs; ``supervised``;
``efficiency_report``); this script is its command line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from functools import partial
from pathlib import Path

from cgrpo.experiments.efficiency import (
    ARMS,
    SEARCH,
    TITLE,
    base_eval,
    done,
    final_eval,
    train_one,
)
from cgrpo.experiments.efficiency_report import arm_figures, write_report
from cgrpo.experiments.sweep import run_all, run_logged


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    ap.add_argument(
        "--arms", nargs="*", default=[a for a in ARMS if a not in SEARCH], choices=list(ARMS)
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at a time")
    ap.add_argument("--out", type=Path, default=Path("runs/learning_efficiency"))
    ap.add_argument("--doc", type=Path, default=Path("docs/learning_efficiency.md"))
    ap.add_argument("--eval-images", type=int, default=2, help="noises per held-out pair")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--notes", type=Path, default=None, help="markdown appended to the report (the reading)"
    )
    ap.add_argument("--title", default=TITLE, help="the report's heading")
    ap.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    return ap


def launch(args: argparse.Namespace, arm: str, seed: int) -> None:
    """Train (this script's ``--one``, in a subprocess logging to ``train.log``) and
    evaluate one run; a finished one is skipped."""
    run_dir = args.out / arm / f"seed{seed}"
    if done(run_dir):
        print(f"[skip] {arm} seed {seed} (finished)", flush=True)
        return
    cmd = [
        sys.executable, __file__, "--one", arm, str(seed), "--budget", str(args.budget),
        "--out", str(args.out), "--eval-images", str(args.eval_images), *args.overrides,
    ]  # fmt: skip
    run_logged(cmd, run_dir, f"{arm} seed {seed}")


def main() -> None:
    args = parser().parse_args()
    if args.one:
        arm, seed = args.one[0], int(args.one[1])
        run_dir = args.out / arm / f"seed{seed}"
        train_one(run_dir, arm, seed, budget=args.budget, extra=args.overrides)
        final_eval(run_dir, args.eval_images)
        return
    base_path = base_eval(args.out, args.eval_images, args.overrides)
    if not args.report_only:
        jobs = [(a, k) for k in range(args.seeds) for a in args.arms]
        run_all([partial(launch, args, a, k) for a, k in jobs], args.jobs)
    base = json.loads(base_path.read_text())
    truth = base.get("truth")
    if truth is None:
        raise SystemExit(f"{base_path} has no ground truth: the embedded protocol has one")
    figs = []
    for arm in args.arms:
        dirs = [d for d in sorted((args.out / arm).glob("seed*")) if done(d)]
        if dirs:
            figs.append(arm_figures(arm, dirs, base=base, truth=truth))
    if not figs:
        raise SystemExit(f"no finished run under {args.out}; run without --report-only first")
    command = "python benchmarks/learning_efficiency.py " + shlex.join(sys.argv[1:])
    write_report(
        figs, args.doc, command.strip(),
        base=base, truth=truth, budget=args.budget, eval_images=args.eval_images,
        notes=args.notes.read_text() if args.notes else "", title=args.title,
    )  # fmt: skip
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
