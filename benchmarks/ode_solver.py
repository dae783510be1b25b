"""Steps against the Euler sampler (``sampler.ode_solver``): on the embedded world's base
model, drawn exactly as ``cgrpo eval`` draws (the held-out pairs, one seeded noise per
pair, 8-bit images), for each number of steps and solver: the RMSE to the 50-step Euler
image from the same noise, in 8-bit levels (mean, median and 90th percentile over the
images: a few images whose layout flips between nearby trajectories weigh on the mean),
and the held-out rewards (mean and paired
difference to the 50-step Euler image's, with its standard error over pairs).

Heun costs two model passes per step (one for the last), so it runs at equal passes:
``(N + 1) // 2`` steps against N of the others.

    python benchmarks/ode_solver.py [--pairs 64] [--steps 4 6 8 10 16] [--threads 1] \
        [--solvers euler dpm2m heun] [--reference-steps 50] [key=value ...]

``key=value``: overrides of the embedded config (e.g. ``sampler.shift=1``, or
``model.weights=...`` for another base).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from cgrpo.config.core import load_config
from cgrpo.eval.evaluator import EvalPairs, build_evaluator, eval_pairs_of
from cgrpo.run.build import build_data, build_policy, build_rewards
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.sampling.ode_solvers import ODE_SOLVERS, model_passes


def spread(pairs: EvalPairs, n: int) -> EvalPairs:
    """``n`` of the held-out pairs, evenly spaced (every subject, many prompts)."""
    idx = [round(i * len(pairs) / n) for i in range(min(n, len(pairs)))]
    return EvalPairs.from_lists(
        pairs.references[idx],
        [pairs.prompts[i] for i in idx],
        [pairs.subjects[i] for i in idx],
    )


def draw(cfg, policy, pairs, metrics, *, solver: str, steps: int):  # noqa: ANN001, ANN201
    """(images, {reward: per-image scores}, seconds) as cgrpo eval draws them."""
    ev = build_evaluator(
        cfg, pairs, metrics, images_per_pair=1, steps=steps, ode_solver=solver, batch_size=64
    )
    t0 = time.perf_counter()
    res = ev.run(policy, keep=range(len(pairs)))
    images = torch.stack([res.kept[j] for j in range(len(pairs))])
    return images, res.per_image, time.perf_counter() - t0


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std() / math.sqrt(len(x))) if len(x) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 10, 16])
    ap.add_argument("--solvers", nargs="+", default=list(ODE_SOLVERS), choices=ODE_SOLVERS)
    ap.add_argument("--reference-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the embedded config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, args.overrides)
    policy, metrics = build_policy(cfg, "cpu"), build_rewards(cfg, "cpu")
    pairs = spread(eval_pairs_of(build_data(cfg)), args.pairs)
    ref, ref_scores, sec = draw(cfg, policy, pairs, metrics, solver="euler",
                                steps=args.reference_steps)  # fmt: skip
    names = list(ref_scores)
    print(f"{len(pairs)} held-out pairs of {len(set(pairs.subjects))} subjects, shift "
          f"{cfg.sampler.shift}, {args.threads} thread(s); reference: euler "
          f"{args.reference_steps} steps ({sec:.1f} s), "
          + ", ".join(f"{n} {float(v.mean()):.4f}" for n, v in ref_scores.items()))  # fmt: skip
    head = ["solver", "steps", "passes", "RMSE to ref (8-bit) mean +- SE", "median", "p90"]
    head += [f"{n} (diff to ref +- SE)" for n in names] + ["s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n_steps in args.steps:
        for solver in args.solvers:
            steps = (n_steps + 1) // 2 if solver == "heun" else n_steps
            images, scores, sec = draw(cfg, policy, pairs, metrics, solver=solver, steps=steps)
            rmse = ((images - ref) ** 2).flatten(1).mean(1).sqrt() * 255
            cells = [solver, str(steps), str(model_passes(solver, steps))]
            cells.append("{:.2f} +- {:.2f}".format(*mean_se(rmse)))
            cells += [f"{float(rmse.quantile(q)):.2f}" for q in (0.5, 0.9)]
            for n in names:
                d, se = mean_se(scores[n] - ref_scores[n])
                cells.append(f"{float(scores[n].mean()):.4f} ({d:+.4f} +- {se:.4f})")
            cells.append(f"{sec:.1f}")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
