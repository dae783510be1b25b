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
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from cgrpo.experiments.sweep import run_all, run_logged
from cgrpo.train.trainer import PHASES  # the timed phases of a step: metrics sec_<phase>

ROOT = Path(__file__).resolve().parents[1]

#: arm -> overrides of the embedded default (each arm sets its schedule and objective).
ARMS: dict[str, list[str]] = {
    "grpo_full": [
        "sampler.schedule.kind=full", "method.objective.kind=grpo", "grpo.timestep_fraction=0.6",
    ],
    "grpo_window": [
        "sampler.schedule.kind=window", "sampler.schedule.size=3", "sampler.schedule.start=0",
        "method.objective.kind=grpo", "grpo.timestep_fraction=1",
    ],
    "grpo_branch": [
        "sampler.schedule.kind=branch", "sampler.schedule.k=2", "method.objective.kind=grpo",
        "grpo.timestep_fraction=1",
    ],
    "nft_full": [
        "sampler.schedule.kind=full", "method.objective.kind=nft",
        "method.objective.kl_coef=0", "grpo.timestep_fraction=0.3",
    ],
    "nft_branch": [
        "sampler.schedule.kind=branch", "sampler.schedule.k=2", "method.objective.kind=nft",
        "method.objective.kl_coef=0", "grpo.timestep_fraction=0.3",
    ],
    "nft_centered": [
        "sampler.schedule.kind=full", "method.objective.kind=nft",
        "method.objective.kl_coef=0", "method.objective.center=true",
        "grpo.timestep_fraction=0.3",
    ],
    "supervised": [],  # the calibration (see supervised())
}  # fmt: skip
#: the search around the branch default: one change each (issue 12's "whatever else").
_BRANCH = ARMS["grpo_branch"]
SEARCH: dict[str, tuple[str, list[str]]] = {
    "branch_upr2": ("branch, 2 optimizer steps per rollout", ["grpo.updates_per_rollout=2"]),
    "branch_upr4": ("branch, 4 optimizer steps per rollout", ["grpo.updates_per_rollout=4"]),
    "branch_upr8": ("branch, 8 optimizer steps per rollout", ["grpo.updates_per_rollout=8"]),
    "branch_upr4_k1": (
        "branch, k=1, 4 optimizer steps per rollout",
        ["grpo.updates_per_rollout=4", "sampler.schedule.k=1"],
    ),
    "branch_eta1": ("branch, eta 1.0", ["sampler.eta=1.0"]),
    "branch_p4": ("branch, 4 pairs per step (32 samples)", ["data.prompts_per_step=4"]),
    "branch_g16": ("branch, G 16 x 4 pairs", ["grpo.group_size=16", "data.prompts_per_step=4"]),
    "branch_early": ("branch, branch step in 0-4", ["sampler.schedule.hi=4"]),
    "branch_lr4": ("branch, lr 4e-5", ["optim.lr=4e-5"]),
    "branch_k1": ("branch, k=1", ["sampler.schedule.k=1"]),
    "branch_lr6": ("branch, lr 6e-5", ["optim.lr=6e-5"]),
    "branch_kl_lr6": ("branch, lr 6e-5 + KL 0.04", ["optim.lr=6e-5", "grpo.kl_coef=0.04"]),
    "branch_lora_lr2e4": ("branch, LoRA rank 16, lr 2e-4", ["model.lora_rank=16", "optim.lr=2e-4"]),
    "branch_lora_lr1e3": ("branch, LoRA rank 16, lr 1e-3", ["model.lora_rank=16", "optim.lr=1e-3"]),
    "nft_branch_centered": (
        "NFT on branch rollouts, group-centred",
        ["method.objective.kind=nft", "method.objective.kl_coef=0",
         "method.objective.center=true", "grpo.timestep_fraction=0.3"],
    ),
}  # fmt: skip
for _arm, (_label, _extra) in SEARCH.items():
    ARMS[_arm] = [*_BRANCH, *_extra]
SEARCH["nft_ode_centered"] = ("NFT, own noise per sample, SDE on step 0 only, centred", [])
ARMS["nft_ode_centered"] = [
    "sampler.schedule.kind=full", "sampler.ode_tail=9", "sampler.same_noise=false",
    "method.objective.kind=nft", "method.objective.kl_coef=0", "method.objective.center=true",
    "grpo.timestep_fraction=0.3",
]  # fmt: skip
LABELS = {
    "grpo_full": "GRPO, full (the paper's)",
    "grpo_window": "GRPO, window 0-2 (MixGRPO)",
    "grpo_branch": "GRPO, branch k=2 (Flow-GRPO-Fast)",
    "nft_full": "NFT, full SDE rollouts",
    "nft_branch": "NFT, branch k=2 rollouts",
    "nft_centered": "NFT, full, group-centred advantages",
    "supervised": "supervised FM on the truth (reference)",
    **{arm: label for arm, (label, _) in SEARCH.items()},
}
REWARDS = ("identity", "prompt")
TITLE = "Learning efficiency: schedule x objective at one wall-clock budget"


def run_config(run_dir: Path, arm: str, seed: int, budget: float, extra: list[str]):
    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    overrides = [
        f"run.out_dir={run_dir}", f"run.seed={seed}", "run.steps=100000",
        f"run.time_budget={budget}", "run.eval=false", "run.checkpoint_every=10",
        "run.keep_last=1", "run.image_every=0", "run.threads=1", "run.log_with=[]",
        *ARMS[arm], *extra,
    ]  # fmt: skip
    return load_config(TrainConfig, EMBEDDED_CONFIG, overrides)


def train_one(run_dir: Path, arm: str, seed: int, budget: float, extra: list[str]) -> None:
    """One run (in its own process): resumes when it has a checkpoint."""
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.train.trainer import GRPOTrainer

    cfg = run_config(run_dir, arm, seed, budget, extra)
    if arm == "supervised":
        supervised(cfg, budget)
        return
    resume = ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
    GRPOTrainer(cfg).train(resume=resume, quiet=True)


def supervised(cfg, budget: float) -> None:
    """Flow-matching fine-tune of the base on ground-truth renders (no copy bias), the
    embedded default's optimizer and samples per step, until ``budget`` seconds; written
    as a run folder (config, checkpoint, metrics.csv with sec_update) for ``cgrpo eval``."""
    import torch

    from cgrpo.config.core import config_to_dict, save_config
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.run.build import build_policy
    from cgrpo.world import scene
    from cgrpo.world.pretrain import PretrainConfig, flow_matching_loss, make_batch

    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    torch.manual_seed(cfg.run.seed)
    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    policy = build_policy(cfg, keep_reference=False)
    model, tok = policy.model, policy.tokenizer
    o = cfg.optim
    opt = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay
    )
    rng = random.Random(cfg.run.seed)
    subjects, _ = scene.all_subjects()
    pcfg = PretrainConfig(copy_colour_prob=0.0, copy_background_prob=0.0)
    batch = cfg.data.prompts_per_step * cfg.grpo.group_size
    spent, step, rows = 0.0, 0, []
    while spent < budget:
        t0 = time.perf_counter()
        prompts, refs, x0 = make_batch(rng, subjects, batch, pcfg)
        loss = flow_matching_loss(model, tok, prompts, refs, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        dt = time.perf_counter() - t0
        spent, step = spent + dt, step + 1
        rows.append({"step": step, "loss": loss.item(), "sec_sample": 0.0, "sec_reward": 0.0,
                     "sec_update": dt})  # fmt: skip
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ckpt.save_checkpoint(
        run_dir / "checkpoints", step, policy.trainable_state_dict(), {"step": step},
        meta={"config": config_to_dict(cfg)}, keep_last=1,
    )  # fmt: skip


def final_eval(run_dir: Path, eval_images: int) -> Path:
    """``cgrpo eval`` of the run's last checkpoint (cached in ``eval_final/``)."""
    from cgrpo.eval.protocol import EvalConfig, eval_command

    out = run_dir / "eval_final"
    if not (out / "metrics.json").is_file():
        cfg = EvalConfig(out_dir=str(out), images_per_pair=eval_images, ema=True)
        eval_command(cfg, run_dir, None, True)
    return out / "metrics.json"


def base_eval(out: Path, eval_images: int, extra: list[str]) -> Path:
    """One evaluation of the starting model (with the ground truth), shared by every run."""
    from cgrpo.config.core import save_config
    from cgrpo.eval.protocol import EvalConfig, eval_command

    base_dir = out / "base_eval"
    if not (base_dir / "metrics.json").is_file():
        cfg = run_config(out / "base_eval", "grpo_full", 0, 0, extra)
        base_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, base_dir / "model.yaml")
        eval_command(
            EvalConfig(out_dir=str(base_dir), images_per_pair=eval_images),
            None, base_dir / "model.yaml", True,
        )  # fmt: skip
    return base_dir / "metrics.json"


def _done(run_dir: Path) -> bool:
    return (run_dir / "eval_final" / "metrics.json").is_file()


def launch(run_dir: Path, arm: str, seed: int, args: argparse.Namespace) -> None:
    """Train (in a subprocess, logging to ``train.log``) and evaluate one run."""
    if _done(run_dir):
        print(f"[skip] {arm} seed {seed} (finished)", flush=True)
        return
    cmd = [
        sys.executable, __file__, "--one", arm, str(seed), "--budget", str(args.budget),
        "--out", str(args.out), "--eval-images", str(args.eval_images), *args.overrides,
    ]  # fmt: skip
    run_logged(cmd, run_dir, f"{arm} seed {seed}")


# -- the report ----------------------------------------------------------------------------


def _rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]


def arm_figures(arm: str, dirs: list[Path], base: dict, truth: dict) -> dict:
    from cgrpo.eval.summary import gap_closed, paired_changes

    seeds = []
    for d in dirs:
        model = json.loads((d / "eval_final" / "metrics.json").read_text())
        rows = _rows(d)
        seeds.append({
            "gap": gap_closed(model, base, truth),
            "change": paired_changes(model, base),
            "steps": len(rows),
            "sec": {p: float(np.mean([r.get(f"sec_{p}", 0.0) for r in rows])) for p in PHASES},
            "rows": rows,
        })  # fmt: skip
    return {"arm": arm, "seeds": seeds}


def _curve(rows: list[dict[str, float]], key: str, grid: np.ndarray, window: int = 10):
    t = np.cumsum([sum(r.get(f"sec_{p}", 0.0) for p in PHASES) for r in rows])
    y = np.array([r.get(key, np.nan) for r in rows])
    if np.isnan(y).all() or len(y) < 2:
        return None
    k = min(window, len(y))
    smooth = np.convolve(y, np.ones(k) / k, mode="valid")
    return np.interp(grid, t[k - 1 :], smooth, left=np.nan, right=np.nan)


def plot(figs: list[dict], path: Path, budget: float) -> None:
    from cgrpo.eval.compare import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    grid = np.linspace(0, budget, 200)
    for f in figs:
        if f["arm"] == "supervised":
            continue
        for ax, r in zip(axes, REWARDS, strict=True):
            curves = [_curve(s["rows"], f"reward/{r}/mean", grid) for s in f["seeds"]]
            curves = [c for c in curves if c is not None]
            if curves:
                ax.plot(grid, np.nanmean(np.stack(curves), 0), label=LABELS[f["arm"]])
    for ax, r in zip(axes, REWARDS, strict=True):
        ax.set_xlabel("training seconds (rollout + reward + update)")
        ax.set_ylabel(f"training reward: {r} (moving mean of 10 steps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _pct(g: tuple[float, float]) -> str:
    return f"{100 * g[0]:+.1f} ± {100 * g[1]:.1f} %"


def write_report(figs: list[dict], doc: Path, command: str, base: dict, truth: dict,
                 budget: float, eval_images: int, notes: str = "",
                 title: str = TITLE) -> None:  # fmt: skip
    img = doc.parent / "images" / f"{doc.stem}.png"  # learning_efficiency.png for the default doc
    plot(figs, img, budget)
    b, t = base["overall"], truth["overall"]
    lines = [
        f"# {title}",
        "",
        "Written by `benchmarks/learning_efficiency.py` from the runs it trained:",
        "",
        f"    {command}",
        "",
        f"Budget: {budget:.0f} s of rollout + reward + update per run, one thread each "
        "(evaluation not counted). Everything else is the embedded default (SARS + TDW). "
        f"Final figures: `cgrpo eval` of each run's last checkpoint on 256 held-out pairs x "
        f"{eval_images} noises, image by image against the base model on the same noise. "
        "The gap closed is `(trained - base) / (truth - base)`, with the truth the "
        "renderer's image of each pair; its SE is paired (delta method).",
        "",
        f"Base: identity {b['identity']:.4f}, prompt {b['prompt']:.4f}; "
        f"truth: identity {t['identity']:.4f}, prompt {t['prompt']:.4f}.",
        "",
        "| arm | seeds | steps | s/step sample / reward / update | identity change | "
        "prompt change | gap closed identity | gap closed prompt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figs:
        ss = f["seeds"]
        sec = " / ".join(f"{np.mean([s['sec'][p] for s in ss]):.2f}" for p in PHASES)
        cells = []
        for what in ("change", "gap"):
            for r in REWARDS:
                vals = [s[what][r] for s in ss if r in s[what]]
                m = float(np.mean([v[0] for v in vals]))
                means = [v[0] for v in vals]
                if len(vals) > 1:  # seed to seed: data, noise and training all vary
                    se = float(np.std(means, ddof=1) / math.sqrt(len(vals)))
                else:  # one seed: its paired SE (evaluation noise only)
                    se = vals[0][1]
                cells.append(_pct((m, se)) if what == "gap" else f"{m:+.4f} ± {se:.4f}")
        steps = f"{np.mean([s['steps'] for s in ss]):.0f}"
        lines.append(
            f"| {LABELS[f['arm']]} | {len(ss)} | {steps} | {sec} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Mean over seeds; the ± is the standard error of that mean across seeds (it holds the "
        "seed-to-seed spread of training, not only the evaluation noise; with one seed, the "
        "paired SE). Per seed, with each seed's paired SE:",
        "",
        "| arm | seed | steps | gap closed identity | gap closed prompt |",
        "|---|---|---|---|---|",
    ]
    for f in figs:
        for k, s in enumerate(f["seeds"]):
            g = [_pct(s["gap"][r]) if r in s["gap"] else "-" for r in REWARDS]
            lines.append(f"| {LABELS[f['arm']]} | {k} | {s['steps']} | {g[0]} | {g[1]} |")
    lines += [
        "",
        f"![training reward vs training seconds](images/{img.name})",
        "",
        "The curves are the training rollouts' mean rewards (moving mean of 10 steps, mean over "
        "seeds) against the training seconds spent: `nft` with `sample_old` draws them with its "
        "old policy.",
        "",
    ]
    if notes:
        lines += [notes.rstrip(), ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(doc)


def main() -> None:
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
    args = ap.parse_args()
    if args.one:
        arm, seed = args.one[0], int(args.one[1])
        run_dir = args.out / arm / f"seed{seed}"
        train_one(run_dir, arm, seed, args.budget, args.overrides)
        final_eval(run_dir, args.eval_images)
        return
    base_path = base_eval(args.out, args.eval_images, args.overrides)
    if not args.report_only:
        jobs = [(args.out / a / f"seed{k}", a, k) for k in range(args.seeds) for a in args.arms]
        run_all([partial(launch, d, a, k, args) for d, a, k in jobs], args.jobs)
    base = json.loads(base_path.read_text())
    truth = base.get("truth")
    if truth is None:
        raise SystemExit(f"{base_path} has no ground truth: the embedded protocol has one")
    figs = []
    for arm in args.arms:
        dirs = [d for d in sorted((args.out / arm).glob("seed*")) if _done(d)]
        if dirs:
            figs.append(arm_figures(arm, dirs, base, truth))
    if not figs:
        raise SystemExit(f"no finished run under {args.out}; run without --report-only first")
    command = "python benchmarks/learning_efficiency.py " + shlex.join(sys.argv[1:])
    notes = args.notes.read_text() if args.notes else ""
    write_report(figs, args.doc, command.strip(), base, truth, args.budget, args.eval_images,
                 notes, args.title)  # fmt: skip
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
