"""Tests for cgrpo.method.weighting: static and time-aware (TDW) weights, and true step indices."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgrpo.method.weighting import (
    WEIGHTINGS,
    StaticWeights,
    TimeAwareWeights,
    make_weighting,
    train_step_indices,
)

SETTINGS = settings(max_examples=150, deadline=None)

# The paper's 25-step schedule of w_prompt (3 decimals).
TABLE_25 = {
    **{t: 0.700 for t in range(6)},
    6: 0.684,
    8: 0.633,
    10: 0.500,
    12: 0.367,
    14: 0.316,
    **{t: 0.500 for t in range(22, 25)},
}


@pytest.mark.parametrize("t,expected", sorted(TABLE_25.items()))
def test_tdw_25_step_table(t: int, expected: float) -> None:
    w_id, w_prompt = TimeAwareWeights().weights(t, 25)
    assert round(w_prompt, 3) == pytest.approx(expected, abs=1e-9)
    assert isinstance(w_id, float) and isinstance(w_prompt, float)


def test_tdw_plateau_16_to_21_is_about_0_30() -> None:
    tdw = TimeAwareWeights()
    for t in range(16, 22):
        assert tdw.weights(t, 25)[1] == pytest.approx(0.30, abs=0.005)
    # and it is the sigmoid, not a flat constant: strictly decreasing over the middle
    mids = [tdw.weights(t, 25)[1] for t in range(6, 22)]
    assert all(a > b for a, b in zip(mids, mids[1:], strict=False))


def test_tdw_mid_formula_by_hand() -> None:
    t = 9
    expected = 0.3 + 0.4 * (1 - 1 / (1 + math.exp(-0.8 * (t - 10))))
    assert TimeAwareWeights().weights(t, 25)[1] == pytest.approx(expected, rel=1e-12)


@SETTINGS
@given(st.integers(1, 200), st.data())
def test_tdw_weights_sum_to_one_and_tensor_matches_scalar(num_steps: int, data) -> None:
    tdw = TimeAwareWeights()
    t = data.draw(st.integers(0, num_steps - 1))
    w_id, w_prompt = tdw.weights(t, num_steps)
    assert w_id + w_prompt == pytest.approx(1.0, abs=1e-12)
    assert 0.3 - 1e-9 <= w_prompt <= 0.7 + 1e-9
    tw_id, tw_prompt = tdw.weights_tensor(torch.tensor([t]), num_steps)
    assert tw_prompt.dtype == torch.float32
    assert tw_prompt.item() == pytest.approx(w_prompt, abs=1e-6)
    assert tw_id.item() == pytest.approx(w_id, abs=1e-6)


@pytest.mark.parametrize("k", range(25))
def test_tdw_50_steps_even_index_equals_25_step_value(k: int) -> None:
    tdw = TimeAwareWeights()
    assert tdw.weights(2 * k, 50) == tdw.weights(k, 25)


def test_tdw_uses_fraction_of_trajectory() -> None:
    tdw = TimeAwareWeights()
    # 10 steps: t=2 -> t'=5 (early), t=3 -> t'=7.5 (middle), t=9 -> t'=22.5 (late)
    assert tdw.weights(2, 10)[1] == 0.7
    assert tdw.weights(3, 10)[1] == pytest.approx(0.3 + 0.4 / (1 + math.exp(0.8 * (7.5 - 10))))
    assert tdw.weights(9, 10)[1] == 0.5


def test_tdw_vectorised_full_table() -> None:
    tdw = TimeAwareWeights()
    w_id, w_prompt = tdw.weights_tensor(torch.arange(25), 25)
    ref = torch.tensor([tdw.weights(t, 25)[1] for t in range(25)], dtype=torch.float32)
    torch.testing.assert_close(w_prompt, ref)
    torch.testing.assert_close(w_id + w_prompt, torch.ones(25))


def test_tdw_constants_are_fields() -> None:
    tdw = TimeAwareWeights(early_w_prompt=0.9, late_w_prompt=0.4, low=0.1, span=0.8)
    assert tdw.weights(0, 25)[1] == 0.9
    assert tdw.weights(24, 25)[1] == 0.4
    assert tdw.weights(10, 25)[1] == pytest.approx(0.1 + 0.8 * 0.5)


def test_static_weights() -> None:
    base = {"identity": 1.0, "prompt": 1.5, "colour": 0.2}
    assert StaticWeights().step_weights(0, 10, base) == base
    sw = StaticWeights(weights={"identity": 0.25, "prompt": 2.0})
    assert sw.step_weights(0, 10, base) == {"identity": 0.25, "prompt": 2.0, "colour": 0.2}
    assert sw.step_weights(9, 10, base) == sw.step_weights(0, 10, base)
    with pytest.raises(ValueError, match="not rewards"):
        StaticWeights(weights={"hps": 1.0}).step_weights(0, 10, base)
    with pytest.raises(ValueError, match="0 <= t < num_steps"):
        sw.step_weights(10, 10, base)


def test_tdw_sets_the_pair_and_leaves_other_rewards_static() -> None:
    tdw = TimeAwareWeights()
    base = {"identity": 1.0, "prompt": 1.0, "colour": 0.2}
    for t in range(25):
        w = tdw.step_weights(t, 25, base, pair=("identity", "prompt"))
        assert (w["identity"], w["prompt"]) == tdw.weights(t, 25)
        assert w["colour"] == 0.2
    # the roles follow the pair's order: (identity role, prompt role)
    w = tdw.step_weights(0, 25, base, pair=("colour", "identity"))
    assert (w["colour"], w["identity"], w["prompt"]) == (*tdw.weights(0, 25), 1.0)
    with pytest.raises(ValueError, match=r"method.weighting=tdw needs .*\['hps'\] missing"):
        tdw.step_weights(0, 25, base, pair=("identity", "hps"))


def test_tdw_step_index_validation() -> None:
    w = TimeAwareWeights()
    for bad in (-1, 25):
        with pytest.raises(ValueError, match="0 <= t < num_steps"):
            w.weights(bad, 25)
    with pytest.raises(ValueError, match="0 <= t < num_steps"):
        w.weights_tensor(torch.tensor([0, 25]), 25)
    with pytest.raises(ValueError, match="num_steps"):
        w.weights(0, 0)


def test_factory() -> None:
    assert set(WEIGHTINGS.kinds) == {"static", "tdw"}
    assert isinstance(make_weighting("tdw"), TimeAwareWeights)
    assert make_weighting("static", weights={"identity": 0.5}).weights == {"identity": 0.5}
    assert make_weighting("tdw", early_w_prompt=0.9).weights(0, 25) == pytest.approx((0.1, 0.9))
    with pytest.raises(ValueError, match="static, tdw"):
        make_weighting("time_aware")


# ---------------------------------------------------------------------------------------------
# the weight of a trained transition must come from its TRUE denoising step


def test_train_step_indices_subset_size_and_order() -> None:
    idx = train_step_indices(25, 0.6, torch.Generator().manual_seed(0))
    assert idx.dtype == torch.long
    assert len(idx) == 15  # round(0.6 * 25)
    assert len(set(idx.tolist())) == 15
    assert all(0 <= i < 25 for i in idx.tolist())
    assert len(train_step_indices(25, 0.01)) == 1  # max(1, round(0.25))
    assert sorted(train_step_indices(25, 1.0).tolist()) == list(range(25))
    # random order and random subset: across seeds, not always sorted, not always the prefix
    draws = [train_step_indices(25, 0.6, torch.Generator().manual_seed(s)) for s in range(10)]
    assert any(d.tolist() != sorted(d.tolist()) for d in draws)
    assert any(sorted(d.tolist()) != list(range(15)) for d in draws)
    with pytest.raises(ValueError, match="fraction"):
        train_step_indices(25, 0.0)


def _train_loop_weights(weighting, num_steps, fraction, generator, by_true_index: bool):
    """A minimal training loop over permuted steps, as a trainer writes it; returns the
    w_prompt applied to each trained transition and the step each transition really is."""
    steps = train_step_indices(num_steps, fraction, generator)
    used, true_steps = [], []
    for j, t in enumerate(steps.tolist()):
        index_for_weight = t if by_true_index else j  # the public bug used j
        used.append(weighting.weights(index_for_weight, num_steps)[1])
        true_steps.append(t)
    return used, true_steps


def test_weights_come_from_true_step_not_loop_counter() -> None:
    tdw = TimeAwareWeights()
    used, true_steps = _train_loop_weights(tdw, 25, 0.6, torch.Generator().manual_seed(0), True)
    for w, t in zip(used, true_steps, strict=True):
        assert w == tdw.weights(t, 25)[1]
    # the vectorised path agrees
    _, wp = tdw.weights_tensor(torch.tensor(true_steps), 25)
    torch.testing.assert_close(wp, torch.tensor(used, dtype=torch.float32))

    # the buggy loop (weight by loop counter j) applies different weights to these same
    # transitions, so a trainer doing that would fail the per-transition check above
    buggy, true_steps_b = _train_loop_weights(tdw, 25, 0.6, torch.Generator().manual_seed(0), False)
    assert true_steps_b == true_steps
    mismatches = [
        (t, wb) for wb, t in zip(buggy, true_steps, strict=True) if wb != tdw.weights(t, 25)[1]
    ]
    assert len(mismatches) >= 3
