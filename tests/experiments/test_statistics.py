"""Multi-seed statistics: the t table against known quantiles and a numerical integration
of the t density, the pooled SE, the sign tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cgrpo.experiments.cells import pooled_cell, seed_cells
from cgrpo.experiments.statistics import (
    T_TABLE,
    Z,
    pooled,
    pooled_criterion,
    pooled_sign,
    seed_stat,
    sign,
    t_quantile,
    z_score,
)


@pytest.mark.parametrize(
    ("df", "t"), [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042), (math.inf, 1.960)]
)
def test_t_quantile_known_values(df: float, t: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)


def _t_cdf(x: float, df: float, n: int = 20000) -> float:
    """P(T <= x), x >= 0: 1/2 plus Simpson's rule over the t density on [0, x]."""
    u = np.linspace(0.0, x, n + 1)
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(c - (df + 1) / 2 * np.log1p(u * u / df))
    w = np.ones(n + 1)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return 0.5 + float((w * f).sum()) * (x / n) / 3


def test_the_table_is_the_t_distribution() -> None:
    """Every finite entry is the 0.975 quantile of the t density to its four decimals."""
    for df, t in T_TABLE[0.975].items():
        if math.isinf(df):
            continue
        lo, hi = 0.0, 20.0
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _t_cdf(mid, df) < 0.975 else (lo, mid)
        assert t == pytest.approx(lo, abs=6e-5), df


def test_t_quantile_between_and_outside_the_table() -> None:
    assert t_quantile(0.975, 35) == t_quantile(0.975, 30)  # the smaller df: conservative
    assert t_quantile(0.975, 1000) == t_quantile(0.975, 120)
    with pytest.raises(ValueError, match="tabulated"):
        t_quantile(0.95, 4)
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0.975, 0)


def test_pooled_criterion_is_the_bound_fixed_before_the_runs() -> None:
    """The t quantile to two decimals: the table the claims were registered with."""
    registered = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}
    assert {n: pooled_criterion(n) for n in registered} == registered
    assert pooled_criterion(1) == Z and pooled_criterion(31) == 2.04


def test_pooled_se_holds_the_seed_spread_and_the_pairs() -> None:
    rng = np.random.default_rng(1)
    pair_effect = rng.normal(0, 0.05, 256)  # shared by every seed: the same held-out pairs
    seeds = {k: 0.01 * k + pair_effect + rng.normal(0, 0.01, 256) for k in range(5)}
    mean, se, n = pooled(seeds)
    m = np.array([d.mean() for d in seeds.values()])
    assert n == 5 and mean == np.float64(m.mean()).item()
    assert se > m.std(ddof=1) / 5**0.5  # more than the seed spread alone
    pairs = np.mean(list(seeds.values()), 0).std(ddof=1) / 16
    assert se == pytest.approx(np.sqrt(m.var(ddof=1) / 5 + pairs**2))
    one = pooled({0: seeds[0]})  # one seed: no spread, no SE, and it is said so
    assert math.isnan(one[1]) and pooled_cell(one) == f"{seeds[0].mean():+.4f} (1 seed)"


def test_seed_stat_is_the_mean_and_its_se_over_pairs() -> None:
    d = np.array([0.1, 0.3, 0.2, 0.4])
    assert seed_stat(d) == pytest.approx((0.25, d.std(ddof=1) / 2))


def test_signs_count_at_their_bounds() -> None:
    assert sign(0.2, 0.1) == 1 and sign(-0.2, 0.1) == -1 and sign(0.19, 0.1) == 0
    assert sign(0.2, 0.0) == 0 and sign(0.2, float("nan")) == 0  # no SE: nothing shown
    assert pooled_sign((0.28, 0.1, 5)) == 1 and pooled_sign((0.27, 0.1, 5)) == 0
    assert z_score(0.3, 0.1) == pytest.approx(3.0) and z_score(-0.1, 0.0) == -math.inf


def test_cells_star_what_counts() -> None:
    assert pooled_cell((0.03, 0.01, 5)) == "+0.0300 ± 0.0100*"
    assert pooled_cell((0.02, 0.01, 5)) == "+0.0200 ± 0.0100"
    assert pooled_cell((0.03, 0.01)) == "+0.0300 ± 0.0100"  # (mean, SE): never starred
    d = {0: np.array([0.1, 0.12, 0.11, 0.09]), 1: np.array([0.1, -0.1, 0.05, -0.04])}
    assert seed_cells(d) == "+0.1050*, +0.0025"
