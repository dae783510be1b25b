"""Objectives: grpo (the paper's) and nft (DiffusionNFT), their math and their old policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cgrpo.method.loss import nft_loss, optimality
from cgrpo.method.objective import OBJECTIVES, NFTObjective, forward_noise
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config, record_weighted_steps, straight_and_resumed

NFT = ["method.objective.kind=nft"]


def test_optimality_maps_clipped_advantage_to_unit_interval() -> None:
    a = torch.tensor([-9.0, -2.0, 0.0, 1.0, 2.0, 7.0])
    assert optimality(a, 2.0).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="adv_clip"):
        optimality(a, 0.0)


def _numpy_nft(v, v_old, x_s, x0, s, r, beta, adaptive):
    """The loss written out sample by sample, element by element, in numpy."""
    out = []
    for i in range(v.shape[0]):
        pos = (1 - beta) * v_old[i] + beta * v[i]
        neg = (1 + beta) * v_old[i] - beta * v[i]
        terms = []
        for u in (pos, neg):
            err = (x_s[i] - s[i] * u) - x0[i]
            d = max(np.abs(err).mean(), 1e-5) if adaptive else 1.0
            terms.append((err**2).mean() / d)
        out.append((r[i] * terms[0] + (1 - r[i]) * terms[1]) / beta)
    return np.array(out)


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_nft_loss_equals_an_independent_formula(beta: float, adaptive: bool) -> None:
    g = torch.Generator().manual_seed(0)
    b, shape = 4, (2, 3, 3)
    v, v_old, x0, eps = (torch.randn(b, *shape, generator=g, dtype=torch.float64) for _ in "abcd")
    s = torch.tensor([1.0, 0.7, 0.35, 0.1], dtype=torch.float64)
    x_s = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * eps
    r = torch.tensor([0.0, 0.25, 0.9, 1.0], dtype=torch.float64)
    loss, per = nft_loss(v, v_old, x_s, x0=x0, sigma=s, r=r, beta=beta, adaptive=adaptive)
    want = _numpy_nft(*(t.numpy() for t in (v, v_old, x_s, x0, s, r)), beta, adaptive)
    np.testing.assert_allclose(per.numpy(), want, rtol=1e-12)
    assert loss.item() == pytest.approx(want.mean(), rel=1e-12)


def test_nft_gradient_with_r_one_points_along_flow_matching() -> None:
    """On-policy (v = v_old) with r = 1 everywhere, the gradient of the nft loss with
    respect to the weights of a model is a positive multiple of the plain flow-matching
    gradient (one sample, so one positive scale), for any beta."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    x0, eps = torch.randn(1, 8), torch.randn(1, 8)
    s = 0.6
    x_s = (1 - s) * x0 + s * eps

    def grads(loss: torch.Tensor) -> torch.Tensor:
        net.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    fm = grads(((net(x_s) - (eps - x0)) ** 2).mean())  # flow matching: v regresses eps - x0
    for beta in (1.0, 0.1):
        v = net(x_s)
        loss, _ = nft_loss(v, v.detach(), x_s, x0=x0, sigma=s, r=torch.ones(1), beta=beta)
        g = grads(loss)
        cos = torch.dot(g, fm) / (g.norm() * fm.norm())
        assert cos.item() == pytest.approx(1.0, abs=1e-6)
    # and r = 0 pushes the other way
    v = net(x_s)
    g = grads(nft_loss(v, v.detach(), x_s, x0=x0, sigma=s, r=torch.zeros(1), beta=1.0)[0])
    assert torch.dot(g, fm).item() < 0


def test_forward_noise_depends_only_on_seed_step_and_sample() -> None:
    a = forward_noise((2, 3), 7, 4, samples=torch.tensor([0, 1, 2, 3]))
    b = forward_noise((2, 3), 7, 4, samples=torch.tensor([2, 3]))  # another process's share
    assert torch.equal(a[2:], b)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, forward_noise((2, 3), 7, 5, samples=torch.tensor([0, 1, 2, 3])))


def test_nft_options_are_checked() -> None:
    assert set(OBJECTIVES.kinds) >= {"grpo", "nft"}
    with pytest.raises(ValueError, match="beta"):
        NFTObjective(beta=0.0)
    with pytest.raises(ValueError, match="decay_max"):
        NFTObjective(decay_max=1.0)
    o = NFTObjective(decay_flat=2, decay_rate=0.1, decay_max=0.25)
    assert [o.decay(k) for k in (1, 2, 3, 4, 9)] == [0.0, 0.0, pytest.approx(0.1), 0.2, 0.25]


def test_embedded_old_policy_is_a_soft_updated_copy(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path, tiny_weights, "run.eval=false", *NFT)
    trainer = GRPOTrainer(cfg)
    pol = trainer.policy
    old0 = pol.old_state_dict()
    cur0 = pol.trainable_state_dict()
    assert all(torch.equal(old0[k], cur0[k]) for k in cur0)
    assert all(not p.requires_grad for p in pol.old_model.parameters())
    with torch.no_grad():
        for p in pol.model.parameters():
            p.add_(1.0)
    pol.soft_update_old(0.25)
    for k, v in pol.old_state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * old0[k] + 0.75 * (cur0[k] + 1.0))


def test_nft_trains_with_tdw_at_the_sampling_index(tmp_path: Path, tiny_weights: Path) -> None:
    """nft trains a random subset of ALL steps (any schedule), weights each by TDW at its
    own index, moves the weights, and leaves the old policy a lagging mix."""
    cfg = fast_config(
        tmp_path, tiny_weights, "sampler.num_steps=5", "grpo.timestep_fraction=1",
        "run.eval=false", "sampler.schedule.kind=branch", "sampler.schedule.k=1",
        "method.objective.decay_rate=0.5", *NFT,
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    weighted = record_weighted_steps(trainer)
    before = trainer.policy.trainable_state_dict()
    roll, _, _ = trainer.rollout()
    assert len(roll.sde_steps) == 1  # one SDE step sampled, yet all five are trained
    a = torch.randn(roll.latents.shape[1])
    stats = trainer.update(roll, {"identity": a, "prompt": -a})
    assert sorted(weighted) == [0, 1, 2, 3, 4]
    assert stats["old_decay"] == 0.0 + 0.5  # decay after training step 1
    after = trainer.policy.trainable_state_dict()
    old = trainer.policy.old_state_dict()
    k = next(
        k for k in after if after[k].is_floating_point() and not torch.equal(after[k], before[k])
    )
    torch.testing.assert_close(old[k], 0.5 * before[k] + 0.5 * after[k])


def test_nft_resume_equals_uninterrupted(tmp_path: Path, tiny_weights: Path) -> None:
    args = ["sampler.num_steps=4", "run.eval=false", "method.objective.decay_rate=0.3", *NFT]
    straight, resumed = straight_and_resumed(tmp_path, tiny_weights, args)
    assert all(torch.equal(p, q) for p, q in zip(straight.params, resumed.params, strict=True))
    so, ro = straight.policy.old_state_dict(), resumed.policy.old_state_dict()
    assert all(torch.equal(so[k], ro[k]) for k in so)
    # a grpo checkpoint does not resume as nft
    GRPOTrainer(fast_config(tmp_path / "c", tiny_weights, "run.steps=1", "run.eval=false")).train(
        quiet=True
    )
    c = GRPOTrainer(fast_config(tmp_path / "c", tiny_weights, "run.steps=2", *args[1:]))
    with pytest.raises(ValueError, match=r"setting\(s\) differ .*method\.objective"):
        c.train(resume=True, quiet=True)  # (another objective changes what a step is)
    with pytest.raises(ValueError, match="old policy"):
        c.train(resume=True, quiet=True, allow_changes=True)


def test_nft_on_tiny_flux_keeps_the_old_policy_as_a_second_adapter(
    flux_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import flux_train_config

    cfg = flux_train_config(
        flux_dir, tmp_path, "run.steps=2", "run.eval=false", "method.objective.decay_rate=0.5",
        "method.objective.kl_coef=0.01", *NFT,
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    pol = trainer.policy
    tr = pol.transformer
    names = [n for n, _ in tr.named_parameters()]
    old_names = [n for n in names if ".old." in n]
    default_names = [n for n in names if "lora_" in n and ".default." in n]
    assert old_names and len(old_names) == len(default_names)
    assert sum(p.numel() for p in trainer.params) == sum(
        p.numel() for n, p in tr.named_parameters() if n in default_names
    )  # the optimizer sees the trainable adapter only
    assert all(not p.requires_grad for n, p in tr.named_parameters() if ".old." in n)
    before = {n: p.detach().clone() for n, p in tr.named_parameters()}
    trainer.train(quiet=True)
    after = dict(tr.named_parameters())
    changed = {n for n in names if not torch.equal(after[n].detach(), before[n])}
    assert changed and changed <= set(default_names) | set(old_names)
    assert changed & set(default_names) and changed & set(old_names)
    # a second adapter, not a copy of the transformer: velocity with each adapter
    cond = pol.encode_condition(torch.rand(2, 3, 16, 16), ["a dog in the snow"] * 2)
    x = torch.randn(2, *pol.latent_shape())
    sig = torch.full((2,), 0.5)
    v, v_old = pol.velocity(x, sig, cond), pol.old_velocity(x, sig, cond)
    assert not torch.allclose(v, v_old)
    # the old adapter's weights, loaded into the trainable one, give the old velocity
    old_as_default = {
        k: after[k.removesuffix(".weight") + ".old.weight"].detach().clone()
        for k in pol.trainable_state_dict()
    }
    pol.load_trainable_state_dict(old_as_default)
    torch.testing.assert_close(pol.velocity(x, sig, cond), v_old)
    assert all(p.requires_grad for p in pol.trainable_parameters())


def test_nft_center_makes_each_groups_shaped_advantage_zero_mean() -> None:
    """SARS's bonus is not zero-mean; with center, 2r - 1 sums to zero in every group (no
    net pull toward or away from the model's own samples)."""
    a = torch.tensor([1.0, 2.0, -0.5, 0.3, 0.3, 4.0])
    ids = torch.tensor([7, 7, 2, 2, 7, 2])
    out = NFTObjective(center=True).prepare(a, ids)
    for g in (7, 2):
        assert out[ids == g].sum().abs() < 1e-6
        torch.testing.assert_close(out[ids == g], a[ids == g] - a[ids == g].mean())
    assert torch.equal(NFTObjective().prepare(a, ids), a)


def test_loss_context_fields_are_named() -> None:
    """The loss context's nine fields are keywords only: no two floats can swap places."""
    from cgrpo.method.objective import LossContext

    fields = dict(
        velocity=None, policy=None, sampler_kind="dance", eta=0.7, clip_range=0.2,
        adv_clip=5.0, kl_coef=0.0, noise_seed=3, offset=4,
    )  # fmt: skip
    ctx = LossContext(**fields)
    assert (ctx.clip_range, ctx.adv_clip, ctx.offset) == (0.2, 5.0, 4)
    with pytest.raises(TypeError):
        LossContext(*fields.values())  # type: ignore[misc]
