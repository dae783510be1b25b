"""Rollout schedules: full / window / branch (which steps are SDE and trained)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.sampling.rollout import sample_groups, sample_ode
from cgrpo.sampling.schedule import SCHEDULES, BranchSchedule, FullSchedule, WindowSchedule
from cgrpo.sampling.sde import sigma_schedule
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config, record_weighted_steps, straight_and_resumed

G = torch.Generator


def test_masks() -> None:
    gen = G().manual_seed(0)
    assert set(SCHEDULES.kinds) >= {"full", "window", "branch"}
    assert FullSchedule().sde_mask(5, 1, 0, generator=gen) == [True] * 4 + [False]
    w = WindowSchedule(size=2, start=1)
    assert w.sde_mask(6, 0, 7, generator=gen) == [False, True, True, False, False, False]
    moving = WindowSchedule(size=2, start=1, every=3, stride=1)
    firsts = [moving.first(6, step) for step in range(0, 15, 3)]
    assert firsts == [1, 2, 3, 4, 1]  # slides later, wraps to the start
    assert BranchSchedule(k=2, at=3).sde_mask(6, 0, 0, generator=gen) == [False] * 3 + [
        True
    ] * 2 + [False]
    drawn = {
        BranchSchedule(k=1, lo=1, hi=3).sde_mask(6, 0, 0, generator=gen).index(True)
        for _ in range(50)
    }
    assert drawn == {1, 2, 3}
    with pytest.raises(ValueError, match="does not fit"):
        WindowSchedule(size=4, start=3).validate(6)
    with pytest.raises(ValueError, match="does not fit"):
        BranchSchedule(k=2, at=5).validate(6)


def _policy(tiny_weights: Path):
    from cgrpo.data.base import images_to_tensor
    from cgrpo.policies.embedded import EmbeddedPolicy
    from cgrpo.world.scene import all_subjects, reference_image

    pol = EmbeddedPolicy(weights=str(tiny_weights))
    subjects = all_subjects()[0][:2]
    refs = images_to_tensor([reference_image(s) for s in subjects])
    return pol, pol.encode_condition(refs, ["a circle", "a square"])


def _flow_rollout(pol, cond, group_size: int, *, seed: int, **kw):
    """A rollout with the flow SDE at eta 0.7 (one shared noise per group), drawn from a
    generator seeded with ``seed``."""
    return sample_groups(
        pol, cond, group_size, eta=0.7, kind="flow", generator=G().manual_seed(seed), **kw
    )


def test_branch_shares_the_groups_prefix_exactly(tiny_weights: Path) -> None:
    pol, cond = _policy(tiny_weights)
    sigmas = sigma_schedule(6, 3.0)
    calls = []
    velocity = pol.velocity
    pol.velocity = lambda x, s, c: calls.append(len(x)) or velocity(x, s, c)
    mask = BranchSchedule(k=2, at=3).sde_mask(6, 0, 0, generator=G())
    roll = _flow_rollout(pol, cond, 4, sigmas=sigmas, seed=0, sde_mask=mask)
    # the prefix ran once per group (2 latents + 1 padding group, so that every process of
    # a sharded policy makes the same passes: ceil(8 / 4) + 1), the rest for all 8 samples
    assert calls == [3, 3, 3, 8, 8, 8]
    assert roll.sde_steps == (3, 4)
    assert (
        torch.isfinite(roll.log_probs[3:5]).all()
        and torch.isnan(roll.log_probs[[0, 1, 2, 5]]).all()
    )
    for t in range(4):  # identical within a group up to the branch, and the group's ODE path
        for g in range(2):
            same = roll.latents[t, 4 * g : 4 * g + 4]
            assert torch.equal(same, same[:1].expand_as(same))
    pol.velocity = velocity
    ode = sample_ode(pol, cond, sigmas[:4], noise=roll.latents[0, ::4])
    torch.testing.assert_close(roll.latents[3, ::4], ode, rtol=0, atol=1e-6)
    assert not torch.equal(roll.latents[5, 0], roll.latents[5, 1])  # branched


def test_full_mask_is_the_ode_tail(tiny_weights: Path) -> None:
    pol, cond = _policy(tiny_weights)
    sigmas = sigma_schedule(4, 3.0)
    a = _flow_rollout(pol, cond, 3, sigmas=sigmas, seed=1, ode_tail=1)
    mask = FullSchedule().sde_mask(4, 1, 0, generator=G())
    b = _flow_rollout(pol, cond, 3, sigmas=sigmas, seed=1, sde_mask=mask)
    assert torch.equal(a.latents, b.latents) and a.sde_steps == b.sde_steps == (0, 1, 2)


@pytest.mark.parametrize(
    "schedule",
    [
        ["sampler.schedule.kind=full"],
        ["sampler.schedule.kind=window", "sampler.schedule.size=2", "sampler.schedule.start=1"],
        ["sampler.schedule.kind=branch", "sampler.schedule.k=2"],
    ],
    ids=["full", "window", "branch"],
)
def test_only_sde_steps_are_trained_at_true_index_with_ratio_one(
    tmp_path: Path, tiny_weights: Path, schedule: list[str]
) -> None:
    cfg = fast_config(
        tmp_path, tiny_weights, "sampler.num_steps=5", "grpo.timestep_fraction=1",
        "run.eval=false", *schedule,
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    weighted = record_weighted_steps(trainer)
    roll, _, _ = trainer.rollout()
    a = torch.randn(roll.latents.shape[1])
    stats = trainer.update(roll, {"identity": a, "prompt": -a})
    assert sorted(weighted) == list(roll.sde_steps)  # every SDE step, nothing else
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and stats["clip_fraction"] == 0
    if "kind=window" in schedule[0]:
        assert roll.sde_steps == (1, 2)
    if "kind=branch" in schedule[0]:
        assert len(roll.sde_steps) == 2 and roll.sde_steps[1] == roll.sde_steps[0] + 1


@pytest.mark.parametrize(
    "schedule",
    [
        ["sampler.schedule.kind=window", "sampler.schedule.every=1"],
        ["sampler.schedule.kind=branch"],
    ],
    ids=["progressive-window", "drawn-branch"],
)
def test_resume_equals_uninterrupted(
    tmp_path: Path, tiny_weights: Path, schedule: list[str]
) -> None:
    args = ["sampler.num_steps=4", "run.eval=false", *schedule]
    straight, resumed = straight_and_resumed(tmp_path, tiny_weights, args)
    assert all(torch.equal(p, q) for p, q in zip(straight.params, resumed.params, strict=True))


def test_shared_prefix_makes_the_same_passes_on_every_shard(tiny_weights: Path) -> None:
    """Shards that split groups unevenly still run as many prefix passes (FSDP in step),
    and each shard's samples equal the one-process rollout's."""
    pol, cond = _policy(tiny_weights)
    cond = cond.repeat_interleave(3)  # 6 pairs
    sigmas = sigma_schedule(5, 3.0)
    mask = BranchSchedule(k=1, at=2).sde_mask(5, 0, 0, generator=G())
    whole = _flow_rollout(pol, cond, 4, sigmas=sigmas, seed=3, micro_batch_size=1, sde_mask=mask)
    velocity, counts = pol.velocity, []
    for shard in (slice(0, 6), slice(6, 12), slice(12, 18), slice(18, 24)):  # 2, 3, 3, 2 groups
        calls = []
        pol.velocity = lambda x, s, c, calls=calls: calls.append(len(x)) or velocity(x, s, c)
        part = _flow_rollout(
            pol, cond, 4, sigmas=sigmas, seed=3, micro_batch_size=1, shard=shard, sde_mask=mask
        )
        counts.append(len(calls))
        torch.testing.assert_close(part.latents, whole.latents[:, shard], rtol=0, atol=1e-6)
    pol.velocity = velocity
    assert len(set(counts)) == 1
