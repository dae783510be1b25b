"""What each arm of the competitive-degradation experiment asks of the policy, on the same
rollouts: the shaped advantage each arm's shaping and weighting make of the same samples.

From the starting policy (no weights change), ``--draws`` training steps are sampled and
scored as the trainer does (the default's pairs, group size and sampler), and each reward's
group advantage kept. Every arm of :data:`cgrpo.experiments.degradation.ARMS` then shapes
and weights those same advantages at each step index ``t`` of the sampler (the branch
schedule trains steps 1..T-2 twice as often as 0 and T-1; figures are the plain mean over
``t``). Per arm it prints

    scale     rms(A), A clamped at grpo's adv_clip: the policy term's size. The KL term
              (``grpo.kl_coef``) does not scale with it, so under Adam, which undoes a
              common scale, the KL's weight relative to the rewards is ~ 1 / scale
    KL rel.   that relative KL weight against naive 1:1's (1.00)
    id share  cov(A, A_id) / (cov(A, A_id) + cov(A, A_prompt)): how much of the signal
              follows identity (0.5 for 1:1 when both advantages vary alike)
    bonus     rms of SARS's bonus / rms(A) (0 without SARS)
    A|id+p-, A|id-p+, A|both+, A|both-: the mean A of the samples in each relation
              (conflicts: identity up & prompt down, and the reverse), over rms(A): how
              hard the arm pushes them, at its own scale

``--by-step`` asks where each reward's differences come from: for each step ``t``, rollouts
with one SDE step at ``t`` (ODE elsewhere), each reward's std within a group, beside TDW's
weights at ``t`` (TDW assumes the prompt is settled early, identity later).

    python benchmarks/advantage_mix.py [--draws 16] [--seed 0] [--by-step] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

ROWS = ("scale", "KL rel.", "id share", "bonus", "A|id+p-", "A|id-p+", "A|both+", "A|both-")


def draw_advantages(
    overrides: list[str], draws: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Each reward's group advantages over ``draws`` steps of the starting policy, and each
    reward's spread within a group (the mean over groups of the rewards' population std)."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
    from cgrpo.train.trainer import GRPOTrainer

    kept: dict[str, list[torch.Tensor]] = {}
    spread: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            TrainConfig, EMBEDDED_CONFIG,
            [f"run.out_dir={Path(tmp) / 'run'}", f"run.seed={seed}", "run.eval=false",
             "run.log_with=[]", *overrides],
        )  # fmt: skip
        trainer = GRPOTrainer(cfg)
        advantages = trainer.advantages

        def score(scores, group_ids):  # the trainer's own advantages, the rewards' spread kept
            for k, r in scores.items():
                r = r.double()
                stds = [float(r[group_ids == g].std(unbiased=False)) for g in group_ids.unique()]
                spread.setdefault(k, []).extend(stds)
            return advantages(scores, group_ids)

        def keep(roll, adv, group_ids=None):  # the update phase, replaced: nothing changes
            for k, v in adv.items():
                kept.setdefault(k, []).append(v.detach().cpu().double())
            return {}

        trainer.advantages, trainer.update = score, keep
        for _ in range(draws):
            trainer.train_step()
    return {k: torch.cat(v) for k, v in kept.items()}, {
        k: sum(v) / len(v) for k, v in spread.items()
    }


def by_step(overrides: list[str], draws: int, seed: int) -> None:
    """Where each reward's differences within a group come from: one SDE step at ``t``
    (the branch with k = 1 at t, ODE elsewhere), for each ``t``, beside TDW's weights."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, ["method.weighting=tdw", *overrides])
    steps = cfg.sampler.num_steps
    head = ("t", "TDW w_id", "w_prompt", "std id", "std prompt", "prompt/id")
    print("".join(f"{h:>11}" for h in head))
    for t in range(steps):
        branch = [
            "sampler.schedule.kind=branch",
            "sampler.schedule.k=1",
            f"sampler.schedule.at={t}",
        ]
        _, sd = draw_advantages([*overrides, *branch], draws, seed)
        w_id, w_p = cfg.method.weighting.weights(t, steps)
        ratio = sd["prompt"] / sd["identity"] if sd["identity"] else float("nan")
        cells = (
            f"{t}",
            f"{w_id:.3f}",
            f"{w_p:.3f}",
            f"{sd['identity']:.4f}",
            f"{sd['prompt']:.4f}",
            f"{ratio:.2f}",
        )
        print("".join(f"{c:>11}" for c in cells), flush=True)


def arm_figures(arm: str, adv: dict[str, torch.Tensor], *, overrides: list[str]) -> dict:
    """The figures of :data:`ROWS` (less ``KL rel.``) for one arm on the advantages ``adv``."""
    from cgrpo.config.core import load_config
    from cgrpo.experiments.degradation import ARMS
    from cgrpo.method.shaping import sars_bonus
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, [*ARMS[arm], *overrides])
    pair = tuple(cfg.method.pair)
    base = {k: float(v.get("weight", 1.0)) for k, v in cfg.rewards.items()}
    a_id, a_p = adv[pair[0]], adv[pair[1]]
    gamma = getattr(cfg.method.shaping, "gamma", 0.0) if cfg.method.shaping.kind == "sars" else 0
    bonus = sars_bonus(a_id, a_p, gamma) if gamma else torch.zeros_like(a_id)
    steps = cfg.sampler.num_steps
    groups = {
        "A|id+p-": (a_id > 0) & (a_p < 0), "A|id-p+": (a_id < 0) & (a_p > 0),
        "A|both+": (a_id > 0) & (a_p > 0), "A|both-": (a_id < 0) & (a_p < 0),
    }  # fmt: skip
    acc: dict[str, float] = {k: 0.0 for k in ROWS if k != "KL rel."}
    for t in range(steps):
        w = cfg.method.weighting.step_weights(t, steps, base, pair=pair)
        a = cfg.method.shaping(adv, w, pair).clamp(-cfg.grpo.adv_clip, cfg.grpo.adv_clip)
        rms = _rms(a)
        c_id = float(((a - a.mean()) * (a_id - a_id.mean())).mean())
        c_p = float(((a - a.mean()) * (a_p - a_p.mean())).mean())
        acc["scale"] += rms / steps
        acc["id share"] += c_id / (c_id + c_p) / steps
        acc["bonus"] += _rms(bonus) / rms / steps
        for k, m in groups.items():
            acc[k] += float(a[m].mean()) / rms / steps
    return acc


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def main() -> None:
    from cgrpo.experiments.degradation import LABELS, PRIMARY

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--draws", type=int, default=16, help="training steps sampled (64 samples each)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--by-step", action="store_true", help="each reward's spread per SDE step instead"
    )
    ap.add_argument("--arms", nargs="*", default=PRIMARY, choices=list(LABELS))
    ap.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = ap.parse_args()
    if args.by_step:
        by_step(args.overrides, args.draws, args.seed)
        return
    adv, _ = draw_advantages(args.overrides, args.draws, args.seed)
    n = len(next(iter(adv.values())))
    a_id, a_p = adv["identity"], adv["prompt"]
    if _rms(a_id) == 0 or _rms(a_p) == 0:
        raise SystemExit(
            "advantage_mix: every group's identity or prompt rewards were identical (all "
            "advantages 0); raise --draws, or use a model whose samples differ"
        )
    conflict = float((((a_id > 0) & (a_p < 0)) | ((a_id < 0) & (a_p > 0))).double().mean())
    print(
        f"{n} samples from {args.draws} steps; conflicted share {conflict:.3f}; "
        f"corr(A_id, A_prompt) {float(torch.corrcoef(torch.stack([a_id, a_p]))[0, 1]):+.3f}; "
        f"rms A_id {_rms(a_id):.3f}, A_prompt {_rms(a_p):.3f}"
    )
    figs = {a: arm_figures(a, adv, overrides=args.overrides) for a in args.arms}
    ref = figs.get("naive_1_1", next(iter(figs.values())))["scale"]
    print(f"{'arm':<20}" + "".join(f"{k:>10}" for k in ROWS))
    for arm, f in figs.items():
        f["KL rel."] = ref / f["scale"]
        print(f"{LABELS[arm]:<20}" + "".join(f"{f[k]:>10.3f}" for k in ROWS))


if __name__ == "__main__":
    main()
