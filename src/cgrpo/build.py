"""From a :class:`~cgrpo.train_config.TrainConfig` to the run's components: the policy, the
pair source, the named rewards, the held-out evaluator. Nothing here trains or writes."""

from __future__ import annotations

from cgrpo.data import EmbeddedData, PairSource
from cgrpo.distributed import Dist
from cgrpo.evaluator import EvalPairs, Evaluator
from cgrpo.policies.base import Policy
from cgrpo.reward_set import RewardSet, parse_rewards
from cgrpo.sde import sigma_schedule
from cgrpo.train_config import TrainConfig

__all__ = ["build_policy", "build_data", "build_rewards", "build_evaluator", "eval_pairs_of"]


def build_policy(
    cfg: TrainConfig,
    device: str | None = None,
    shard_later: bool = False,
    keep_reference: bool | None = None,
) -> Policy:
    """The policy named by ``cfg.model`` on ``device`` (default ``cfg.model.device``).

    ``keep_reference``: keep a frozen copy of the starting policy (embedded; for the KL
    penalty); default: when ``grpo.kl_coef > 0``. ``shard_later``: FSDP will shard the
    FLUX transformer, so it is built in CPU memory and each GPU only ever receives its
    shards (plus one block at a time while sharding)."""
    device = device or cfg.model.device
    if keep_reference is None:
        keep_reference = cfg.grpo.kl_coef > 0
    if cfg.model.kind == "embedded":
        from cgrpo.policies.embedded import EmbeddedPolicy

        return EmbeddedPolicy(
            weights=cfg.model.weights, device=device, keep_reference=keep_reference
        )
    from cgrpo.policies.flux import FluxPolicy  # KL reference = the same model, LoRA disabled

    return FluxPolicy(cfg.flux, device=device, transformer_device="cpu" if shard_later else None)


def build_data(cfg: TrainConfig) -> PairSource:
    """The pair source named by ``cfg.data.kind``."""
    d = cfg.data
    if d.kind == "embedded":
        return EmbeddedData(d.attribute_prob, d.eval_prompts_per_subject, d.eval_seed)
    from cgrpo.datasets import DreamBenchPairs, JsonlPairs, PairsWithEval

    size = cfg.flux.resolution
    if d.kind == "dreambench":
        return DreamBenchPairs(d.root, size, d.prompts_per_subject)
    if d.path is None:
        raise ValueError("data.kind=jsonl needs data.path (a JSONL file of reference/prompt pairs)")
    train = JsonlPairs(d.path, size)
    if d.eval_root:
        return PairsWithEval(train, DreamBenchPairs(d.eval_root, size, d.prompts_per_subject))
    return train


def build_rewards(cfg: TrainConfig, device: str | None = None) -> RewardSet:
    """The run's named rewards, on ``device`` (default the policy's) unless their options
    name one; every option name is checked before the first model loads."""
    return RewardSet.build(parse_rewards(cfg.rewards), device or cfg.model.device)


def eval_pairs_of(data: PairSource) -> EvalPairs:
    """The held-out pairs of a pair source (with their ground truth where it has one)."""
    refs, prompts, subjects = data.eval_pairs()
    truth = data.eval_truth() if hasattr(data, "eval_truth") else None
    return EvalPairs.from_lists(refs, prompts, subjects, truth)


def build_evaluator(
    cfg: TrainConfig,
    pairs: EvalPairs,
    metrics: RewardSet,
    dist: Dist | None = None,
    images_per_pair: int | None = None,
) -> Evaluator:
    """The run's held-out evaluator: its sampler schedule (``run.eval_steps`` or
    ``sampler.num_steps``, ``sampler.shift``), noise seed ``data.eval_seed``,
    ``data.eval_noises`` images per pair, ``run.eval_batch_size``."""
    steps = cfg.run.eval_steps or cfg.sampler.num_steps
    return Evaluator(
        pairs,
        metrics,
        sigma_schedule(steps, cfg.sampler.shift),
        seed=cfg.data.eval_seed,
        images_per_pair=images_per_pair or cfg.data.eval_noises,
        batch_size=cfg.run.eval_batch_size,
        dist=dist,
    )
