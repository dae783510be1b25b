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
it stopped. The report (``--doc``; docs/results.md for the default ``--out``,
``<out>/report.md`` for any other) is written from whatever has finished.

An experiment longer than a machine's life: ``--records DIR`` (a committed folder) keeps
each finished run's figures, without checkpoints or images, in one compressed file
(``DIR/<arm>/seed<k>.json.gz``, about 60 kB; ``DIR/base_eval.json.gz``); on a new machine
the same command unpacks them into ``--out`` and trains only what is not recorded.

The logic is :mod:`cgrpo.experiments` (``degradation``: the arms and settings;
``degradation_sweep``, ``degradation_records``, ``degradation_report``; ``claims``,
``contrasts``, ``statistics``); this script is its command line.

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
import shlex
import sys
from functools import partial
from pathlib import Path

from cgrpo.experiments.contrasts import check_against
from cgrpo.experiments.degradation import ARMS, PRIMARY, Settings, schedule
from cgrpo.experiments.degradation_records import keep_records, restore_records
from cgrpo.experiments.degradation_report import collect_runs, write_report
from cgrpo.experiments.degradation_sweep import base_eval, launch, train_and_eval
from cgrpo.experiments.sweep import run_all

#: the main experiment's run folder and its page of record (the report's default for it)
OUT, DOC = Path("runs/competitive_degradation"), Path("docs/results.md")


def parser() -> argparse.ArgumentParser:
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
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--doc", type=Path, default=None,
        help=f"the report (default: {DOC} for the default --out, <out>/report.md for any "
        "other, so a side sweep never rewrites the page of record)",
    )  # fmt: skip
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
        "there, one compressed file per run, and runs recorded there are unpacked into --out "
        "and not trained again",
    )  # fmt: skip
    ap.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    return ap


def one_command(settings: Settings, arm: str, seed: int) -> list[str]:
    """This script training and evaluating one run (``--one``) in its own process."""
    s = settings
    return [
        sys.executable, __file__, "--one", arm, str(seed), "--steps", str(s.steps),
        "--eval-every", str(s.eval_every), "--out", str(s.out),
        "--eval-images", str(s.eval_images), "--eval-prompts", str(s.eval_prompts),
        *s.overrides,
    ]  # fmt: skip


def sweep(settings: Settings, arms: list[str], seeds: int, *, jobs: int) -> SystemExit | None:
    """Train every run not finished, ``jobs`` at a time; the first failure, returned (a
    failed run stops nothing: the report is written from the finished ones)."""
    calls = [
        partial(launch, settings, a, k, command=one_command(settings, a, k))
        for a, k in schedule(arms, list(range(seeds)))
    ]
    try:
        run_all(calls, jobs)
    except SystemExit as e:
        return e
    return None


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if args.doc is None:
        args.doc = DOC if args.out.resolve() == OUT.resolve() else args.out / "report.md"
    if args.eval_images < 1 or args.eval_prompts < 0 or args.budget_images < 0:
        ap.error("--eval-images must be >= 1, --eval-prompts and --budget-images >= 0")
    settings = Settings(
        out=args.out, steps=args.steps, eval_every=args.eval_every, eval_images=args.eval_images,
        eval_prompts=args.eval_prompts, budget_images=args.budget_images,
        overrides=tuple(args.overrides), records=args.records,
    )  # fmt: skip
    if args.one:
        train_and_eval(settings, args.one[0], int(args.one[1]))
        return
    restore_records(settings)
    base = json.loads(base_eval(settings).read_text())
    if args.against:
        check_against(args.against, base)
    failed = None if args.report_only else sweep(settings, args.arms, args.seeds, jobs=args.jobs)
    runs = collect_runs(settings, base)
    if not runs.arms:
        if failed is not None:
            raise failed
        raise SystemExit(f"no finished run under {args.out}; run without --report-only first")
    verdict = write_report(
        settings, base, runs, doc=args.doc,
        command="python benchmarks/competitive_degradation.py " + shlex.join(sys.argv[1:]),
        # the verdicts' arms and seeds: the six of --arms; others (naive 2:1) are shown apart
        expected={a: args.seeds for a in args.arms if a in PRIMARY},
        notes=args.notes.read_text() if args.notes else "", against=args.against,
    )  # fmt: skip
    keep_records(settings)
    print("verdicts: " + "; ".join(f"{k}: {v}" for k, v in verdict.items()))
    print(f"wrote {args.doc}")
    if failed is not None:
        raise failed


if __name__ == "__main__":
    main()
