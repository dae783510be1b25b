"""Group rollouts: shared noise, recorded log-probs, the deterministic tail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.data.base import EmbeddedData
from cgrpo.policies.embedded import EmbeddedPolicy
from cgrpo.sampling.rollout import sample_groups, sample_ode
from cgrpo.sampling.sde import euler_step, sde_step, sigma_schedule


@pytest.fixture()
def setup(tiny_weights: Path):
    policy = EmbeddedPolicy(weights=tiny_weights)
    # a non-zero output layer, so that samples depend on the model
    torch.manual_seed(1)
    torch.nn.init.normal_(policy.model.head[-1].weight, std=0.05)
    refs, prompts = EmbeddedData().sample(3, __import__("random").Random(0))
    return policy, policy.encode_condition(refs, prompts)


def test_shared_noise_within_groups(setup) -> None:
    policy, cond = setup
    sig = sigma_schedule(4)
    gen = torch.Generator().manual_seed(0)
    roll = sample_groups(policy, cond, 4, sigmas=sig, eta=0.4, same_noise=True, generator=gen)
    x0 = roll.latents[0].view(3, 4, -1)
    assert torch.equal(x0[:, 0], x0[:, 3]) and not torch.equal(x0[0, 0], x0[1, 0])
    # the SDE makes the group members differ by the end
    assert not torch.equal(roll.final[0], roll.final[1])
    assert roll.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    other = sample_groups(policy, cond, 4, sigmas=sig, eta=0.4, same_noise=False, generator=gen)
    assert not torch.equal(other.latents[0][0], other.latents[0][1])


def test_recorded_log_probs_rescore_exactly(setup) -> None:
    policy, cond = setup
    sig = sigma_schedule(4)
    roll = sample_groups(
        policy, cond, 2, sigmas=sig, eta=0.4, generator=torch.Generator().manual_seed(0)
    )
    assert roll.num_sde_steps == 4 and torch.isfinite(roll.log_probs).all()
    for t in range(4):
        s = torch.full((6,), float(sig[t]))
        v = policy.velocity(roll.latents[t], s, roll.condition)
        _, logp, _, _ = sde_step(
            roll.latents[t],
            v,
            float(sig[t]),
            sigma_next=float(sig[t + 1]),
            eta=0.4,
            prev_sample=roll.latents[t + 1],
        )
        torch.testing.assert_close(logp, roll.log_probs[t], rtol=0, atol=1e-5)


def test_ode_tail_is_deterministic_and_untrainable(setup) -> None:
    policy, cond = setup
    sig = sigma_schedule(5)
    roll = sample_groups(
        policy, cond, 2, sigmas=sig, eta=0.4, ode_tail=2, generator=torch.Generator()
    )
    assert roll.num_sde_steps == 3
    assert torch.isnan(roll.log_probs[3:]).all() and torch.isfinite(roll.log_probs[:3]).all()
    s = torch.full((6,), float(sig[4]))
    v = policy.velocity(roll.latents[4], s, roll.condition)
    torch.testing.assert_close(
        roll.final, euler_step(roll.latents[4], v, float(sig[4]), sigma_next=0.0)
    )


def test_ode_sampler_is_deterministic(setup) -> None:
    policy, cond = setup
    noise = torch.randn(3, *policy.latent_shape(), generator=torch.Generator().manual_seed(0))
    a = sample_ode(policy, cond, sigma_schedule(4), noise=noise)
    b = sample_ode(policy, cond, sigma_schedule(4), noise=noise, micro_batch_size=2)
    torch.testing.assert_close(a, b)


def test_bad_rollouts_raise(setup) -> None:
    policy, cond = setup
    with pytest.raises(ValueError, match="eta > 0"):
        sample_groups(policy, cond, 2, sigmas=sigma_schedule(3), eta=0.0)
    with pytest.raises(ValueError, match="empty batch"):
        sample_groups(policy, cond.index(slice(0, 0)), 2, sigmas=sigma_schedule(3), eta=0.4)
    with pytest.raises(ValueError, match="ode_tail"):
        sample_groups(policy, cond, 2, sigmas=sigma_schedule(3), eta=0.4, ode_tail=3)


def test_samples_do_not_depend_on_micro_batch_or_shard(setup) -> None:
    """Each step's noise is drawn once for all samples, so splitting the batch (micro-
    batches, or processes taking shards) gives the same samples and log-probs."""
    policy, cond = setup
    sig = sigma_schedule(4)

    def run(**kw):
        gen = torch.Generator().manual_seed(7)
        return sample_groups(policy, cond, 4, sigmas=sig, eta=0.5, generator=gen, **kw)

    whole = run()
    parts = [run(shard=slice(0, 6), micro_batch_size=4), run(shard=slice(6, 12))]
    for key in ("latents", "log_probs"):
        joined = torch.cat([getattr(p, key) for p in parts], dim=1)
        torch.testing.assert_close(joined, getattr(whole, key), rtol=1e-5, atol=1e-6)
    assert parts[1].group_ids.tolist() == [1, 1, 2, 2, 2, 2]  # global ids
    with pytest.raises(ValueError, match="empty"):
        run(shard=slice(12, 12))


def test_sampling_settings_are_named(setup) -> None:
    """Past (policy, condition, group_size) every setting of a rollout is a keyword: a
    positional sigma schedule is refused instead of being read as something else."""
    policy, cond = setup
    with pytest.raises(TypeError, match="positional"):
        sample_groups(policy, cond, 2, sigma_schedule(3), 0.4)  # type: ignore[misc]
    roll = sample_groups(policy, cond, 2, sigmas=sigma_schedule(3), eta=0.4)
    assert roll.num_steps == 3 and roll.group_ids.tolist() == [0, 0, 1, 1, 2, 2]


def test_rewarded_image_is_the_last_steps_clean_prediction(setup) -> None:
    """With an SDE last step, the rewards score x - sigma * v of that step (the released
    code's pred_original), not the noisy last sample; with a deterministic last step to
    sigma = 0 the two are the same tensor values."""
    policy, cond = setup
    sig = sigma_schedule(4)
    roll = sample_groups(
        policy, cond, 2, sigmas=sig, eta=0.4, ode_tail=0, generator=torch.Generator()
    )
    x, s = roll.latents[3], float(sig[3])
    v = policy.velocity(x, torch.full((6,), s), roll.condition)
    torch.testing.assert_close(roll.rewarded, x - s * v, rtol=0, atol=1e-6)
    assert (roll.rewarded - roll.final).abs().mean() > 1e-3  # the last step's noise
    noisy = sample_groups(
        policy, cond, 2, sigmas=sig, eta=0.4, ode_tail=0, generator=torch.Generator(),
        reward_image="sample",
    )  # fmt: skip
    assert torch.equal(noisy.rewarded, noisy.final)
    assert torch.equal(noisy.final, roll.final)  # the choice does not change the sampling
    tail = sample_groups(
        policy, cond, 2, sigmas=sig, eta=0.4, ode_tail=1, generator=torch.Generator()
    )
    assert torch.equal(tail.rewarded, tail.final)
    with pytest.raises(ValueError, match="reward_image"):
        sample_groups(policy, cond, 2, sigmas=sig, eta=0.4, reward_image="x0")
