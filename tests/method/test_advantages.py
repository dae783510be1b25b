"""Tests for cgrpo.method.advantages.group_advantages."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgrpo.method.advantages import group_advantages

SETTINGS = settings(max_examples=150, deadline=None)

finite = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False)


@st.composite
def grouped_rewards(draw, min_spread: float = 1e-2):
    """Rewards for 1..4 groups of size 2..8, each group non-constant (spread >= min_spread)."""
    group_size = draw(st.integers(2, 8))
    n_groups = draw(st.integers(1, 4))
    groups = []
    for _ in range(n_groups):
        g = draw(st.lists(finite, min_size=group_size, max_size=group_size))
        if max(g) - min(g) < min_spread:
            g[0] = g[0] + 1.0  # force a spread
        groups.append(g)
    return torch.tensor(groups, dtype=torch.float64).flatten(), group_size


def test_hand_example() -> None:
    r = torch.tensor([1.0, 3.0, 0.0, 0.0, 0.0, 4.0])
    a = group_advantages(r, 3)
    # group 1 [1, 3, 0]: mean 4/3, deviations (-1, 5, -4)/3, population var 42/27
    std1 = math.sqrt(42 / 27)
    expected1 = [(-1 / 3) / std1, (5 / 3) / std1, (-4 / 3) / std1]
    # group 2 [0, 0, 4]: mean 4/3, deviations (-4, -4, 8)/3, population var 96/27
    std2 = math.sqrt(96 / 27)
    expected2 = [(-4 / 3) / std2, (-4 / 3) / std2, (8 / 3) / std2]
    torch.testing.assert_close(a, torch.tensor(expected1 + expected2), atol=1e-6, rtol=1e-6)
    assert a.dtype == torch.float32


def test_population_not_sample_std() -> None:
    a = group_advantages(torch.tensor([0.0, 2.0]), 2)
    # population std of {0, 2} is 1 -> advantages +-1 (sample std would give +-0.707)
    torch.testing.assert_close(a, torch.tensor([-1.0, 1.0]))


@SETTINGS
@given(grouped_rewards())
def test_zero_mean_unit_std_per_group(data) -> None:
    r, g = data
    a = group_advantages(r, g).reshape(-1, g)
    torch.testing.assert_close(
        a.mean(dim=1), torch.zeros(a.shape[0], dtype=a.dtype), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        a.std(dim=1, unbiased=False), torch.ones(a.shape[0], dtype=a.dtype), atol=1e-5, rtol=0
    )


@SETTINGS
@given(grouped_rewards(), finite, st.floats(min_value=0.1, max_value=10.0))
def test_invariant_to_shift_and_positive_scale(data, shift: float, scale: float) -> None:
    r, g = data
    a = group_advantages(r, g)
    torch.testing.assert_close(group_advantages(r + shift, g), a, atol=1e-5, rtol=0)
    # exact for eps = 0; the default eps 1e-8 adds an error of about eps / (scale * std),
    # which reaches 1e-5 for a spread of 1e-2 scaled by 0.1 (a flaky failure before)
    a0 = group_advantages(r, g, eps=0.0)
    torch.testing.assert_close(group_advantages(r * scale, g, eps=0.0), a0, atol=1e-9, rtol=0)


@SETTINGS
@given(grouped_rewards())
def test_groups_are_independent_and_ordered(data) -> None:
    r, g = data
    a = group_advantages(r, g)
    # shifting only the first group changes nothing anywhere (per-group baseline)
    r2 = r.clone()
    r2[:g] += 7.0
    torch.testing.assert_close(group_advantages(r2, g), a, atol=1e-5, rtol=0)
    # the order inside a group is preserved (weakly: rewards closer than rounding may tie)
    for k in range(len(r) // g):
        rk, ak = r[k * g : (k + 1) * g], a[k * g : (k + 1) * g]
        higher = rk[:, None] > rk[None, :]
        assert bool((ak[:, None] >= ak[None, :])[higher].all())


@SETTINGS
@given(finite, st.integers(1, 8), st.integers(1, 3))
def test_constant_group_gives_exact_zeros(value: float, group_size: int, n_groups: int) -> None:
    r = torch.full((group_size * n_groups,), value, dtype=torch.float32)
    for eps in (1e-8, 0.0):  # eps = 0 would make a constant group 0/0 = NaN without care
        a = group_advantages(r, group_size, eps=eps)
        assert torch.isfinite(a).all()
        assert torch.equal(a, torch.zeros_like(a))


def test_constant_group_next_to_varying_group() -> None:
    r = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0, 2.0])
    a = group_advantages(r, 3)
    assert torch.equal(a[:3], torch.zeros(3))
    assert a[3] < 0 < a[5]


def test_group_size_one_gives_zeros() -> None:
    a = group_advantages(torch.tensor([1.0, -5.0, 3.0]), 1)
    assert torch.equal(a, torch.zeros(3))


@SETTINGS
@given(
    st.lists(finite, min_size=4, max_size=12).filter(lambda v: len(v) % 2 == 0),
    st.data(),
)
def test_nan_or_inf_raises_with_indices(values, data) -> None:
    r = torch.tensor(values)
    bad_idx = sorted(
        data.draw(st.sets(st.integers(0, len(values) - 1), min_size=1, max_size=len(values)))
    )
    r[bad_idx] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    with pytest.raises(ValueError) as err:
        group_advantages(r, 2)
    msg = str(err.value)
    assert f"{len(bad_idx)} non-finite" in msg
    assert str(bad_idx[: min(20, len(bad_idx))])[1:-1] in msg


@pytest.mark.parametrize(
    "rewards,group_size,match",
    [
        (torch.tensor([]), 2, "empty"),
        (torch.tensor([1.0, 2.0]), 0, "group_size"),
        (torch.tensor([1.0, 2.0, 3.0]), 2, r"\(3\).*\(2\)"),
        (torch.ones(2, 2), 2, "1-D"),
    ],
)
def test_bad_inputs_raise(rewards, group_size, match) -> None:
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size)


def test_dtype_and_no_grad_leak() -> None:
    r = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert group_advantages(r, 2).dtype == torch.float64
    assert group_advantages(torch.tensor([0, 1, 1, 1]), 2).dtype == torch.float32
    assert group_advantages([0.0, 1.0], 2).tolist() == pytest.approx([-1.0, 1.0])


def test_advantages_by_group_any_order() -> None:
    """Gathered samples in any order, grouped by id, get the consecutive-group advantages."""
    from cgrpo.method.advantages import advantages_by_group

    g = torch.Generator().manual_seed(0)
    r = torch.rand(12, generator=g)
    ids = torch.arange(3).repeat_interleave(4)
    perm = torch.randperm(12, generator=g)
    out = advantages_by_group(r[perm], ids[perm], 1e-8)
    torch.testing.assert_close(out, group_advantages(r, 4, 1e-8)[perm])
    with pytest.raises(ValueError, match="different sizes"):
        advantages_by_group(r[:11], ids[:11])
    with pytest.raises(ValueError, match="empty"):
        advantages_by_group(torch.tensor([]), torch.tensor([], dtype=torch.long))


def test_unbiased_std_option_is_torchs_default_std() -> None:
    """grpo.std: unbiased (the paper's code) divides by torch's default (Bessel) std."""
    import torch

    from cgrpo.method.advantages import advantages_by_group, group_advantages

    r = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3, 0.3, 0.8, 0.0], dtype=torch.float64)
    g = r.view(2, 4)
    want = ((g - g.mean(1, keepdim=True)) / g.std(1, keepdim=True)).flatten()
    got = group_advantages(r, 4, eps=0.0, unbiased=True)
    torch.testing.assert_close(got, want)
    pop = group_advantages(r, 4, eps=0.0)
    torch.testing.assert_close(pop, got * (4 / 3) ** 0.5)
    ids = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])
    by = advantages_by_group(r, ids, 0.0, unbiased=True)
    torch.testing.assert_close(by[ids == 1], group_advantages(r[ids == 1], 4, 0.0, unbiased=True))
