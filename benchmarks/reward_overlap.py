"""Seconds per training step with and without scoring while sampling (sampler.overlap_rewards).

Runs steps of the embedded default (or a YAML config) twice, the same seeds each time:
rewards scored after the rollout, then each finished micro-batch (grpo.micro_batch_size)
scored on a worker thread while the next is sampled. Every reward is made slow by
``--ms-per-image`` of waiting per image it scores (a stand-in for a reward server or a VLM
judge: the training process waits, its CPU is free), so the figures show what the overlap
hides, not the embedded rewards' own cost. The two modes' steps alternate (the load of a
shared machine drifts); prints the median and min step seconds of each mode, their sample
+ reward phases, and the largest difference of a reward mean between them (the samples
are the same; the scores differ only by a reward's batch-size rounding).

    python benchmarks/reward_overlap.py [--steps 3] [--ms-per-image 20] [--micro-batch 8]
                                        [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from cgrpo.config.core import load_config
from cgrpo.rewards.set import RewardSet
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.train.trainer import GRPOTrainer


class SlowReward:
    """A reward that waits ``seconds_per_image`` per image, then scores as ``inner``."""

    def __init__(self, inner, seconds_per_image: float) -> None:
        self.inner, self.delay = inner, seconds_per_image
        self.name = getattr(inner, "name", "slow")
        self.uses_references = getattr(inner, "uses_references", True)

    def __call__(self, images, prompts, references):
        time.sleep(self.delay * len(images))
        return self.inner(images, prompts, references)


def slow_trainer(cfg: TrainConfig, delay: float) -> GRPOTrainer:
    """The trainer of ``cfg`` with every reward waiting ``delay`` seconds per image."""
    trainer = GRPOTrainer(cfg)
    slow = {k: SlowReward(m, delay) for k, m in trainer.rewards.models.items()}
    trainer.rewards = RewardSet(slow, trainer.rewards.weights)
    return trainer


def timed_step(trainer: GRPOTrainer) -> tuple[dict[str, float], dict[str, float]]:
    """One step: its seconds (whole, sample, reward) and its reward means."""
    t0 = time.perf_counter()
    res = trainer.train_step()
    seconds = time.perf_counter() - t0
    trainer.state.step += 1
    m = res.metrics
    phases = {"step": seconds, "sample": m["sec_sample"], "reward": m["sec_reward"]}
    return phases, {k: v for k, v in m.items() if k.endswith("/mean")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode (after 1 warm-up)")
    ap.add_argument("--ms-per-image", type=float, default=20.0, help="each reward's wait per image")
    ap.add_argument("--micro-batch", type=int, default=8, help="grpo.micro_batch_size: the chunk")
    ap.add_argument("--config", default=None, help="YAML config (default: the embedded one)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for overlap in (False, True):
            cfg = load_config(
                TrainConfig,
                args.config or EMBEDDED_CONFIG,
                [f"run.out_dir={tmp}/{overlap}", "run.eval=false",
                 f"grpo.micro_batch_size={args.micro_batch}",
                 f"sampler.overlap_rewards={str(overlap).lower()}", *args.overrides],
            )  # fmt: skip
            trainers[overlap] = slow_trainer(cfg, args.ms_per_image / 1000)
        times: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        gap = 0.0
        for i in range(args.steps + 1):  # the modes alternate, so load drifts hit both
            got = {k: timed_step(t) for k, t in trainers.items()}
            gap = max(gap, *(abs(v - got[True][1][k]) for k, v in got[False][1].items()))
            if i:  # the first step warms up
                for k in got:
                    times[k].append(got[k][0])
    n = cfg.data.prompts_per_step * cfg.grpo.group_size
    print(
        f"{n} samples per step in chunks of {args.micro_batch}, {len(cfg.rewards)} rewards at "
        f"{args.ms_per_image:g} ms per image, {cfg.sampler.num_steps} sampler steps, "
        f"{args.steps} steps per mode (alternating), {torch.get_num_threads()} torch threads"
    )
    for overlap, rows in times.items():
        name = "overlap " if overlap else "after   "
        step = [t["step"] for t in rows]
        both = [t["sample"] + t["reward"] for t in rows]
        print(
            f"{name} step median {statistics.median(step):6.2f} s (min {min(step):.2f})  "
            f"sample + reward median {statistics.median(both):5.2f} s (min {min(both):.2f})  "
            f"[sample {statistics.median(t['sample'] for t in rows):.2f}, "
            f"reward {statistics.median(t['reward'] for t in rows):.2f}]"
        )
    after, over = (statistics.median(t["sample"] + t["reward"] for t in times[k]) for k in times)
    print(
        f"overlap saves {after - over:.2f} s of sample + reward per step ({1 - over / after:.0%})"
    )
    print(f"largest difference of a reward mean between the modes: {gap:.1e}")


if __name__ == "__main__":
    main()
