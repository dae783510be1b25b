"""The training configuration of ``cgrpo train``: one typed dataclass, sections per concern.

Defaults are the paper's method constants (Customized-GRPO on UNO: 25 steps, shift 3,
eta 0.4, G = 12, clip 1e-4, advantage clip 5, timestep fraction 0.6, gamma 0.4, TDW,
AdamW lr 2e-5 ...); ``configs/uno_syncd.yaml`` and ``configs/kontext_syncd.yaml`` set the
rest of the released setting (docs/paper-fidelity.md). The embedded CPU world needs a few
other values (fewer steps, a higher learning rate, smaller groups); they live in
``cgrpo/configs/embedded.yaml``, which ``cgrpo train`` loads when no ``--config`` is
given, and which says why.

Load with :func:`cgrpo.config.core.load_config` (YAML file + ``section.key=value`` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cgrpo.config.core import option
from cgrpo.config.ranges import check_ranges
from cgrpo.method.objective import GRPOObjective, Objective
from cgrpo.method.pair import DEFAULT_PAIR, check_distinct, check_pair
from cgrpo.method.shaping import SARSShaping, Shaping
from cgrpo.method.weighting import StaticWeights, TimeAwareWeights, Weighting
from cgrpo.policies.flux.config import FluxConfig
from cgrpo.rewards.spec import canonical_rewards
from cgrpo.sampling.schedule import FullSchedule, Schedule

EMBEDDED_CONFIG = Path(__file__).parents[1] / "configs" / "embedded.yaml"


@dataclass
class ModelConfig:
    kind: Literal["embedded", "flux"] = option(
        "embedded", "generator: the embedded tiny in-context transformer, or a FLUX-family model"
    )
    weights: str | None = option(
        None,
        "embedded: generator safetensors (null: the base model shipped in the package); the "
        "subject split in its metadata (cgrpo pretrain's subjects) decides the training and "
        "held-out subjects, the shipped 24 / 8 when it has none",
    )
    device: str = option("cpu", "torch device of the policy and rewards")
    lora_rank: int = option(
        0, "embedded: train a LoRA of this rank on lora_targets instead of every weight (0: off)"
    )
    lora_alpha: float | None = option(
        None, "embedded: LoRA alpha; the update is scaled by alpha / rank (null: alpha = rank)"
    )
    lora_targets: list[str] = option(
        ["qkv", "proj", "mlp.0", "mlp.2"],
        "embedded: LoRA target modules of every block (attention and MLP projections)",
    )


@dataclass
class DataConfig:
    kind: Literal["embedded", "dreambench", "jsonl"] = option(
        "embedded", "training pairs: the embedded world, a DreamBench folder, or a JSONL file"
    )
    root: str = option("../shared/data/dreambench", "dreambench: the DreamBench folder")
    path: str | None = option(None, "jsonl: pairs file (JSONL or JSON list of reference/prompt)")
    prompts_per_subject: int = option(
        25,
        "dreambench: evaluation prompts per subject (25: the 750-pair protocol)",
        check=">= 1",
    )
    image_root: str | None = option(
        None, "jsonl: folder the file's image paths are relative to (null: the file's folder)"
    )
    fields: dict[str, str] = option(
        {},
        "jsonl: the file's key for each of ours (reference, references, prompt, target, "
        "name), e.g. SynCD's {reference: ref_img, prompt: text, target: img, name: id}; "
        "empty: our names",
    )
    eval_root: str | None = option(None, "jsonl: evaluate on this DreamBench folder instead")
    allow_eval_overlap: bool = option(
        False,
        "let the training pairs contain evaluation pairs (same reference file and prompt); "
        "false: such a run stops at start",
    )
    skip_bad: bool = option(
        False,
        "jsonl: entries whose images cannot be read are skipped (and counted) instead of "
        "stopping the run at start (every image is checked before training)",
    )
    prompts_per_step: int = option(
        4,
        "(reference, prompt) pairs per training step, all processes together; each gets a "
        "group of G samples, and the step's pairs x G samples are split evenly over the "
        "processes",
        check=">= 1",
    )
    attribute_prob: float = option(
        0.45,
        "embedded: probability that a prompt mentions each attribute (bg, place, size, colour)",
        check=">= 0, <= 1",
    )
    eval_prompts_per_subject: int = option(
        32,
        "embedded: evaluation prompts per held-out subject",
        unit="prompts",
        check=">= 1",
    )
    eval_split: Literal["base", "shipped"] = option(
        "base",
        "embedded: held-out subjects evaluated: base (those the run's base never saw, e.g. 32 "
        "for a subjects=wide base) or shipped (the shipped base's 8, held out by every split, so "
        "runs from different bases are scored on the same pairs)",
    )
    eval_seed: int = option(
        3407,
        "seed of the evaluation prompts and noise (the paper's)",
        check=">= 0, < 9223372036854775808",
    )
    eval_noises: int = option(
        1,
        "initial noises per held-out pair in the base and final evaluation (the mid-run "
        "evaluations use the first); more noises shrink the paired standard error",
        unit="images",
        check=">= 1",
    )


@dataclass
class SamplerConfig:
    num_steps: int = option(25, "denoising steps T", unit="steps", check=">= 1")
    shift: float = option(3.0, "FLUX time shift of the sigma schedule", check="> 0, finite")
    eta: float = option(
        0.4, "SDE noise level of rollouts (0 would be the deterministic ODE)", check=">= 0, finite"
    )
    kind: Literal["dance", "flow"] = option(
        "dance", "diffusion coefficient: dance g = eta (the paper's); flow g = eta*sqrt(s/(1-s))"
    )
    same_noise: bool = option(True, "one initial noise shared by each group's G samples")
    ode_tail: int = option(
        1,
        "last N steps taken with the deterministic Euler step: no SDE noise left in the final "
        "sample, no log-prob, never trained. 1 is the released code's setting: it samples "
        "its last step with noise but never trains it and rewards the clean prediction, "
        "which is what a deterministic last step gives (its 0.6 of 24 = 14 trained steps)",
        unit="steps",
        check=">= 0",
    )
    reward_image: Literal["clean", "sample"] = option(
        "clean",
        "what the rewards score: the last step's clean prediction x - sigma * v (the "
        "released code's pred_original) or the final sample. With a deterministic last step "
        "(ode_tail >= 1 on the full schedule) they are the same image; when the last step is "
        "an SDE step (ode_tail 0, a window or branch reaching it) the sample carries its "
        "noise and clean does not, so that step's transition gets no credit under clean",
    )
    ode_solver: Literal["euler", "dpm2m", "heun"] = option(
        "euler",
        "solver of the deterministic steps: the rollouts' ODE steps (ode_tail, a window's or "
        "branch's ODE steps) and every evaluation draw. euler: 1 model pass per step; dpm2m: "
        "DPM-Solver++(2M), second order at 1 pass per step (the first step of an ODE run, "
        "after an SDE step too, and the step to sigma 0 are Euler); heun: second order at 2 "
        "passes per step (the step to sigma 0 is Euler). SDE steps are never affected",
    )
    overlap_rewards: bool = option(
        False,
        "score the rollout while it is sampled: each finished micro-batch "
        "(grpo.micro_batch_size) is decoded and scored on a worker thread while the next is "
        "sampled; same images, same scores up to a reward's batch-size rounding "
        "(docs/rewards.md). Pays off when a reward waits (a "
        "reward server, a VLM judge, a reward model on another GPU)",
    )
    schedule: Schedule = option(
        FullSchedule(),
        "rollout schedule: which steps are SDE (trained) and which ODE: full (the paper's: "
        "all but ode_tail), window (MixGRPO), branch (Flow-GRPO-Fast; docs/schedules.md)",
    )


@dataclass
class GRPOConfig:
    group_size: int = option(
        12, "G: samples per (reference, prompt) pair", unit="samples", check=">= 1"
    )
    clip_range: float = option(1e-4, "PPO ratio clip epsilon", check=">= 0, finite")
    adv_clip: float = option(5.0, "advantages clamped to +- this", check="> 0")
    adv_eps: float = option(
        1e-8, "epsilon of the group normalisation (r - mean) / (std + eps)", check="> 0, finite"
    )
    std: Literal["population", "unbiased"] = option(
        "population",
        "std of the group normalisation: population (1/G) or unbiased (1/(G-1), torch's "
        "default, which the paper's code uses)",
    )
    timestep_fraction: float = option(
        0.6,
        "share of the denoising steps trained per rollout (random subset, true indices)",
        check="> 0, <= 1",
    )
    updates_per_rollout: int = option(
        1,
        "optimizer steps per rollout: samples are shuffled and split into this many chunks",
        check=">= 1",
    )
    micro_batch_size: int = option(
        0,
        "samples per forward/backward pass (0: the whole chunk); gradients accumulate",
        check=">= 0",
    )
    kl_coef: float = option(
        0.0, "weight of the KL penalty to the starting policy (paper: 0)", check=">= 0, finite"
    )


@dataclass
class MethodConfig:
    shaping: Shaping = option(
        SARSShaping(),
        "how the rewards' advantages combine into one: linear (naive GRPO, the weighted "
        "sum) or sars (the weighted sum + the SARS bonus of the pair)",
    )
    weighting: Weighting = option(
        TimeAwareWeights(),
        "reward weights per denoising step: static (each reward's weight) or tdw (the "
        "pair's weights follow the time-aware schedule, other rewards static)",
    )
    objective: Objective = option(
        GRPOObjective(),
        "the training loss: grpo (the paper's PPO-clipped loss on the SDE transitions' "
        "log-probs; constants grpo.*) or nft (DiffusionNFT's forward-process loss with a "
        "soft-updated old policy; docs/objectives.md)",
    )
    pair: tuple[str, str] = option(
        DEFAULT_PAIR,
        "the two competing rewards as (identity role, prompt role): SARS's bonus pair, "
        "TDW's roles and the synergy / conflict / joint-failure diagnostics",
    )


#: The embedded world's rewards; a FLUX config names the paper's (dino_seg, hpsv3).
DEFAULT_REWARDS: dict[str, Any] = {
    "identity": {"kind": "embedded_identity", "weight": 1.0},
    "prompt": {"kind": "embedded_prompt", "weight": 1.0},
}


@dataclass
class OptimConfig:
    lr: float = option(
        2e-5,
        "AdamW learning rate (after the warm-up; the peak of optim.schedule=cosine)",
        check="> 0, finite",
    )
    schedule: Literal["constant", "cosine"] = option(
        "constant",
        "learning rate along training after the warm-up: constant (optim.lr) or cosine "
        "(from optim.lr at the end of the warm-up to 0 at optim.schedule_steps; "
        "docs/trainer.md)",
    )
    warmup: int = option(
        0,
        "linear warm-up: step s < warmup trains at optim.lr * (s + 1) / (warmup + 1) (0: none)",
        unit="steps",
        check=">= 0",
    )
    schedule_steps: int = option(
        0,
        "the cosine's length: the step where it reaches 0 (0: run.steps); set it to keep "
        "the schedule when a resumed run changes run.steps",
        unit="steps",
        check=">= 0",
    )
    beta1: float = option(0.9, "AdamW beta1", check=">= 0, < 1")
    beta2: float = option(0.999, "AdamW beta2", check=">= 0, < 1")
    eps: float = option(1e-8, "AdamW epsilon", check="> 0, finite")
    weight_decay: float = option(1.1e-4, "AdamW weight decay", check=">= 0, finite")
    grad_clip: float = option(1.0, "gradient-norm clip (0: off)", check=">= 0, finite")
    ema_decay: float = option(
        0.0, "EMA of the trained weights used for evaluation (0: off)", check=">= 0, < 1"
    )


@dataclass
class RunConfig:
    out_dir: str = option("runs/cgrpo", "run folder: config, logs, images, plots, checkpoints")
    steps: int = option(200, "training steps (rollout + update each)", unit="steps", check=">= 0")
    seed: int = option(
        0, "seed of data, noise and step subsets", check=">= 0, < 9223372036854775808"
    )
    time_budget: float = option(
        0.0,
        "stop training once the steps taken have spent this long on rollout, rewards and "
        "update (evaluation and checkpoints not counted; kept across resume; 0: off): runs "
        "of different methods at one wall-clock budget",
        unit="s",
        check=">= 0",
    )
    threads: int = option(0, "torch CPU threads (0: torch's default)", check=">= 0")
    log_every: int = option(1, "CSV/tensorboard row every N steps", unit="steps", check=">= 1")
    image_every: int = option(25, "image grid every N steps (0: off)", unit="steps", check=">= 0")
    checkpoint_every: int = option(
        25,
        "checkpoint every N steps (0: only at the end)",
        unit="steps",
        check=">= 0",
    )
    keep_last: int = option(2, "checkpoints kept (older ones are deleted)", check=">= 1")
    max_skips: int = option(
        5,
        "consecutive steps skipped for NaN/inf rewards or loss before the run stops",
        check=">= 0",
    )
    fsdp: bool = option(
        False,
        "with several processes (accelerate launch): shard the policy's weights, gradients "
        "and optimizer state over them (torch FSDP2, a unit per transformer block) instead "
        "of replicating them (DDP)",
    )
    eval: bool = option(True, "evaluate base and trained policy on held-out pairs and print both")
    eval_steps: int = option(
        0, "sampler steps of evaluation (0: sampler.num_steps)", unit="steps", check=">= 0"
    )
    eval_every: int = option(
        0,
        "also evaluate on the held-out pairs every N steps, logged as eval/<reward> (0: off)",
        unit="steps",
        check=">= 0",
    )
    eval_batch_size: int = option(
        64,
        "images drawn and scored per batch in evaluation (cgrpo eval uses the same)",
        unit="images",
        check=">= 1",
    )
    eval_micro_batch_size: int = option(
        0,
        "images per pass of the models (condition, sampler, decoder) within an evaluation "
        "batch; the images do not depend on it (0: the whole batch; cgrpo eval uses the same)",
        unit="images",
        check=">= 0",
    )
    log_with: list[str] = option(
        ["tensorboard"],
        "accelerate trackers besides metrics.csv: tensorboard, wandb, mlflow, aim, ... "
        "(each needs its package; W&B offline: WANDB_MODE=offline); [] for the CSV only",
    )


@dataclass
class TrainConfig:
    """Everything ``cgrpo train`` needs, section by section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    rewards: dict[str, Any] = option(
        DEFAULT_REWARDS,
        "named rewards: name -> {kind: registry name, weight: static weight (1), "
        "...options of the reward}; null removes one (see docs/rewards.md)",
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_ranges(self)  # every key's declared range first (also for direct construction)
        if self.grpo.group_size < 2:
            raise ValueError("grpo.group_size must be >= 2: advantages compare samples in a group")
        if self.sampler.eta <= 0:
            raise ValueError("sampler.eta must be > 0: GRPO needs a stochastic sampler")
        if not 0 <= self.sampler.ode_tail < self.sampler.num_steps:
            raise ValueError("sampler.ode_tail must be in [0, sampler.num_steps - 1]")
        self.sampler.schedule.validate(self.sampler.num_steps)
        if self.model.lora_rank < 0:
            raise ValueError(f"model.lora_rank must be >= 0, got {self.model.lora_rank}")
        if self.model.lora_rank and self.model.kind != "embedded":
            raise ValueError(
                "model.lora_rank is the embedded model's LoRA; a FLUX policy always trains a "
                "LoRA: set flux.lora_rank instead"
            )
        self._check_lr_schedule()
        self.rewards = canonical_rewards(self.rewards)
        m = self.method
        check_distinct(m.pair)
        if isinstance(m.weighting, StaticWeights):
            m.weighting.check_names(self.rewards)
        for what in (m.shaping, m.weighting):
            if what.uses_pair():
                strategy = f"method.{what.registry.family}={what.kind}"
                check_pair(m.pair, self.rewards, needed_by=strategy)

    def _check_lr_schedule(self) -> None:
        o = self.optim
        horizon = o.schedule_steps or self.run.steps
        if o.schedule == "cosine" and horizon <= o.warmup:
            raise ValueError(
                f"optim.schedule=cosine decays from the end of the warm-up ({o.warmup} "
                f"steps) to step {horizon} (optim.schedule_steps, 0: run.steps): make "
                "optim.warmup smaller or optim.schedule_steps larger"
            )
