"""Issue 28 item 1: the learning-rate sweep that looks for the step size at which naive 1:1
ends with identity up and prompt below base in every seed, with SARS + TDW beside it.

Each cell is one learning rate, with or without the KL term (``grpo.kl_coef``), and one
``benchmarks/competitive_degradation.py`` sweep of the arms ``naive_1_1`` and ``sars_tdw``
x 2 seeds on the embedded default (branch schedule), one run at a time, one thread each:

    runs/lr_sweep/<cell>/                 the cell's --out (base_eval/, <arm>/seed<k>/)
    runs/lr_sweep/<cell>/report.md        the cell's report (--doc), rewritten after the cell
    runs/lr_sweep/sweep.log               this driver's log and the sweeps' output, appended
    benchmarks/records/lr_sweep/<cell>/   each finished run's figures (--records; small,
                                          kept outside runs/ so they can be committed)

Cells run in the order of :data:`CELLS` (the most informative first). Everything is
resumable: run the same command again and finished runs are skipped, stopped ones resume
from their last checkpoint (every 10 steps), recorded ones are restored. Each cell is locked
while it runs (``runs/lr_sweep/<cell>.lock``): a second driver started beside a live one (on
the other core) skips the cells the first holds and takes the next one.

Budget per run: 80 steps (``--steps``). That is the embedded default's run.steps and the
branch steps "400 s of one thread" bought in docs/learning_efficiency*.md (85-92 steps
without KL, 75 with KL 0.04) on an idle core, and the budget of the lr 2e-5 sweep in
docs/results.md, so the lr 2e-5 no-KL cell repeats that sweep's first two seeds of these
two arms (its figures there already serve; the cell is last). Curves every 20 steps (256
pairs, one noise); the final evaluation 256 held-out pairs x 2 noises, paired with the
cell's base evaluation on the same noise (as the issue's 400 s table).

    python benchmarks/lr_sweep.py run            # all cells, in order (resumable)
    python benchmarks/lr_sweep.py run --cells lr2e-4_kl0.04 lr1e-4_kl0.04
    python benchmarks/lr_sweep.py summary        # table of every finished run (markdown)
    python benchmarks/lr_sweep.py cells          # the cells in order, with their state

The same cells from another base (issue 28 item 3: the wide base, scored on the shipped
base's held-out pairs so both bases' runs are paired with the same truth):

    python benchmarks/lr_sweep.py run --cells lr1e-4_kl0.04 --out runs/lr_sweep_wide \
        --records benchmarks/records/lr_sweep_wide \
        --set model.weights=runs/base_wide/base.safetensors data.eval_split=shipped

In the background (one core; it outlives the shell):

    mkdir -p runs/lr_sweep && setsid nohup nice -n 5 .venv/bin/python benchmarks/lr_sweep.py \
        run >> runs/lr_sweep/sweep.log 2>&1 < /dev/null &
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cgrpo.experiments.degradation import LABELS  # arm -> label, every arm of the experiment

ROOT = Path(__file__).resolve().parent.parent
ARMS = ["naive_1_1", "sars_tdw"]  #: the sweep's arms; --arms takes any of the experiment's
REWARDS = ("identity", "prompt")

#: (cell, lr, kl_coef) in the order they run: the large steps with KL first (where the
#: issue saw naive 1:1 degrade), then 6e-5 with KL, the no-KL variants, and lr 2e-5 last
#: (its no-KL cell repeats docs/results.md's 80-step runs of these arms, seeds 0-1)
CELLS: list[tuple[str, str, str]] = [
    ("lr2e-4_kl0.04", "2.0e-4", "0.04"),
    ("lr1e-4_kl0.04", "1.0e-4", "0.04"),
    ("lr6e-5_kl0.04", "6.0e-5", "0.04"),
    ("lr2e-4_kl0", "2.0e-4", "0.0"),
    ("lr1e-4_kl0", "1.0e-4", "0.0"),
    ("lr6e-5_kl0", "6.0e-5", "0.0"),
    ("lr2e-5_kl0.04", "2.0e-5", "0.04"),
    ("lr2e-5_kl0", "2.0e-5", "0.0"),
]
CELL = {c[0]: c for c in CELLS}


def log(msg: str) -> None:
    print(f"[lr_sweep {time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


def cell_command(args: argparse.Namespace, cell: str) -> list[str]:
    """The competitive-degradation sweep of one cell."""
    _, lr, kl = CELL[cell]
    out = args.out / cell
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "competitive_degradation.py"),
        "--arms", *args.arms, "--seeds", str(args.seeds), "--steps", str(args.steps),
        "--eval-every", str(args.eval_every), "--eval-images", str(args.eval_images),
        "--eval-prompts", "0", "--budget-images", "0", "--jobs", str(args.jobs),
        "--out", str(out), "--doc", str(out / "report.md"),
    ]  # fmt: skip
    if args.records:
        cmd += ["--records", str(args.records / cell)]
    return [*cmd, *args.set, f"optim.lr={lr}", f"grpo.kl_coef={kl}"]


def _hold(path: Path):
    """An exclusive lock on ``path`` (with this process's pid written in it), or None when
    another live process holds it."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f


def run(args: argparse.Namespace) -> int:
    """Each cell in turn. A cell is locked while its sweep runs (``<out>/<cell>.lock``), so
    a second driver started beside this one (e.g. on the other core) takes the next cell
    nobody holds instead of racing this one on the same runs."""
    args.out.mkdir(parents=True, exist_ok=True)
    cells = args.cells or [c[0] for c in CELLS]
    log(f"start (pid {os.getpid()}): cells {', '.join(cells)}; {args.steps} steps, "
        f"{args.seeds} seeds, arms {', '.join(args.arms)}, {args.jobs} at a time")  # fmt: skip
    failed = []
    for cell in cells:
        lock = _hold(args.out / f"{cell}.lock")
        if lock is None:
            log(f"cell {cell}: another driver holds {args.out / (cell + '.lock')}; skipped")
            continue
        cmd = cell_command(args, cell)
        log(f"cell {cell}: " + " ".join(cmd[1:]))
        t0 = time.time()
        code = subprocess.call(cmd, cwd=ROOT)
        lock.close()
        log(f"cell {cell}: exit {code} after {time.time() - t0:.0f} s")
        if code != 0:
            failed.append(cell)
    log("finished" + (f"; failed cells: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# --- the summary -----------------------------------------------------------------------


def _final(run_dir: Path, steps: int) -> dict | None:
    """The run's final evaluation (``eval_final/metrics.json``) if it is of step ``steps``."""
    from cgrpo.experiments.run_folders import done

    if not done(run_dir, steps):
        return None
    return json.loads((run_dir / "eval_final" / "metrics.json").read_text())


def _pm(v: tuple[float, float], pct: bool = False) -> str:
    m, se = v
    if pct:
        return f"{100 * m:+.1f} ± {100 * se:.1f} %"
    return f"{m:+.4f} ± {se:.4f}"


def _star(v: tuple[float, float], crit: float = 2.0) -> str:
    from cgrpo.experiments.statistics import sign

    s = sign(v[0], v[1], crit)
    return "+*" if s > 0 else "-*" if s < 0 else ("+" if v[0] > 0 else "-")


def _pooled_gap(per_seed: dict[int, np.ndarray], e: np.ndarray) -> tuple[float, float]:
    """The gap closed pooled over seeds, as :func:`cgrpo.experiments.statistics.pooled`
    pools a change: the mean of the seeds' ``g_s = mean(d_s) / mean(e)`` (``e``: truth -
    base per pair, shared by the seeds), SE^2 = var_s(g_s) / n + the delta-method SE of
    the seed-averaged differences (:func:`cgrpo.eval.summary.gap_closed`'s) squared."""
    ds = list(per_seed.values())
    gs = np.array([d.mean() / e.mean() for d in ds])
    dbar = np.mean(ds, 0)
    g = float(gs.mean())
    pairs = (dbar - g * e).std(ddof=1) / (np.sqrt(dbar.size) * abs(e.mean()))
    return g, float(np.sqrt(gs.var(ddof=1) / len(gs) + pairs**2))


def cell_rows(out: Path, cell: str, steps: int, arms: list[str] = ARMS) -> list[list[str]]:
    """The summary rows of one cell: per arm, each finished seed and the pooled mean."""
    from cgrpo.eval.summary import gap_closed, pair_means, paired_changes
    from cgrpo.experiments.statistics import pooled, pooled_criterion

    base_path = out / cell / "base_eval" / "metrics.json"
    if not base_path.is_file():
        return []
    base = json.loads(base_path.read_text())
    truth = base.get("truth") or {}
    k = int(base.get("images_per_pair") or 1)
    e = {  # truth - base per pair: the gap, the same for every run of the cell
        r: pair_means(np.subtract(truth["per_image"][r], base["per_image"][r]), k)
        for r in REWARDS
        if r in truth.get("per_image", {})
    }
    rows = []
    for arm in arms:
        diffs: dict[str, dict[int, np.ndarray]] = {r: {} for r in REWARDS}
        for d in sorted((out / cell / arm).glob("seed*")):
            final = _final(d, steps)
            if final is None:
                continue
            seed = int(d.name.removeprefix("seed"))
            ch, gap = paired_changes(final, base), gap_closed(final, base, truth)
            for r in REWARDS:
                diffs[r][seed] = pair_means(
                    np.subtract(final["per_image"][r], base["per_image"][r]), k
                )
            pattern = "/".join(_star(ch[r]) for r in REWARDS)
            rows.append([
                cell, LABELS[arm], f"seed {seed}", *(_pm(ch[r]) for r in REWARDS),
                *(_pm(gap[r], pct=True) if r in gap else "-" for r in REWARDS), pattern,
            ])  # fmt: skip
        n = len(diffs["identity"])
        if n >= 2:
            p = {r: pooled(diffs[r]) for r in REWARDS}
            crit = pooled_criterion(n)
            g = {r: _pooled_gap(diffs[r], e[r]) for r in REWARDS if r in e}
            pattern = "/".join(_star(p[r][:2], crit) for r in REWARDS)
            rows.append([
                cell, LABELS[arm], f"pooled ({n})", *(_pm(p[r][:2]) for r in REWARDS),
                *(_pm(g[r], pct=True) if r in g else "-" for r in REWARDS), pattern,
            ])  # fmt: skip
    return rows


def summary(args: argparse.Namespace) -> int:
    cells = args.cells or [c[0] for c in CELLS]
    rows = [r for c in cells for r in cell_rows(args.out, c, args.steps, args.arms)]
    if not rows:
        print(f"no finished run under {args.out} at {args.steps} steps")
        return 1
    print(
        f"Finished runs under {args.out} at {args.steps} steps: paired change from the cell's "
        "base on the same 256 held-out pairs x noises (± SE over pairs; pooled: the seeds' "
        "mean, SE from the seed spread plus the pairs, cgrpo.experiments.statistics.pooled), "
        "and the gap to the truth closed, (trained - base) / (truth - base) (per seed: delta "
        "method, cgrpo.eval.summary.gap_closed; pooled: the seeds' mean, SE as for the change). "
        "Pattern: identity/prompt sign, * where |change| >= 2 SE (pooled: the t quantile).\n"
    )
    head = ["cell", "arm", "run", "Δ identity", "Δ prompt", "gap identity", "gap prompt",
            "id/prompt"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def cells_state(args: argparse.Namespace) -> int:
    """Each cell, its settings and how many of its runs have finished."""
    for cell, lr, kl in CELLS:
        n = sum(
            _final(d, args.steps) is not None
            for a in args.arms
            for d in (args.out / cell / a).glob("seed*")
        )
        print(f"{cell:16s} lr {lr:8s} KL {kl:5s} finished {n} of {len(args.arms) * args.seeds}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["run", "summary", "cells"])
    ap.add_argument("--cells", nargs="*", choices=list(CELL), help="cells (default: all, in order)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "lr_sweep")
    ap.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "records" / "lr_sweep",
                    help="records root (one folder per cell); '' for none")  # fmt: skip
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--eval-images", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=list(LABELS), default=ARMS,
                    help="arms to run or count (default: both)")  # fmt: skip
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="overrides of every run of every cell (e.g. another base: "
                    "model.weights=... data.eval_split=shipped; own --out, --records)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time within a cell, one core each (default 1)")  # fmt: skip
    args = ap.parse_args()
    if args.records is not None and str(args.records) in ("", "."):
        args.records = None
    return {"run": run, "summary": summary, "cells": cells_state}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
