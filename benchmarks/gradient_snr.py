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
}  # fmt: skip


def gradients(overrides: list[str], draws: int, seed: int) -> tuple[torch.Tensor, float]:
    """``draws`` step gradients (R, P) from the starting policy, and seconds per step."""
    import tempfile

    from cgrpo.config import load_config
    from cgrpo.train_config import EMBEDDED_CONFIG, TrainConfig
    from cgrpo.trainer import GRPOTrainer

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
            if res.skipped:
                continue
            out.append(
                torch.cat(
                    [
                        (p.grad if p.grad is not None else torch.zeros_like(p))
                        .detach()
                        .flatten()
                        .double()
                        for p in trainer.params
                    ]
                )
            )
    return torch.stack(out), sum(secs) / len(secs)


def snr(g: torch.Tensor) -> tuple[float, float, float]:
    """(signal |G|^2, noise tr(S), SNR) from R step gradients (R, P)."""
    r = g.shape[0]
    if r < 2:
        raise SystemExit("gradient_snr: fewer than 2 finite steps were drawn; raise --draws")
    mean = g.mean(0)
    noise = float(((g - mean) ** 2).sum() / (r - 1))
    signal = float(mean.pow(2).sum()) - noise / r
    return signal, noise, signal / noise if noise > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("overrides", nargs="*", help="key=value for every variant")
    args = ap.parse_args()
    means = {}
    print(f"{'variant':<12} {'s/step':>7} {'signal':>10} {'noise':>10} {'SNR':>8} {'s/SNR':>8}")
    for name in args.variants:
        g, sec = gradients([*VARIANTS[name], *args.overrides], args.draws, args.seed)
        signal, noise, ratio = snr(g)
        means[name] = g.mean(0)
        per = sec / ratio if ratio > 0 else float("inf")
        print(f"{name:<12} {sec:>7.2f} {signal:>10.3e} {noise:>10.3e} {ratio:>8.4f} {per:>8.1f}")
    names = list(means)
    if len(names) > 1:
        print("cosine of the mean gradients:")
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                cos = torch.nn.functional.cosine_similarity(means[a], means[b], dim=0)
                print(f"  {a} vs {b}: {float(cos):+.3f}")


if __name__ == "__main__":
    main()
