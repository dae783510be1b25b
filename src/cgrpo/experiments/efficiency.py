"""The learning-efficiency experiment (``benchmarks/learning_efficiency.py``): rollout
schedule x objective at one wall-clock budget. Its arms (the embedded default, SARS + TDW,
with its own ``sampler.schedule`` / ``method.objective``), the search around the branch
default, each run's config, one run trained, and the evaluations every run is read by."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ARMS",
    "LABELS",
    "REWARDS",
    "SEARCH",
    "TITLE",
    "base_eval",
    "done",
    "final_eval",
    "run_config",
    "train_one",
]

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
    "supervised": [],  # the calibration (cgrpo.experiments.supervised)
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


def run_config(run_dir: Path, arm: str, seed: int, *, budget: float, extra: list[str]):
    """The run's config: the embedded default, ``budget`` seconds of training (no held-out
    evaluation along it), the arm, ``extra`` overrides."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    overrides = [
        f"run.out_dir={run_dir}", f"run.seed={seed}", "run.steps=100000",
        f"run.time_budget={budget}", "run.eval=false", "run.checkpoint_every=10",
        "run.keep_last=1", "run.image_every=0", "run.threads=1", "run.log_with=[]",
        *ARMS[arm], *extra,
    ]  # fmt: skip
    return load_config(TrainConfig, EMBEDDED_CONFIG, overrides)


def train_one(run_dir: Path, arm: str, seed: int, *, budget: float, extra: list[str]) -> None:
    """One run (in its own process): resumes when it has a checkpoint; the ``supervised``
    arm is :func:`cgrpo.experiments.supervised.supervised`."""
    from cgrpo.experiments.supervised import supervised
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.train.trainer import GRPOTrainer

    cfg = run_config(run_dir, arm, seed, budget=budget, extra=extra)
    if arm == "supervised":
        supervised(cfg, budget)
        return
    resume = ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
    GRPOTrainer(cfg).train(resume=resume, quiet=True)


def final_eval(run_dir: Path, eval_images: int) -> Path:
    """``cgrpo eval`` of the run's last checkpoint (cached in ``eval_final/``)."""
    from cgrpo.eval.config import EvalConfig
    from cgrpo.eval.protocol import eval_command

    out = run_dir / "eval_final"
    if not (out / "metrics.json").is_file():
        cfg = EvalConfig(out_dir=str(out), images_per_pair=eval_images, ema=True)
        eval_command(cfg, run_dir, None, quiet=True)
    return out / "metrics.json"


def base_eval(out: Path, eval_images: int, extra: list[str]) -> Path:
    """One evaluation of the starting model (with the ground truth), shared by every run."""
    from cgrpo.config.core import save_config
    from cgrpo.eval.config import EvalConfig
    from cgrpo.eval.protocol import eval_command

    base_dir = out / "base_eval"
    if not (base_dir / "metrics.json").is_file():
        cfg = run_config(out / "base_eval", "grpo_full", 0, budget=0, extra=extra)
        base_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, base_dir / "model.yaml")
        eval_command(
            EvalConfig(out_dir=str(base_dir), images_per_pair=eval_images),
            None, base_dir / "model.yaml", quiet=True,
        )  # fmt: skip
    return base_dir / "metrics.json"


def done(run_dir: Path) -> bool:
    """Whether the run's final evaluation is written."""
    return (run_dir / "eval_final" / "metrics.json").is_file()
