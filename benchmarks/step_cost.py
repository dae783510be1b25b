"""Seconds per phase of a training step (sampling, rewards, update) on this machine.

Runs a few steps of the embedded default (or a YAML config) and prints the mean and
min seconds of each phase, the share of the step spent scoring rewards, and the
trainer's overhead as a ratio to the bare model passes the same step needs
(rollout forwards + update forwards/backwards on the same batch).

    python benchmarks/step_cost.py [--steps 5] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from cgrpo.config.core import load_config
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.train.trainer import GRPOTrainer


def bare_passes(trainer: GRPOTrainer) -> float:
    """Seconds of the model passes one step needs, with nothing else around them."""
    cfg = trainer.cfg
    refs, prompts = trainer.data.sample(cfg.data.prompts_per_step, trainer.state.data_rng)
    g = cfg.grpo.group_size
    cond = trainer.policy.encode_condition(refs, prompts).repeat_interleave(g)
    n = cond.batch_size
    x = torch.randn(n, *trainer.policy.latent_shape())
    sig = torch.full((n,), 0.5)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(cfg.sampler.num_steps):
            trainer.policy.velocity(x, sig, cond)
    sde_steps = cfg.sampler.num_steps - cfg.sampler.ode_tail
    k = max(1, round(cfg.grpo.timestep_fraction * sde_steps))
    for _ in range(k):
        trainer.policy.velocity(x, sig, cond).square().mean().backward()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--config", default=str(EMBEDDED_CONFIG))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(TrainConfig, args.config, [f"run.out_dir={tmp}", *args.overrides])
        trainer = GRPOTrainer(cfg)
        print(f"torch threads: {torch.get_num_threads()}")
        trainer.train_step()  # warm-up
        phases: dict[str, list[float]] = {"sample": [], "reward": [], "update": [], "total": []}
        bare: list[float] = []
        for _ in range(args.steps):
            m = trainer.train_step().metrics
            for k in ("sample", "reward", "update"):
                phases[k].append(m[f"sec_{k}"])
            phases["total"].append(m["sec_sample"] + m["sec_reward"] + m["sec_update"])
            bare.append(bare_passes(trainer))
    n = cfg.data.prompts_per_step * cfg.grpo.group_size
    print(f"step = {n} samples x {cfg.sampler.num_steps} sampler steps; {args.steps} steps timed")
    for k, v in phases.items():
        print(f"{k:>7s}: mean {statistics.mean(v):7.3f} s   min {min(v):7.3f} s")
    share = statistics.mean(phases["reward"]) / statistics.mean(phases["total"])
    print(f"reward share of a step: {100 * share:.1f}%")
    ratio = min(phases["total"]) / min(bare)
    print(f"overhead vs bare model passes (min/min): {ratio:.3f}x")


if __name__ == "__main__":
    main()
