"""The resolution-dependent time shift against diffusers' FLUX pipeline and scheduler and
against UNO's ``get_schedule`` (written out here from its formula, not imported)."""

from __future__ import annotations

import math

import pytest
import torch

from cgrpo.sampling.sde import sigma_schedule
from cgrpo.sampling.shift import (
    flux_image_tokens,
    resolution_mu,
    resolution_shift,
    uno_seq_len,
)

# (pixels, true image tokens, x-flux/UNO pipeline count), counted by hand:
# 512 px -> 64 x 64 latent -> 32 x 32 tokens; UNO: (512 // 8)^2 // 256 = 16
SIZES = [(512, 1024, 16), (1024, 4096, 64)]


@pytest.mark.parametrize(("px", "tokens", "uno"), SIZES)
def test_token_counts(px: int, tokens: int, uno: int) -> None:
    assert flux_image_tokens(px, px) == tokens
    assert uno_seq_len(px, px) == uno
    assert flux_image_tokens(16, 16, vae_scale=2) == 16  # the tiny random FLUX of the tests


def test_mu_by_hand() -> None:
    # mu = 0.5 + 0.65 * (n - 256) / 3840
    assert resolution_mu(256) == pytest.approx(0.5)
    assert resolution_mu(4096) == pytest.approx(1.15)
    assert resolution_mu(1024) == pytest.approx(0.63)
    assert resolution_mu(16) == pytest.approx(0.459375)
    assert resolution_shift(1024) == pytest.approx(1.87761, abs=1e-5)
    assert resolution_shift(16) == pytest.approx(1.58308, abs=1e-5)
    with pytest.raises(ValueError, match="max_seq_len"):
        resolution_mu(10, base_seq_len=5, max_seq_len=5)


@pytest.mark.parametrize("tokens", [16, 1024, 4096])
def test_mu_equals_diffusers_calculate_shift(tokens: int) -> None:
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert resolution_mu(tokens) == pytest.approx(calculate_shift(tokens), abs=1e-12)


@pytest.mark.parametrize(("px", "tokens"), [(512, 1024), (1024, 4096)])
@pytest.mark.parametrize("steps", [25, 4])
def test_schedule_equals_diffusers_dynamic_shifting(px: int, tokens: int, steps: int) -> None:
    """As ``FluxPipeline.__call__``: sigmas ``linspace(1, 1/n, n)`` and ``mu`` from the image
    token count into a FLUX.1-dev scheduler (dynamic shifting), which appends sigma 0."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sched = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,  # unused with dynamic shifting
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    sched.set_timesteps(
        sigmas=np.linspace(1.0, 1 / steps, steps), mu=calculate_shift(flux_image_tokens(px, px))
    )
    ours = sigma_schedule(steps, resolution_shift(tokens))
    assert sched.sigmas.shape == ours.shape == (steps + 1,)
    assert torch.allclose(ours, sched.sigmas.float(), atol=1e-6, rtol=0)
    if steps == 25:  # at high resolution the first step stays closer to pure noise
        assert ours[1] > sigma_schedule(steps, 1.0)[1]


def _uno_get_schedule(num_steps: int, image_seq_len: int) -> list[float]:
    """UNO's get_schedule(shift=True), from its formula: t = linspace(1, 0, n + 1),
    mu linear through (256, 0.5) and (4096, 1.15), t' = e^mu / (e^mu + (1/t - 1))."""
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (image_seq_len - 256)
    out = []
    for i in range(num_steps + 1):
        t = 1 - i / num_steps
        out.append(0.0 if t == 0 else math.exp(mu) / (math.exp(mu) + (1 / t - 1)))
    return out


@pytest.mark.parametrize(("px", "tokens", "uno"), SIZES)
def test_schedule_equals_uno_get_schedule(px: int, tokens: int, uno: int) -> None:
    for seq_len in (tokens, uno):  # cgrpo eval's shift=auto and shift=uno
        want = torch.tensor(_uno_get_schedule(25, seq_len), dtype=torch.float64)
        got = sigma_schedule(25, resolution_shift(seq_len)).double()
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    # the two counts give other schedules: 1.88 vs 1.58 at 512 px
    assert not torch.allclose(
        sigma_schedule(25, resolution_shift(tokens)), sigma_schedule(25, resolution_shift(uno))
    )
