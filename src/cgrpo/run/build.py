"""From a :class:`~cgrpo.run.config.TrainConfig` to the run's components: the policy, the
pair source, the named rewards, the held-out evaluator. Nothing here trains or writes."""

from __future__ import annotations

import torch

from cgrpo.data.base import EmbeddedData, PairSource, PairsWithEval
from cgrpo.data.overlap import check_eval_overlap
from cgrpo.policies.base import Policy
from cgrpo.rewards.set import RewardSet
from cgrpo.rewards.spec import parse_rewards
from cgrpo.run.config import TrainConfig
from cgrpo.sampling.sde import sigma_schedule
from cgrpo.world.split import SubjectSplit, read_split, shipped_held_out, shipped_split

__all__ = [
    "build_policy",
    "build_data",
    "subject_split",
    "build_rewards",
    "eval_sigmas",
]


def build_policy(
    cfg: TrainConfig,
    device: str | None = None,
    shard_later: bool = False,
    *,
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

        m = cfg.model
        lora = (m.lora_rank, m.lora_alpha, list(m.lora_targets)) if m.lora_rank > 0 else None
        return EmbeddedPolicy(
            weights=m.weights, device=device, keep_reference=keep_reference, lora=lora
        )
    from cgrpo.policies.flux.policy import (
        FluxPolicy,  # KL reference = the same model, LoRA disabled
    )

    return FluxPolicy(cfg.flux, device=device, transformer_device="cpu" if shard_later else None)


def build_data(cfg: TrainConfig) -> PairSource:
    """The pair source named by ``cfg.data.kind``; a run whose training pairs contain an
    evaluation pair stops here, before any model loads, unless
    ``data.allow_eval_overlap`` (:func:`~cgrpo.data.overlap.check_eval_overlap`)."""
    d = cfg.data
    if d.kind == "embedded":
        return EmbeddedData(
            d.attribute_prob, d.eval_prompts_per_subject, d.eval_seed, split=subject_split(cfg)
        )
    source = _file_pairs(cfg)
    check_eval_overlap(source, allow=d.allow_eval_overlap)
    return source


def subject_split(cfg: TrainConfig) -> SubjectSplit:
    """The embedded subjects' split of the run's base generator (``model.weights``, read from
    its metadata): the identities the base never saw are the held-out ones, or the shipped
    base's 8 of them with ``data.eval_split=shipped``. The shipped split when the model is not
    the embedded one."""
    if cfg.model.kind != "embedded":
        return shipped_split()
    split = read_split(cfg.model.weights)
    if cfg.data.eval_split == "shipped":
        return shipped_held_out(split, f"model.weights '{cfg.model.weights}'")
    return split


def _file_pairs(cfg: TrainConfig) -> PairSource:
    """A DreamBench folder, or a pair file (evaluated on a DreamBench folder when
    ``data.eval_root`` names one)."""
    from cgrpo.data.dreambench import DreamBenchPairs
    from cgrpo.data.files import JsonlPairs

    d = cfg.data
    size, whole = cfg.flux.resolution, keeps_aspect(cfg)
    if d.kind == "dreambench":
        return DreamBenchPairs(d.root, size, d.prompts_per_subject, keep_aspect=whole)
    if d.path is None:
        raise ValueError("data.kind=jsonl needs data.path (a JSONL file of reference/prompt pairs)")
    train = JsonlPairs(
        d.path, size, skip_bad=d.skip_bad, keep_aspect=whole, image_root=d.image_root,
        fields=d.fields,
    )  # fmt: skip
    multi = next((e for e in train.entries if len(e.references) > 1), None)
    if multi is not None and (cfg.model.kind != "flux" or cfg.flux.position_scheme != "uno"):
        raise ValueError(
            f"'{d.path}': pair '{multi.name}' has {len(multi.references)} references; several "
            "references per pair are UNO's multi-subject generation: set model.kind=flux and "
            "flux.position_scheme=uno (Kontext and the embedded model take one)"
        )
    if d.eval_root:
        held_out = DreamBenchPairs(d.eval_root, size, d.prompts_per_subject, keep_aspect=whole)
        return PairsWithEval(train, held_out)
    return train


def keeps_aspect(cfg: TrainConfig) -> bool:
    """Whether the datasets hand the policy whole references (it prepares them itself:
    ``flux.reference_preprocess`` kontext or uno) rather than square crops."""
    return cfg.model.kind == "flux" and cfg.flux.reference_preprocess != "square"


def build_rewards(cfg: TrainConfig, device: str | None = None) -> RewardSet:
    """The run's named rewards, on ``device`` (default the policy's) unless their options
    name one; every option name is checked before the first model loads."""
    return RewardSet.build(parse_rewards(cfg.rewards), device or cfg.model.device)


def eval_sigmas(cfg: TrainConfig, steps: int = 0) -> torch.Tensor:
    """The sigma schedule a run evaluates (and ``cgrpo sample`` draws) with: ``steps``, else
    ``run.eval_steps``, else ``sampler.num_steps``, at ``sampler.shift``."""
    return sigma_schedule(steps or cfg.run.eval_steps or cfg.sampler.num_steps, cfg.sampler.shift)
