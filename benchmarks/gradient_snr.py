"""Signal-to-noise ratio of one training step's gradient, per schedule x objective.

From the starting policy (no weights change), each variant draws ``--draws`` independent
training steps (fresh pairs and noise), computes each step's full update gradient ``g_r``
(every trained step and sample of the step, as the trainer accumulates it; no clipping)
and reports

    signal  |G|^2 ~ |mean_r g_r|^2 - tr(S) / R       (unbiased: the true gradient's norm^2)
    noise   tr(S) = sum_r |g_r - mean g|^2 / (R - 1)  (the variance of one step's gradient)
    SNR     = |G|^2 / tr(S)                           (per step; k steps average to k x SNR)

and the seconds per step, so ``seconds / SNR`` is the training time one needs for an
update direction whose signal equals its noise: lower is more learning per second. The
cosine between the variants' mean gradients says whether they push the same way.

Two diagnostics of what limits learning ride along:

* ``branch_identity`` / ``branch_prompt``: the branch default's gradient with one reward
  weighted (linear shaping). The same seed draws the same steps, so each draw's two
  gradients pair up: their cosine is the conflict between the rewards within a step.
* ``supervised``: flow matching on ground-truth renders, the direction of "the answer";
  its cosine with an RL variant's mean gradient says how much of RL's expected update
  goes where the truth lies.

    python benchmarks/gradient_snr.py [--draws 8] [--variants grpo_full nft_full ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

VARIANTS: dict[str, list[str]] = {
    "grpo_full": ["sampler.schedule.kind=full", "grpo.timestep_fraction=0.6"],
    "grpo_window": [
        "sampler.schedule.kind=window", "sampler.schedule.size=3", "grpo.timestep_fraction=1",
    ],
    "grpo_branch": [
        "sampler.schedule.kind=branch", "sampler.schedule.k=2", "grpo.timestep_fraction=1",
    ],
    "nft_full": [
        "sampler.schedule.kind=full", "method.objective.kind=nft",
        "method.objective.kl_coef=0", "grpo.timestep_fraction=0.3",
    ],
    # the branch default's gradient split by reward: linear shaping, one reward weighted;
    # the same seed draws the same pairs and noise, so the draws pair up image by image
    "branch_identity": [
        "sampler.schedule.kind=branch", "sampler.schedule.k=2", "grpo.timestep_fraction=1",
        "method.shaping.kind=linear", "method.weighting.kind=static",
        "method.weighting.weights={identity: 1.0, prompt: 0.0}",
    ],
    "branch_prompt": [
        "sampler.schedule.kind=branch", "sampler.schedule.k=2", "grpo.timestep_fraction=1",
        "method.shaping.kind=linear", "method.weighting.kind=static",
        "method.weighting.weights={identity: 0.0, prompt: 1.0}",
    ],
    "supervised": [],  # flow matching on ground-truth renders: the direction of "the answer"
}  # fmt: skip


def _flat(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().double()
         for p in params]
    )  # fmt: skip


def supervised_gradients(
    overrides: list[str], draws: int, seed: int
) -> tuple[list[torch.Tensor | None], float]:
    """``draws`` flow-matching gradients of the starting policy on ground-truth renders of
    random training pairs (the default's samples per step; no copy bias)."""
    import random

    from cgrpo.config.core import load_config
    from cgrpo.run.build import build_policy
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
    from cgrpo.world.pretrain import PretrainConfig, flow_matching_loss, make_batch
    from cgrpo.world.split import read_split

    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, [f"run.seed={seed}", *overrides])
    torch.manual_seed(seed)
    policy = build_policy(cfg, keep_reference=False)
    params = list(policy.trainable_parameters())
    rng = random.Random(seed)
    subjects = list(read_split(cfg.model.weights).train)  # the base's own training subjects
    pcfg = PretrainConfig(copy_colour_prob=0.0, copy_background_prob=0.0)
    n = cfg.data.prompts_per_step * cfg.grpo.group_size
    out, secs = [], []
    for _ in range(draws):
        t = time.perf_counter()
        prompts, refs, x0 = make_batch(rng, subjects, n, cfg=pcfg)
        for q in params:
            q.grad = None
        flow_matching_loss(policy.model, policy.tokenizer, prompts, refs=refs, x0=x0).backward()
        out.append(_flat(params))
        secs.append(time.perf_counter() - t)
    return out, sum(secs) / len(secs)


def gradients(overrides: list[str], draws: int, seed: int) -> tuple[list, float]:
    """``draws`` step gradients (each (P,), or None for a skipped step) from the starting
    policy, and seconds per step."""
    import tempfile

    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
    from cgrpo.train.trainer import GRPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            TrainConfig,
            EMBEDDED_CONFIG,
            [f"run.out_dir={Path(tmp) / 'run'}", f"run.seed={seed}", "run.eval=false",
             "run.log_with=[]", "optim.grad_clip=0", *overrides],
        )  # fmt: skip
        trainer = GRPOTrainer(cfg)
        trainer.state.optimizer.step = lambda *a, **k: None  # gradients only
        out, secs = [], []
        for _ in range(draws):
            t = time.perf_counter()
            res = trainer.train_step()
            secs.append(time.perf_counter() - t)
            out.append(None if res.skipped else _flat(trainer.params))
    return out, sum(secs) / len(secs)


def snr(g: torch.Tensor) -> tuple[float, float, float]:
    """(signal |G|^2, noise tr(S), SNR) from R step gradients (R, P)."""
    r = g.shape[0]
    if r < 2:
        raise SystemExit("gradient_snr: fewer than 2 finite steps were drawn; raise --draws")
    mean = g.mean(0)
    noise = float(((g - mean) ** 2).sum() / (r - 1))
    signal = float(mean.pow(2).sum()) - noise / r
    return signal, noise, signal / noise if noise > 0 else float("nan")


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("overrides", nargs="*", help="key=value for every variant")
    args = ap.parse_args()
    draws: dict[str, list] = {}
    print(f"{'variant':<16} {'s/step':>7} {'signal':>10} {'noise':>10} {'SNR':>8} {'s/SNR':>8}")
    for name in args.variants:
        if name == "supervised":
            gs, sec = supervised_gradients(args.overrides, args.draws, args.seed)
        else:
            gs, sec = gradients([*VARIANTS[name], *args.overrides], args.draws, args.seed)
        draws[name] = gs
        signal, noise, ratio = snr(torch.stack([g for g in gs if g is not None]))
        per = sec / ratio if ratio > 0 else float("inf")
        print(f"{name:<16} {sec:>7.2f} {signal:>10.3e} {noise:>10.3e} {ratio:>8.4f} {per:>8.1f}",
              flush=True)  # fmt: skip
    means = {k: torch.stack([g for g in v if g is not None]).mean(0) for k, v in draws.items()}
    names = list(means)
    if len(names) > 1:
        print("cosine of the mean gradients:")
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                print(f"  {a} vs {b}: {_cos(means[a], means[b]):+.3f}")
    if "branch_identity" in draws and "branch_prompt" in draws:
        pairs = [
            _cos(a, b)
            for a, b in zip(draws["branch_identity"], draws["branch_prompt"], strict=True)
            if a is not None and b is not None
        ]
        m = sum(pairs) / len(pairs)
        se = (sum((c - m) ** 2 for c in pairs) / max(1, len(pairs) - 1) / len(pairs)) ** 0.5
        neg = sum(c < 0 for c in pairs)
        print(f"identity vs prompt gradient of the same step (paired draws, n={len(pairs)}): "
              f"cosine {m:+.3f} +- {se:.3f}, negative in {neg} of {len(pairs)}")  # fmt: skip


if __name__ == "__main__":
    main()
