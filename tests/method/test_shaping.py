"""Tests for cgrpo.method.shaping: linear / SARS shaping, reward relations, strategy objects."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cgrpo.method.shaping import (
    CONFLICT,
    JOINT_FAILURE,
    RELATION_NAMES,
    SHAPINGS,
    SYNERGY,
    LinearShaping,
    SARSShaping,
    linear,
    make_shaping,
    relation_shares,
    reward_relation,
    sars,
    sars_bonus,
    weighted_sum,
)

SETTINGS = settings(max_examples=150, deadline=None)

adv = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, allow_infinity=False)
pos = st.floats(min_value=1e-3, max_value=5.0)
neg = st.floats(min_value=-5.0, max_value=-1e-3)
weight = st.floats(min_value=0.0, max_value=1.0)
gammas = st.floats(min_value=0.0, max_value=2.0)


def t(x: float) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float64)


def test_hand_values() -> None:
    a_id = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0])
    a_p = torch.tensor([2.0, -2.0, 2.0, -2.0, 3.0])
    lin = linear(a_id, a_p, 0.3, w_prompt=0.7)
    torch.testing.assert_close(lin, 0.3 * a_id + 0.7 * a_p)
    th2 = math.tanh(2.0)
    expected = lin + 0.4 * torch.tensor([th2, -th2, -th2, -th2, 0.0])
    torch.testing.assert_close(sars(a_id, a_p, 0.3, w_prompt=0.7), expected)


def test_tensor_weights_broadcast() -> None:
    a_id = torch.tensor([1.0, -1.0])
    a_p = torch.tensor([0.5, 0.5])
    w_id = torch.tensor([0.2, 0.8])
    out = linear(a_id, a_p, w_id, w_prompt=1 - w_id)
    torch.testing.assert_close(out, torch.tensor([0.2 + 0.4, -0.8 + 0.1]))


@SETTINGS
@given(adv, adv, weight, weight, gammas)
def test_sars_within_gamma_of_linear(a, b, w1, w2, gamma) -> None:
    d = sars(t(a), t(b), w1, w_prompt=w2, gamma=gamma) - linear(t(a), t(b), w1, w_prompt=w2)
    assert abs(d.item()) <= gamma + 1e-12


@SETTINGS
@given(adv, adv, weight, weight)
def test_gamma_zero_is_linear(a, b, w1, w2) -> None:
    torch.testing.assert_close(
        sars(t(a), t(b), w1, w_prompt=w2, gamma=0.0), linear(t(a), t(b), w1, w_prompt=w2)
    )


@SETTINGS
@given(pos, pos, weight, weight, st.floats(0.01, 2.0))
def test_both_positive_amplified(a, b, w1, w2, gamma) -> None:
    assert (
        sars(t(a), t(b), w1, w_prompt=w2, gamma=gamma).item()
        > linear(t(a), t(b), w1, w_prompt=w2).item()
    )


@SETTINGS
@given(pos, neg, weight, weight, st.floats(0.01, 2.0), st.booleans())
def test_conflict_penalised(p, n, w1, w2, gamma, id_is_positive) -> None:
    a, b = (p, n) if id_is_positive else (n, p)
    assert (
        sars(t(a), t(b), w1, w_prompt=w2, gamma=gamma).item()
        < linear(t(a), t(b), w1, w_prompt=w2).item()
    )


@SETTINGS
@given(neg, neg, weight, weight, st.floats(0.01, 2.0))
def test_joint_failure_penalised(a, b, w1, w2, gamma) -> None:
    assert (
        sars(t(a), t(b), w1, w_prompt=w2, gamma=gamma).item()
        < linear(t(a), t(b), w1, w_prompt=w2).item()
    )


@SETTINGS
@given(adv, adv, pos, weight, weight, gammas)
def test_monotone_in_each_advantage_when_other_positive(x1, x2, other, w1, w2, gamma) -> None:
    assume(x1 != x2)
    lo, hi = min(x1, x2), max(x1, x2)
    # in a_id with a_prompt fixed and positive
    assert (
        sars(t(hi), t(other), w1, w_prompt=w2, gamma=gamma).item()
        >= sars(t(lo), t(other), w1, w_prompt=w2, gamma=gamma).item()
    )
    # in a_prompt with a_id fixed and positive
    assert (
        sars(t(other), t(hi), w1, w_prompt=w2, gamma=gamma).item()
        >= sars(t(other), t(lo), w1, w_prompt=w2, gamma=gamma).item()
    )


def test_relation_codes_and_zero_boundaries() -> None:
    a_id = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0, 1.0, 0.0])
    a_p = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 2.0])
    rel = reward_relation(a_id, a_p)
    assert rel.dtype == torch.long
    expected = [SYNERGY, CONFLICT, CONFLICT, JOINT_FAILURE, JOINT_FAILURE, CONFLICT, CONFLICT]
    assert rel.tolist() == expected
    assert (SYNERGY, CONFLICT, JOINT_FAILURE) == (0, 1, 2)
    assert RELATION_NAMES == ("synergy", "conflict", "joint_failure")


@SETTINGS
@given(st.lists(st.tuples(adv, adv), min_size=1, max_size=30))
def test_relation_matches_definition_and_shares(pairs) -> None:
    a_id = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    a_p = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    rel = reward_relation(a_id, a_p).tolist()
    for (a, b), r in zip(pairs, rel, strict=True):
        n_pos = int(a > 0) + int(b > 0)
        assert r == {2: SYNERGY, 1: CONFLICT, 0: JOINT_FAILURE}[n_pos]
    shares = relation_shares(a_id, a_p)
    assert set(shares) == set(RELATION_NAMES)
    assert sum(shares.values()) == pytest.approx(1.0)
    for code, name in enumerate(RELATION_NAMES):
        assert shares[name] == pytest.approx(rel.count(code) / len(rel))


def test_relation_shares_hand_and_empty() -> None:
    shares = relation_shares(
        torch.tensor([1.0, 1.0, -1.0, 2.0]), torch.tensor([1.0, -1.0, -1.0, 3.0])
    )
    assert shares == {"synergy": 0.5, "conflict": 0.25, "joint_failure": 0.25}
    with pytest.raises(ValueError, match="empty"):
        relation_shares(torch.tensor([]), torch.tensor([]))


def test_strategy_objects_and_factory() -> None:
    a_id = torch.tensor([0.5, -1.0, 2.0])
    a_p = torch.tensor([1.5, 0.5, -0.2])
    adv = {"identity": a_id, "prompt": a_p}
    w = {"identity": 0.4, "prompt": 0.6}
    pair = ("identity", "prompt")
    assert set(SHAPINGS.kinds) == {"linear", "sars"}
    lin = make_shaping("linear")
    assert isinstance(lin, LinearShaping) and lin.kind == "linear"
    # for two rewards the strategies are exactly the pure functions (same float ops)
    assert torch.equal(lin(adv, w, pair), linear(a_id, a_p, 0.4, w_prompt=0.6))
    s = make_shaping("sars", gamma=0.25)
    assert isinstance(s, SARSShaping) and s.gamma == 0.25 and s.kind == "sars"
    assert torch.equal(s(adv, w, pair), sars(a_id, a_p, 0.4, w_prompt=0.6, gamma=0.25))
    assert SARSShaping().gamma == 0.4
    one = {"identity": 1.0, "prompt": 1.0}
    assert torch.equal(make_shaping("sars")(adv, one, pair), sars(a_id, a_p, 1.0, w_prompt=1.0))
    with pytest.raises(ValueError, match="linear, sars"):
        make_shaping("synergy")
    with pytest.raises(ValueError, match="gamma"):
        SARSShaping(gamma=-0.1)


def test_three_rewards_linear_and_sars_on_the_pair() -> None:
    """N > 2: every reward enters the weighted sum; the SARS bonus uses only the pair."""
    g = torch.Generator().manual_seed(0)
    adv = {k: torch.randn(16, generator=g) for k in ("identity", "prompt", "colour")}
    w = {"identity": 0.3, "prompt": 0.7, "colour": 0.25}
    expected_lin = 0.3 * adv["identity"] + 0.7 * adv["prompt"] + 0.25 * adv["colour"]
    torch.testing.assert_close(weighted_sum(adv, w), expected_lin)
    torch.testing.assert_close(LinearShaping()(adv, w, ("identity", "prompt")), expected_lin)
    a, b = adv["identity"], adv["prompt"]
    s = torch.where((a > 0) | (b > 0), 1.0, -1.0)
    bonus = 0.4 * s * torch.tanh(a * b)
    torch.testing.assert_close(SARSShaping()(adv, w, ("identity", "prompt")), expected_lin + bonus)
    torch.testing.assert_close(sars_bonus(a, b, 0.4), bonus)
    # another pair: the bonus moves with it
    other = SARSShaping()(adv, w, ("identity", "colour"))
    torch.testing.assert_close(other, expected_lin + sars_bonus(a, adv["colour"], 0.4))
    with pytest.raises(ValueError, match=r"method.shaping=sars needs .*\['hps'\] missing"):
        SARSShaping()(adv, w, ("identity", "hps"))
    with pytest.raises(ValueError, match="no weight"):
        weighted_sum(adv, {"identity": 1.0})
