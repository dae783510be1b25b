"""The second-order ODE solvers against their formulas, velocity fields with a known
solution, and diffusers' DPMSolverMultistepScheduler in its flow-matching configuration."""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest
import torch

from cgrpo.eval.config import EvalConfig
from cgrpo.run.config import SamplerConfig
from cgrpo.sampling.ode_solvers import (
    ODE_SOLVERS,
    dpm2m_step,
    heun_step,
    model_passes,
    ode_step,
)
from cgrpo.sampling.sde import euler_step, sigma_schedule

# A Gaussian data distribution N(mu, s^2), per coordinate. With x_sigma = (1 - sigma) x0 +
# sigma noise, x_sigma ~ N(m, V), m = (1 - sigma) mu, V = (1 - sigma)^2 s^2 + sigma^2, and
#   E[x0 | x] = mu + (1 - sigma) s^2 (x - m) / V,  E[noise | x] = sigma (x - m) / V,
# so the flow velocity is v = E[noise - x0 | x]. The probability-flow ODE keeps the
# standardised coordinate z = (x - m) / sqrt(V) fixed: x(sigma) = m(sigma) + sqrt(V(sigma)) z.
MU = torch.tensor([0.3, -1.2, 0.8, 0.0], dtype=torch.float64)
S = torch.tensor([0.5, 1.5, 0.05, 2.0], dtype=torch.float64)


def gauss_velocity(x: torch.Tensor, sigma: float, mu=MU, s=S) -> torch.Tensor:
    m, var = (1 - sigma) * mu, (1 - sigma) ** 2 * s**2 + sigma**2
    x0 = mu + (1 - sigma) * s**2 * (x - m) / var
    eps = sigma * (x - m) / var
    return (eps - x0).to(x.dtype)


def gauss_exact(x: torch.Tensor, sigma: float, sigma_to: float) -> torch.Tensor:
    def mv(sg: float) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - sg) * MU, ((1 - sg) ** 2 * S**2 + sg**2).sqrt()

    m0, sd0 = mv(sigma)
    m1, sd1 = mv(sigma_to)
    return m1 + sd1 * (x - m0) / sd0


def solve(solver: str, x: torch.Tensor, sigmas: torch.Tensor, velocity=gauss_velocity):
    """Each step's x from sigmas[0] to sigmas[-1] with ode_step, a history from step 1 on."""
    xs, prev = [x], None
    for t in range(len(sigmas) - 1):
        s, s_next = float(sigmas[t]), float(sigmas[t + 1])
        v = velocity(x, s)
        x, x0 = ode_step(
            solver, x, v, sigma=s, sigma_next=s_next, velocity_at=velocity,
            x0_prev=prev, sigma_prev=float(sigmas[t - 1]) if prev is not None else None,
        )  # fmt: skip
        prev = x0
        xs.append(x)
    return xs


def lam(sigma: float) -> float:
    return math.log((1 - sigma) / sigma)


def test_dpm2m_step_is_the_dpm_solver_pp_formula() -> None:
    """One step against the DPM-Solver++(2M) update written as in Lu et al. (2022), Alg. 2:
    x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) ((1 + 1/(2r)) D_s - 1/(2r) D_prev)."""
    g = torch.Generator().manual_seed(0)
    x, d0, dp = (torch.randn(2, 5, generator=g, dtype=torch.float64) for _ in range(3))
    sp, s, sn = 0.8, 0.55, 0.3
    h, h_prev = lam(sn) - lam(s), lam(s) - lam(sp)
    r = h_prev / h
    d = (1 + 1 / (2 * r)) * d0 - 1 / (2 * r) * dp
    want = (sn / s) * x - (1 - sn) * (math.exp(-h) - 1) * d
    got = dpm2m_step(x, d0, s, sigma_next=sn, x0_prev=dp, sigma_prev=sp)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # per-sample sigmas ([B]) give each row its own step
    f64 = {"dtype": torch.float64}
    rows = dpm2m_step(
        x, d0, torch.tensor([s, s], **f64), sigma_next=torch.tensor([sn, sn], **f64),
        x0_prev=dp, sigma_prev=torch.tensor([sp, sp], **f64),
    )  # fmt: skip
    torch.testing.assert_close(rows, want, rtol=0, atol=1e-12)


def test_first_order_cases_are_the_euler_step() -> None:
    """No history, a previous sigma of 1 (lambda = -inf) and a step to sigma 0 are all the
    first-order step, which for a rectified flow is Euler's."""
    g = torch.Generator().manual_seed(1)
    x, v, dp = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    s = 0.6
    x0 = x - s * v
    for sn, prev, sp in ((0.4, None, None), (0.4, dp, 1.0), (0.0, dp, 0.8)):
        got = dpm2m_step(x, x0, s, sigma_next=sn, x0_prev=prev, sigma_prev=sp)
        torch.testing.assert_close(got, euler_step(x, v, s, sigma_next=sn), rtol=0, atol=1e-12)
    # through ode_step the first-order cases are euler_step itself, bit for bit
    for sn, prev in ((0.4, None), (0.0, dp)):
        out, x0_out = ode_step("dpm2m", x, v, sigma=s, sigma_next=sn, x0_prev=prev, sigma_prev=0.8)
        assert torch.equal(out, euler_step(x, v, s, sigma_next=sn))
        assert torch.equal(x0_out, x0)
    with pytest.raises(ValueError, match="both"):
        dpm2m_step(x, x0, s, sigma_next=0.3, x0_prev=dp)


def test_heun_step_is_the_trapezoid_rule() -> None:
    x = torch.tensor([[0.7, -0.2, 1.1, 0.4]], dtype=torch.float64)
    s, sn = 0.7, 0.45
    v = gauss_velocity(x, s)
    x_pred = x + (sn - s) * v
    want = x + (sn - s) * 0.5 * (v + gauss_velocity(x_pred, sn))
    got = heun_step(x, v, s, sigma_next=sn, velocity_next=gauss_velocity(x_pred, sn))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    out, _ = ode_step("heun", x, v, sigma=s, sigma_next=sn, velocity_at=gauss_velocity)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-14)
    # the step to sigma 0 is Euler's, with no second model pass
    last, _ = ode_step("heun", x, v, sigma=s, sigma_next=0.0, velocity_at=None)
    assert torch.equal(last, euler_step(x, v, s, sigma_next=0.0))
    with pytest.raises(ValueError, match="velocity_at"):
        ode_step("heun", x, v, sigma=s, sigma_next=sn)


@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_one_step_to_a_single_point_lands_on_it(solver: str) -> None:
    """Data = one point x0*: v = (x - x0*) / sigma, the trajectories are straight lines, and
    every solver follows them exactly; a step to sigma 0 lands on x0*."""
    star = torch.tensor([[0.25, -0.5, 0.9]], dtype=torch.float64)

    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return (x - star) / sigma

    noise = torch.tensor([[1.3, 0.2, -0.7]], dtype=torch.float64)
    x = 0.6 * star + 0.4 * noise  # sigma = 0.4
    out, _ = ode_step(solver, x, velocity(x, 0.4), sigma=0.4, sigma_next=0.0, velocity_at=velocity)
    torch.testing.assert_close(out, star, rtol=0, atol=1e-14)
    xs = solve(solver, noise, sigma_schedule(5).double(), velocity=velocity)
    for t, sg in enumerate(sigma_schedule(5).double().tolist()):
        torch.testing.assert_close(xs[t], (1 - sg) * star + sg * noise, rtol=0, atol=1e-12)


def _error(solver: str, n: int, *, lo: float = 0.0, hi: float = 1.0) -> float:
    """Max error of ``n`` sigma-uniform steps from ``hi`` to ``lo`` on the Gaussian's flow."""
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = lo + (hi - lo) * torch.linspace(1, 0, n + 1, dtype=torch.float64)
    out = solve(solver, x, sigmas)[-1]
    return float((out - gauss_exact(x, hi, lo)).abs().max())


def _rates(solver: str, ns: tuple[int, ...], **span: float) -> list[float]:
    e = [_error(solver, n, **span) for n in ns]
    return [math.log2(a / b) for a, b in itertools.pairwise(e)]


def test_error_order_on_a_gaussian() -> None:
    """Between sigma 0.9 and 0.1 on the Gaussian's exact flow: halving the step halves
    Euler's error (order 1) and quarters dpm2m's and heun's (order 2)."""
    for solver, order in (("euler", 1), ("dpm2m", 2), ("heun", 2)):
        rates = _rates(solver, (32, 64, 128), lo=0.1, hi=0.9)
        assert all(abs(r - order) < 0.15 for r in rates), (solver, rates)


def test_error_order_from_noise_to_data() -> None:
    """The whole path, sigma 1 -> 0. Heun keeps order 2. dpm2m converges a little slower:
    it steps in lambda = log((1 - sigma) / sigma), where sigma-uniform steps near sigma = 0
    stay ~1/k long (k steps from the end), so its error falls roughly like log(N) / N^2
    (measured rates 1.94 and 1.76 from 32 to 64 to 128 steps), still far below Euler's."""
    assert all(abs(r - 1) < 0.1 for r in _rates("euler", (32, 64, 128)))
    assert all(abs(r - 2) < 0.15 for r in _rates("heun", (32, 64, 128)))
    assert all(1.6 < r < 2.1 for r in _rates("dpm2m", (32, 64, 128)))
    assert 5 * _error("dpm2m", 32) < _error("euler", 32)  # 0.026 vs 0.183


def test_model_passes() -> None:
    assert [model_passes(s, 10) for s in ODE_SOLVERS] == [10, 10, 19]
    with pytest.raises(ValueError, match="unknown ODE solver"):
        model_passes("rk4", 3)


def test_config_keys_name_the_solvers() -> None:
    for cls, key in ((SamplerConfig, "ode_solver"), (EvalConfig, "ode_solver")):
        hint = typing.get_type_hints(cls)[key]
        names = [a for a in typing.get_args(hint) if a is not type(None)]
        literal = names[0] if typing.get_origin(hint) is not typing.Literal else hint
        assert typing.get_args(literal) == ODE_SOLVERS
    assert SamplerConfig().ode_solver == "euler" and EvalConfig().ode_solver is None


diffusers = pytest.importorskip("diffusers")


def _diffusers_scheduler(n: int, shift: float):
    sched = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        final_sigmas_type="zero",
    )  # fmt: skip
    sched.set_timesteps(n)
    return sched


@pytest.mark.parametrize(("n", "ours"), [(6, False), (20, False), (8, True)])
def test_matches_diffusers_dpm_solver_multistep(n: int, ours: bool) -> None:
    """Same sigmas, same velocity field: the same x after every step (float32, 1e-5).
    ``ours``: diffusers' sigmas replaced by :func:`sigma_schedule`'s, which start at 1."""
    sched = _diffusers_scheduler(n, 3.0)
    if ours:
        sched.sigmas = sigma_schedule(n, 3.0)
    sigmas = sched.sigmas.clone()
    assert len(sigmas) == n + 1 and float(sigmas[-1]) == 0.0
    x1 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    x, theirs = x1.clone(), []
    for i, t in enumerate(sched.timesteps):
        v = gauss_velocity(x, float(sigmas[i]), mu=MU.float(), s=S.float())
        x = sched.step(v, t, x, return_dict=False)[0]
        theirs.append(x)

    def velocity(y: torch.Tensor, sg: float) -> torch.Tensor:
        return gauss_velocity(y, sg, MU.float(), S.float())

    mine = solve("dpm2m", x1, sigmas, velocity=velocity)[1:]
    for step, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5, err_msg=f"step {step}")
    # not a comparison Euler would pass too
    euler = solve("euler", x1, sigmas, velocity=velocity)[-1]
    assert float((euler - theirs[-1]).abs().max()) > 1e-2
