"""Multi-seed statistics of paired changes: one seed's change and its SE over the held-out
pairs, the mean over seeds with an SE holding both the seed spread and the pairs, the
Student t quantile the pooled figures are tested at, and the sign tests the claims count.

Pure functions of numbers and arrays; no scipy (the t quantile is a table).
"""

from __future__ import annotations

import math

import numpy as np

from cgrpo.eval.summary import paired_difference

__all__ = [
    "Z",
    "pooled",
    "pooled_criterion",
    "pooled_sign",
    "seed_stat",
    "sign",
    "t_quantile",
    "z_score",
]

Z = 2.0  #: per seed: a difference counts when |mean| >= Z SE (fixed before the runs)

#: Student t quantile t(0.975, df), four decimals: df -> quantile (inf: the normal's 1.96)
_T975 = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646,
    8: 2.3060, 9: 2.2622, 10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448,
    15: 2.1314, 16: 2.1199, 17: 2.1098, 18: 2.1009, 19: 2.0930, 20: 2.0860, 21: 2.0796,
    22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595, 26: 2.0555, 27: 2.0518, 28: 2.0484,
    29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799, math.inf: 1.9600,
}  # fmt: skip
T_TABLE = {0.975: _T975}  #: p -> df -> t(p, df): the quantiles tabulated


def t_quantile(p: float, df: float) -> float:
    """The Student t quantile ``t(p, df)``: ``P(T <= t) = p`` for ``T`` with ``df`` degrees
    of freedom (``t(0.975, 4) = 2.7764``: the two-sided 95 % bound for 5 values).

    Read from a table (``p`` in :data:`T_TABLE`, df 1-30, 40, 60, 120, inf); a ``df``
    between two tabulated ones takes the smaller one's quantile, the larger (conservative)
    bound. ``ValueError`` for another ``p`` or ``df < 1``."""
    if p not in T_TABLE:
        raise ValueError(f"t quantile tabulated for p in {sorted(T_TABLE)}, not {p}")
    if not df >= 1:
        raise ValueError(f"t quantile needs df >= 1, not {df}")
    table = T_TABLE[p]
    return table[max(k for k in table if k <= df)]


def pooled_criterion(n: int) -> float:
    """The bound a mean pooled over ``n`` seeds is tested at: ``t(0.975, n - 1)`` to two
    decimals (2.78 for 5 seeds, as fixed before the runs); :data:`Z` below 2 seeds, where
    :func:`pooled` has no SE."""
    return round(t_quantile(0.975, n - 1), 2) if n >= 2 else Z


def seed_stat(d: np.ndarray) -> tuple[float, float]:
    """One seed's paired change from its per-pair differences ``d_i`` (a pair's draws are
    correlated, so they are averaged first): ``(mean_i d_i, std_i(d_i) / sqrt(P))``, ddof 1
    over the ``P`` pairs (:func:`cgrpo.eval.summary.paired_difference`)."""
    return paired_difference(d, np.zeros_like(d))


def pooled(per_seed: dict[int, np.ndarray]) -> tuple[float, float, int]:
    """Mean over the ``n`` seeds of the seed means ``m_s = mean_i d_si``, its SE and ``n``::

        SE^2 = var_s(m_s) / n  +  SE_pairs(mean_s d_s)^2

    the seed-to-seed spread of training and data (ddof 1), plus the sampling error of the
    held-out pairs themselves (every seed is evaluated on the same pairs and noise):
    :func:`seed_stat` of the per-pair differences averaged over the seeds. One seed: no
    spread to take an SE from (nan)."""
    ds = list(per_seed.values())
    m = np.array([d.mean() for d in ds])
    if len(m) < 2:
        return float(m.mean()), float("nan"), len(m)
    pairs = seed_stat(np.mean(ds, 0))[1]
    return float(m.mean()), float(math.sqrt(m.var(ddof=1) / len(m) + pairs**2)), len(m)


def sign(mean: float, se: float, crit: float = Z) -> int:
    """+1 / -1 when ``mean`` is at least ``crit`` SE above / below 0 (``|mean| >= crit *
    se``), else 0 (also when ``se`` is not positive: nothing is shown)."""
    return 0 if not se > 0 or abs(mean) < crit * se else (1 if mean > 0 else -1)


def pooled_sign(v: tuple[float, float, int]) -> int:
    """:func:`sign` of a :func:`pooled` ``(mean, SE, n)`` at :func:`pooled_criterion`."""
    return sign(v[0], v[1], pooled_criterion(v[2]))


def z_score(mean: float, se: float) -> float:
    """``mean / se``; +-inf (the sign of ``mean``) when ``se`` is not positive."""
    return mean / se if se > 0 else math.copysign(math.inf, mean)
