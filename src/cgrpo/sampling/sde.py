"""Flow-matching sampler steps: the deterministic Euler (ODE) step and the SDE step with its
Gaussian log-probability, as used by GRPO for rectified-flow models (FLUX and friends).

Conventions (shared with the rest of :mod:`cgrpo`):

* ``x_sigma = (1 - sigma) * x0 + sigma * noise``; ``sigma = 1`` is pure noise, ``sigma = 0`` data.
* The model predicts the velocity ``v = noise - x0``, so the probability-flow ODE is
  ``dx = v dsigma`` and sampling integrates it from ``sigma = 1`` down to ``sigma = 0``.
* The SDE below has the same marginals ``p_sigma`` as that ODE for any diffusion
  coefficient ``g(sigma)``; its Euler-Maruyama step is a Gaussian transition whose density is
  what GRPO's importance ratio needs.

All functions are pure: no global state, randomness only through an explicit
``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cgrpo.config.lazy import lazy_import

torch = lazy_import("torch")

if TYPE_CHECKING:
    from torch import Tensor


__all__ = ["SDE_KINDS", "clean_prediction", "sigma_schedule", "euler_step", "sde_step"]

#: Valid values of ``kind`` in :func:`sde_step`.
SDE_KINDS: tuple[str, ...] = ("dance", "flow")

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def sigma_schedule(num_steps: int, shift: float = 3.0) -> Tensor:
    """Noise levels for ``num_steps`` sampling steps, FLUX-style time-shifted.

    ``s_i = 1 - i / num_steps`` for ``i = 0..num_steps`` (``linspace(1, 0, num_steps + 1)``), then

        s'_i = shift * s_i / (1 + (shift - 1) * s_i)

    which keeps the endpoints (1 -> 1, 0 -> 0) and, for ``shift > 1``, spends more steps at high
    noise. ``shift = 1`` is the plain linear schedule.

    Args:
        num_steps: number of denoising steps (>= 1).
        shift: time-shift factor (> 0).

    Returns:
        float32 tensor of shape ``[num_steps + 1]``, strictly decreasing from exactly 1.0 to
        exactly 0.0. Step ``t`` goes from ``sigmas[t]`` to ``sigmas[t + 1]``.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    s = torch.linspace(1.0, 0.0, int(num_steps) + 1, dtype=torch.float64)
    s = shift * s / (1.0 + (shift - 1.0) * s)
    s[0], s[-1] = 1.0, 0.0  # exact endpoints regardless of rounding
    return s.to(torch.float32)


def draw_noise(
    shape: tuple[int, ...] | torch.Size,
    dtype: torch.dtype,
    generator: torch.Generator | None,
    *,
    device: torch.device | str,
) -> Tensor:
    """Standard-normal noise drawn on the generator's device (a CPU generator keeps GPU runs
    reproducible), then moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype of all SDE arithmetic: float64 stays float64; everything else (bf16, fp16,
    fp32) is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _as_sigma(sigma: float | Tensor, x: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a python float, a 0-d tensor, a ``[B]`` tensor or an already broadcastable tensor
    into a tensor that broadcasts against ``x`` (``[B] -> [B, 1, 1, ...]``)."""
    s = torch.as_tensor(sigma, dtype=dtype, device=x.device)
    if s.ndim == 0:
        return s
    if s.ndim == 1 and x.ndim >= 1 and s.shape[0] in (1, x.shape[0]):
        return s.reshape(s.shape[0], *([1] * (x.ndim - 1)))
    if s.ndim == x.ndim:
        return s
    raise ValueError(
        f"sigma must be a float, a 0-d tensor, a [B] tensor with B={x.shape[0]} or a tensor with "
        f"x.ndim={x.ndim} dims broadcastable to x; got shape {tuple(s.shape)}"
    )


def clean_prediction(x: Tensor, velocity: Tensor, sigma: float | Tensor) -> Tensor:
    """The model's prediction of the clean sample from ``x`` at noise level ``sigma``:

        x0_hat = x - sigma * v

    (from ``x = (1 - sigma) x0 + sigma * noise`` and ``v = noise - x0``). At the last step
    of a rollout this is the image the paper's released code rewards (its
    ``pred_original_sample``); when the last step is the deterministic Euler step to
    ``sigma = 0`` it equals that step's result. The result has ``x``'s dtype.
    """
    return x - velocity.to(x.dtype) * _as_sigma(sigma, x, x.dtype)


def euler_step(
    x: Tensor, velocity: Tensor, sigma: float | Tensor, *, sigma_next: float | Tensor
) -> Tensor:
    """One deterministic Euler step of the probability-flow ODE ``dx = v dsigma``:

        x_next = x + v * (sigma_next - sigma)

    ``sigma`` / ``sigma_next`` may be floats or tensors (``[B]`` is reshaped to ``[B, 1, ...]``).
    The result has ``x``'s dtype.
    """
    s = _as_sigma(sigma, x, x.dtype)
    s_next = _as_sigma(sigma_next, x, x.dtype)
    return x + velocity.to(x.dtype) * (s_next - s)


def _diffusion_coefficient(kind: str, eta: float, s: Tensor, *, s_next: Tensor) -> Tensor:
    """``g`` for ``kind`` (see :func:`sde_step`), shaped like ``s``."""
    if kind == "dance":
        return torch.full_like(s, float(eta))
    # Flow-GRPO: g = eta * sqrt(sigma / (1 - sigma)); at sigma == 1 the denominator uses
    # sigma_next instead (exactly as the Flow-GRPO reference code does) to avoid 1/0.
    denom_sigma = torch.where(s >= 1.0, s_next, s)
    return eta * torch.sqrt(s / (1.0 - denom_sigma))


def sde_step(
    x: Tensor,
    velocity: Tensor,
    sigma: float | Tensor,
    *,
    sigma_next: float | Tensor,
    eta: float,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    kind: str = "dance",
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """One reverse step (``sigma -> sigma_next < sigma``) of the flow-matching SDE that has the
    same marginals as the ODE ``dx = v dsigma``, plus the Gaussian log-density of the result.

    Formulas (``dsigma = sigma_next - sigma < 0``)::

        x0_hat = x - sigma * v
        score  = -(x - (1 - sigma) * x0_hat) / sigma**2          # = grad log p_sigma(x)
        mean   = x + (v - 0.5 * g**2 * score) * dsigma
        std    = g * sqrt(sigma - sigma_next)
        prev   = mean + std * randn                              # unless prev_sample is given
        log_prob = mean over non-batch dims of
                   -(prev - mean)**2 / (2 std**2) - log(std) - 0.5 * log(2 pi)

    with the diffusion coefficient

    * ``kind="dance"`` (DanceGRPO; what the Customized-GRPO paper uses): ``g = eta``;
    * ``kind="flow"`` (Flow-GRPO): ``g = eta * sqrt(sigma / (1 - sigma))``; where
      ``sigma == 1`` the denominator uses ``sigma_next`` (``g = eta * sqrt(1 / (1 -
      sigma_next))``), as in the Flow-GRPO reference code, to avoid dividing by zero.

    For ``kind="dance"`` the last step (``sigma_next = 0``) still has ``std = eta *
    sqrt(sigma) > 0``: the final sample carries a little noise; that is intended.

    ``eta = 0`` is the deterministic Euler step ``x + v * (sigma_next - sigma)``. Its
    **log-prob is undefined for a deterministic step** (a point mass), so ``log_prob`` is
    returned as ``None`` and ``std`` is all zeros; scoring a given ``prev_sample`` with
    ``eta = 0`` raises ``ValueError``.

    Args:
        x: current sample at ``sigma``, shape ``[B, ...]``.
        velocity: model prediction ``v`` at ``(x, sigma)``, same shape as ``x``.
        sigma, sigma_next: floats or tensors broadcastable to the batch (``[B]`` is reshaped
            to ``[B, 1, ...]``); ``sigma > sigma_next >= 0`` and ``sigma > 0``.
        eta: noise level (>= 0).
        prev_sample: if given, it is scored (not sampled): the returned sample is this tensor
            and ``log_prob`` is its density under the step's Gaussian. Used to recompute
            log-probs of rollout transitions under the current policy.
        generator: ``torch.Generator`` for the noise when sampling (on ``x``'s device).
        kind: ``"dance"`` or ``"flow"``.
        noise: the standard-normal ``randn`` of the formula, shape of ``x``, when the caller
            draws it (the rollout draws one batch of noise for a whole step, so a sample
            does not depend on how the batch is split across processes); else drawn here.

    Returns:
        ``(prev_sample, log_prob, mean, std)``:

        * ``prev_sample``: the sample at ``sigma_next`` in ``x``'s dtype (when sampled it is
          detached: it is the action, and ``log_prob`` keeps its gradient through ``mean``);
        * ``log_prob``: shape ``[B]``, float32 (float64 if ``x`` is float64), computed on the
          returned ``prev_sample`` after its cast to ``x``'s dtype so re-scoring it later gives
          the same value; ``None`` when ``eta == 0``;
        * ``mean``: the Gaussian mean, shape of ``x``, compute dtype (float32/float64);
        * ``std``: the Gaussian std, broadcastable to ``x`` (e.g. ``[]`` or ``[B, 1, ...]``),
          compute dtype.

    bf16/fp16 inputs are upcast to float32 for all of the arithmetic.
    """
    if kind not in SDE_KINDS:
        raise ValueError(f"unknown SDE kind {kind!r}; valid kinds: {', '.join(SDE_KINDS)}")
    eta = float(eta)
    if not (eta >= 0.0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension, got a 0-d tensor")
    if velocity.shape != x.shape:
        raise ValueError(f"velocity shape {tuple(velocity.shape)} != x shape {tuple(x.shape)}")
    if prev_sample is not None and prev_sample.shape != x.shape:
        raise ValueError(
            f"prev_sample shape {tuple(prev_sample.shape)} != x shape {tuple(x.shape)}"
        )

    dtype = compute_dtype(x)
    xf = x.to(dtype)
    vf = velocity.to(dtype)
    s = _as_sigma(sigma, x, dtype)
    s_next = _as_sigma(sigma_next, x, dtype)

    if eta == 0.0:
        if prev_sample is not None:
            raise ValueError(
                "eta=0 is a deterministic (Euler) step: its log-prob is undefined, so a given "
                "prev_sample cannot be scored; use eta > 0 to score transitions"
            )
        mean = xf + vf * (s_next - s)
        std = torch.zeros_like(s)
        return mean.to(x.dtype), None, mean, std

    g = _diffusion_coefficient(kind, eta, s, s_next=s_next)
    x0_hat = xf - s * vf
    score = -(xf - (1.0 - s) * x0_hat) / s**2
    mean = xf + (vf - 0.5 * g**2 * score) * (s_next - s)
    std = g * torch.sqrt(s - s_next)
    if not bool((std > 0).all()):
        raise ValueError(
            "SDE step has std <= 0 or NaN: need sigma > sigma_next >= 0 and sigma > 0 "
            f"(kind={kind!r}, eta={eta})"
        )

    if prev_sample is None:
        if noise is None:
            noise = draw_noise(x.shape, dtype, generator, device=x.device)
        elif noise.shape != x.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x shape {tuple(x.shape)}")
        noise = noise.to(x.device, dtype)
        # A sampled transition is an action: detach it so log_prob's gradient is the
        # score-function (REINFORCE) gradient through `mean`, not a reparameterised one that
        # would cancel to zero.
        prev_sample = (mean + std * noise).detach().to(x.dtype)

    prev = prev_sample.to(dtype)
    std_full = std.expand_as(mean)
    log_density = -((prev - mean) ** 2) / (2.0 * std_full**2) - torch.log(std_full) - _LOG_SQRT_2PI
    log_prob = log_density.reshape(x.shape[0], -1).mean(dim=1)
    return prev_sample, log_prob, mean, std
