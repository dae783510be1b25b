"""The claims' verdicts turn with the figures they read (synthetic paired images)."""

from __future__ import annotations

import numpy as np

from cgrpo.experiments.claims import Figures, claims_section
from tests.experiments.conftest import shifted_arm, synthetic_base


def _claims(finals, base, curves, *, conflict, expected, **budget) -> tuple[str, dict[str, str]]:
    fig = Figures(
        finals=finals, base=base, curves=curves, conflict=conflict, per_pair=2,
        expected=expected, **budget,
    )  # fmt: skip
    return claims_section(fig)


def test_claims_verdicts_follow_the_figures() -> None:
    """Each claim's verdict turns with the figures it reads (200 pairs x 2 draws, 3 seeds)."""
    rng = np.random.default_rng(0)
    base = synthetic_base(rng)
    finals = {
        "naive_1_1": shifted_arm(
            base, 0.03, -0.02, seeds=3, rng=rng
        ),  # identity up, prompt below base
        "naive_1_1.5": shifted_arm(base, 0.0, 0.01, seeds=3, rng=rng),
        "sars_tdw": shifted_arm(
            base, 0.03, 0.02, seeds=3, rng=rng
        ),  # above base on both, dominates both
    }
    expected = {a: 3 for a in finals}
    # combined held-out reward: naive 1:1 ends at 1.10; SARS + TDW passes it at step 20 of 40
    curves = {
        "naive_1_1": {k: {0: 1.0, 20: 1.05, 40: 1.10} for k in range(3)},
        "sars_tdw": {k: {0: 1.0, 20: 1.11, 40: 1.15} for k in range(3)},
    }
    conflict = {"naive_1_1": [0.5, 0.52, 0.54], "sars_tdw": [0.5, 0.5, 0.5]}
    text, v = _claims(finals, base, curves, conflict=conflict, expected=expected)
    assert list(v) == ["budget", "1", "2", "3", "4", "5"]  # the report's order
    assert [v[k] for k in "1234"] == ["**holds**"] * 4
    assert "(naive GRPO 1:1)." in text and "51.0 % over all 6 runs" in text
    assert "degrees of freedom (4.3 for 3 seeds)" in text  # the preface names this run's t
    assert v["budget"] == "met in 3 of 3 seeds"  # +0.02 at an SE of ~0.0007

    # SARS only counts as a static arm; SARS + TDW now loses identity to naive 1:1.5
    finals["sars"] = shifted_arm(base, -0.02, 0.03, seeds=3, rng=rng)
    finals["naive_1_1"] = shifted_arm(base, 0.03, 0.0, seeds=3, rng=rng)  # no longer degrades
    finals["naive_1_1.5"] = shifted_arm(base, 0.04, 0.02, seeds=3, rng=rng)
    expected["sars"] = 3
    text, v = _claims(finals, base, curves, conflict=conflict, expected=expected)
    assert v["1"] == "**holds**" and "(SARS only)." in text
    assert v["3"] == "**does not hold**" and "it dominates 1 of 2" in text

    # one seed where SARS + TDW ends below base on prompt; its curve passes only at the end
    finals["sars_tdw"][2]["prompt"] = base["prompt"] - 0.01 + rng.normal(0, 0.01, 400)
    curves["sars_tdw"] = {k: {0: 1.0, 20: 1.05, 40: 1.12} for k in range(3)}
    text, v = _claims(finals, base, curves, conflict=conflict, expected=expected)
    assert v["2"] == v["4"] == "**does not hold**"
    assert "above on both in 2 of 3 seeds" in text and v["budget"] == "met in 2 of 3 seeds"
    assert "first at or above it at step 40" in text

    # the budget test reads the extra evaluation when there is one
    budget = {k: {"identity": (0.02, 0.001), "prompt": (0.004, 0.001)} for k in range(3)}
    text, v = _claims(
        finals, base, curves, conflict=conflict, expected=expected, budget=budget, budget_images=16
    )
    assert v["budget"] == "met in 0 of 3 seeds" and "measured on 16 noises per pair" in text

    # an arm outside the verdicts' (naive 2:1) is shown apart and changes no verdict
    _, v1 = _claims(finals, base, curves, conflict=conflict, expected=expected)
    finals["naive_2_1"] = shifted_arm(base, 0.05, -0.03, seeds=2, rng=rng)
    text2, v2 = _claims(finals, base, curves, conflict=conflict, expected=expected)
    assert v2 == v1 and "| naive GRPO 2:1 | 2 |" in text2.split("**Extra arms**")[1]
    del finals["naive_2_1"]

    # a claim whose arms have not all their seeds is not decided
    expected["naive_1_1"] = 5
    text, v = _claims(finals, base, curves, conflict=conflict, expected=expected)
    assert "(2.78 for 5 seeds)" in text
    assert v["1"].startswith("**incomplete**") and "naive GRPO 1:1 3 of 5" in v["3"]
    assert v["2"] == "**does not hold**"  # SARS + TDW alone has all its seeds


def test_claims_without_the_default_arm_leave_its_claims_out() -> None:
    rng = np.random.default_rng(3)
    base = synthetic_base(rng)
    finals = {"naive_1_1": shifted_arm(base, 0.03, -0.02, seeds=2, rng=rng)}
    text, v = _claims(finals, base, {}, conflict={}, expected={"naive_1_1": 2})
    assert list(v) == ["1"] and v["1"] == "**holds**"
    assert "**Budget test**" not in text and "**2." not in text and "**5." not in text
