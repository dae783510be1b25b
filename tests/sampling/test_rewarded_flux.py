"""The FLUX tier rewards the clean prediction of the last step, ``x - sigma * v``, as the
paper's released code does (its ``latents = pred_original``), on a tiny random FLUX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cgrpo.policies.flux.config import FluxConfig  # noqa: E402
from cgrpo.policies.flux.policy import FluxPolicy  # noqa: E402
from cgrpo.sampling.rollout import sample_groups  # noqa: E402
from cgrpo.sampling.sde import sigma_schedule  # noqa: E402
from tests.conftest import PROMPTS  # noqa: E402


def test_flux_rollout_rewards_x_minus_sigma_v(flux_dir: Path) -> None:
    cfg = FluxConfig(
        path=str(flux_dir), dtype="float32", resolution=16, lora_rank=4, max_sequence_length=8
    )
    pol = FluxPolicy(cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a LoRA that changes the model, so v is not the base's
        for p in pol.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    refs = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    cond = pol.encode_condition(refs, PROMPTS)
    sig = sigma_schedule(4, 3.0)
    roll = sample_groups(
        pol, cond, 2, sigmas=sig, eta=0.4, ode_tail=0, generator=torch.Generator().manual_seed(0)
    )
    x, s = roll.latents[-2], float(sig[-2])
    with torch.no_grad():
        v = pol.velocity(x, torch.full((x.shape[0],), s), roll.condition)
    torch.testing.assert_close(roll.rewarded, x - s * v, rtol=1e-5, atol=1e-5)
    # the last sample differs from it by that step's SDE noise (std eta * sqrt(s - 0))
    gap = (roll.final - roll.rewarded).std().item()
    assert 0.3 * 0.4 * s**0.5 < gap < 3 * 0.4 * s**0.5


@pytest.mark.parametrize("reward_image", ["clean", "sample"])
def test_trainer_decodes_what_the_config_says(
    flux_dir: Path, tmp_path: Path, reward_image: str
) -> None:
    """The trainer's rewards score ``Rollout.rewarded``: the clean prediction by default,
    the noisy last sample with ``sampler.reward_image=sample`` (last step SDE here)."""
    from cgrpo.train.trainer import GRPOTrainer
    from tests.conftest import flux_train_config

    cfg = flux_train_config(
        flux_dir, tmp_path, "sampler.ode_tail=0", f"sampler.reward_image={reward_image}"
    )
    trainer = GRPOTrainer(cfg)
    seen: dict[str, torch.Tensor] = {}
    rollout, decode = trainer.rollout, trainer.policy.decode

    def record_rollout():
        out = rollout()
        seen["roll"] = out[0]
        return out

    def record_decode(latents):
        seen["decoded"] = latents.clone()
        return decode(latents)

    trainer.rollout, trainer.policy.decode = record_rollout, record_decode
    trainer.train_step()
    roll = seen["roll"]
    assert torch.equal(seen["decoded"], roll.rewarded)
    assert torch.equal(seen["decoded"], roll.final) == (reward_image == "sample")
