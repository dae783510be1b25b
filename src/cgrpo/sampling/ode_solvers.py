"""Deterministic (ODE) solvers for the probability-flow ODE ``dx = v dsigma`` of a rectified
flow: Euler (first order), DPM-Solver++(2M) and Heun (second order). ``sampler.ode_solver``.

Conventions are :mod:`cgrpo.sampling.sde`'s: ``x_sigma = (1 - sigma) x0 + sigma noise``, the
model predicts ``v = noise - x0``, sampling runs from ``sigma = 1`` to ``0``. In the
DPM-Solver notation ``alpha = 1 - sigma`` and the half log-SNR is

    lambda(sigma) = log(alpha / sigma) = log((1 - sigma) / sigma)

(``-inf`` at ``sigma = 1``, ``+inf`` at ``sigma = 0``). The data prediction is
``x0_hat = x - sigma v``.

* ``euler``: ``x_next = x + (sigma_next - sigma) v``, one model pass per step. It is also
  DPM-Solver++'s first-order step: ``(sigma_next / sigma) x + (1 - sigma_next / sigma)
  x0_hat`` is the same expression.
* ``dpm2m``: DPM-Solver++(2M) (Lu et al. 2022, multistep, data prediction), one pass per
  step; it reuses the previous step's ``x0_hat``. The first step of a segment (no history)
  and a step to ``sigma = 0`` (``h = inf``) are Euler steps, as diffusers'
  ``DPMSolverMultistepScheduler`` does with ``final_sigmas_type="zero"``.
* ``heun``: Heun's (trapezoidal predictor-corrector) step, two passes per step; the step to
  ``sigma = 0`` is an Euler step (one pass), as in EDM and diffusers' Heun scheduler. ``N``
  steps cost ``2 N - 1`` passes.

Across an SDE step the history is dropped: the SDE moves the sample off the ODE trajectory
whose ``x0_hat`` the multistep extrapolation follows, so the first ODE step after it is an
Euler step (the callers in :mod:`cgrpo.sampling.rollout` do that). The SDE steps and their
log-probs do not use this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cgrpo.config.lazy import lazy_import
from cgrpo.sampling.sde import _as_sigma, clean_prediction, compute_dtype, euler_step

torch = lazy_import("torch")

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "ODE_SOLVERS",
    "VelocityAt",
    "check_solver",
    "dpm2m_step",
    "heun_step",
    "half_log_snr",
    "model_passes",
    "ode_step",
]

#: Valid values of ``sampler.ode_solver``.
ODE_SOLVERS: tuple[str, ...] = ("euler", "dpm2m", "heun")

#: ``velocity_at(x, sigma) -> v``: the model at another point (Heun's corrector).
VelocityAt = Callable[["Tensor", float], "Tensor"]


def check_solver(solver: str) -> None:
    """ValueError naming the valid solvers when ``solver`` is not one of them."""
    if solver not in ODE_SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; valid: {', '.join(ODE_SOLVERS)}")


def model_passes(solver: str, num_steps: int) -> int:
    """Model evaluations of ``num_steps`` ODE steps from ``sigma = 1`` to ``0``: ``N`` for
    euler and dpm2m, ``2 N - 1`` for heun (its last step, to ``sigma = 0``, is Euler)."""
    check_solver(solver)
    return 2 * num_steps - 1 if solver == "heun" else num_steps


def half_log_snr(sigma: Tensor) -> Tensor:
    """``lambda = log((1 - sigma) / sigma)`` elementwise (``-inf`` at 1, ``+inf`` at 0)."""
    return torch.log1p(-sigma) - torch.log(sigma)


def dpm2m_step(
    x: Tensor,
    x0: Tensor,
    sigma: float | Tensor,
    *,
    sigma_next: float | Tensor,
    x0_prev: Tensor | None = None,
    sigma_prev: float | Tensor | None = None,
) -> Tensor:
    """One DPM-Solver++(2M) step ``sigma -> sigma_next`` of a rectified flow:

        h      = lambda(sigma_next) - lambda(sigma)
        r      = (lambda(sigma) - lambda(sigma_prev)) / h
        D      = x0 + (x0 - x0_prev) / (2 r)
        x_next = (sigma_next / sigma) x - alpha_next (exp(-h) - 1) D
               = D + (sigma_next / sigma) (x - D)

    where ``x0 = x - sigma v`` is this step's data prediction and ``x0_prev`` the one at
    ``sigma_prev`` (the previous step on the same ODE trajectory). Without a history
    (``x0_prev`` None), or for ``sigma_next = 0`` (``h = inf``), the step is first order,
    ``D = x0``: the Euler step written with the data prediction. ``sigma_prev = 1``
    (``lambda = -inf``) gives ``1 / r = 0``: first order too.

    Sigmas are floats or tensors (``[B]`` is reshaped to ``[B, 1, ...]``); the arithmetic
    is float32 (float64 for float64 ``x``) and the result has ``x``'s dtype.
    """
    if (x0_prev is None) != (sigma_prev is None):
        raise ValueError("dpm2m_step needs both x0_prev and sigma_prev, or neither")
    dtype = compute_dtype(x)
    xf, d0 = x.to(dtype), x0.to(dtype)
    s = _as_sigma(sigma, x, dtype)
    s_next = _as_sigma(sigma_next, x, dtype)
    d = d0
    if x0_prev is not None and not bool((s_next == 0).all()):
        if bool((s_next == 0).any()):
            raise ValueError("dpm2m_step: sigma_next is 0 for some samples only; step them apart")
        s_prev = _as_sigma(sigma_prev, x, dtype)
        lam = half_log_snr(s)
        h = half_log_snr(s_next) - lam
        h_prev = lam - half_log_snr(s_prev)
        inv_2r = h / (2.0 * h_prev)  # 0 where sigma_prev = 1 (h_prev = inf)
        d = d0 + inv_2r * (d0 - x0_prev.to(dtype))
    return (d + (s_next / s) * (xf - d)).to(x.dtype)


def heun_step(
    x: Tensor,
    velocity: Tensor,
    sigma: float | Tensor,
    *,
    sigma_next: float | Tensor,
    velocity_next: Tensor,
) -> Tensor:
    """Heun's step (explicit trapezoidal rule) ``sigma -> sigma_next``:

        x_pred = x + (sigma_next - sigma) v                      # the Euler predictor
        x_next = x + (sigma_next - sigma) (v + v_pred) / 2       # v_pred = v(x_pred, sigma_next)

    ``velocity_next`` is ``v_pred``. The result has ``x``'s dtype.
    """
    mean_v = 0.5 * (velocity.to(x.dtype) + velocity_next.to(x.dtype))
    return euler_step(x, mean_v, sigma, sigma_next=sigma_next)


def ode_step(
    solver: str,
    x: Tensor,
    velocity: Tensor,
    *,
    sigma: float,
    sigma_next: float,
    velocity_at: VelocityAt | None = None,
    x0_prev: Tensor | None = None,
    sigma_prev: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """One deterministic step of ``solver`` (:data:`ODE_SOLVERS`) from ``x`` at ``sigma``,
    whose model velocity is ``velocity``, to ``sigma_next``.

    ``euler``: :func:`~cgrpo.sampling.sde.euler_step`. ``dpm2m``: :func:`dpm2m_step` with the
    history ``(x0_prev, sigma_prev)`` (None: first order). ``heun``: :func:`heun_step`, with
    ``velocity_at(x_pred, sigma_next)`` the second model pass; Euler when ``sigma_next = 0``.

    Returns ``(x_next, x0)``: ``x0 = x - sigma v`` is this step's data prediction, the
    history of dpm2m's next step (None for the other solvers).
    """
    check_solver(solver)
    if solver == "euler" or (solver == "heun" and sigma_next == 0):
        return euler_step(x, velocity, sigma, sigma_next=sigma_next), None
    if solver == "heun":
        if velocity_at is None:
            raise ValueError("the heun solver needs velocity_at (its second model pass)")
        x_pred = euler_step(x, velocity, sigma, sigma_next=sigma_next)
        v_pred = velocity_at(x_pred, sigma_next)
        return heun_step(x, velocity, sigma, sigma_next=sigma_next, velocity_next=v_pred), None
    x0 = clean_prediction(x, velocity, sigma)
    if x0_prev is None or sigma_next == 0:  # first order: the Euler step itself, bit for bit
        return euler_step(x, velocity, sigma, sigma_next=sigma_next), x0
    nxt = dpm2m_step(x, x0, sigma, sigma_next=sigma_next, x0_prev=x0_prev, sigma_prev=sigma_prev)
    return nxt, x0
