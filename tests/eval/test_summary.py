"""``cgrpo.eval.summary``: paired changes, share of the gap to the ground truth, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cgrpo.eval.summary import gap_closed, paired_changes, paired_difference, summary_table


def _summary(values: dict[str, np.ndarray], pairs: int) -> dict:
    return {
        "overall": {k: float(v.mean()) for k, v in values.items()},
        "pairs": pairs,
        "images": len(next(iter(values.values()))),
        "per_image": {k: v.tolist() for k, v in values.items()},
    }


def test_paired_difference_is_new_minus_old() -> None:
    mean, se = paired_difference([1.0, 2.0, 4.0], [0.5, 1.0, 1.0])
    d = np.array([0.5, 1.0, 3.0])
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / math.sqrt(3))


def test_paired_se_is_over_pairs_when_a_pair_has_several_draws() -> None:
    """Draws of one pair move together: their SE is the pairs' one, not sqrt(k) smaller."""
    rng = np.random.default_rng(0)
    pair_change = rng.normal(0.01, 0.05, 100)  # each pair's own change, shared by its draws
    base = rng.uniform(0.3, 0.6, 400)
    model = base + np.repeat(pair_change, 4) + rng.normal(0, 0.001, 400)
    _, naive = paired_difference(model, base)  # 400 images taken as independent
    mean, se = paired_difference(model, base, 4)
    assert mean == pytest.approx((model - base).mean())
    assert se == pytest.approx(pair_change.std(ddof=1) / 10, rel=0.02)
    assert se > 1.9 * naive  # the independent-image SE understates it by about sqrt(4)
    m = {"per_image": {"id": model.tolist()}, "images_per_pair": 4}
    b = {"per_image": {"id": base.tolist()}, "images_per_pair": 4}
    assert paired_changes(m, b)["id"] == pytest.approx((mean, se))
    with pytest.raises(ValueError, match="draw \\[2, 4\\] images per pair"):
        paired_changes(m, {**b, "images_per_pair": 2})
    with pytest.raises(ValueError, match="not whole pairs of 3"):
        paired_difference(model[:10], base[:10], 3)


def test_gap_closed_matches_the_ratio_and_its_delta_method_error() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, 200)
    truth = base + rng.uniform(0.1, 0.4, 200)
    model = base + 0.5 * (truth - base) + rng.normal(0, 0.02, 200)
    s = {k: _summary({"id": v}, 200) for k, v in (("b", base), ("m", model), ("t", truth))}
    g, se = gap_closed(s["m"], s["b"], s["t"])["id"]
    d, e = model - base, truth - base
    assert g == pytest.approx(d.mean() / e.mean())
    assert g == pytest.approx(0.5, abs=0.02)
    # the delta method's SE agrees with the bootstrap's
    boot = []
    for _ in range(2000):
        i = rng.integers(0, 200, 200)
        boot.append(d[i].mean() / e[i].mean())
    assert se == pytest.approx(np.std(boot), rel=0.15)
    # a model at the truth closes the whole gap; the base none of it
    assert gap_closed(s["t"], s["b"], s["t"])["id"][0] == pytest.approx(1.0)
    assert gap_closed(s["b"], s["b"], s["t"])["id"][0] == 0.0


def test_table_rows_with_truth() -> None:
    rng = np.random.default_rng(1)
    b = {"identity": rng.uniform(0, 1, 8), "prompt": rng.uniform(0, 1, 8)}
    m = {k: v + 0.05 for k, v in b.items()}
    t = {k: v + 0.2 for k, v in b.items()}
    base, model, truth = (_summary(x, 4) for x in (b, m, t))
    text = summary_table(base, model, truth=truth)
    lines = {ln.split()[0] + (" " + ln.split()[1] if ln.startswith("gap") else ""): ln
             for ln in text.splitlines()[2:] if ln and not ln.startswith("(")}  # fmt: skip
    assert lines["gap closed"].split()[2:] == ["+25.0", "+25.0"]
    assert "truth" in lines and "paired SE" in text and "4 pairs x 2 noises" in text
    assert paired_changes(model, base)["prompt"][0] == pytest.approx(0.05)
    assert "gap closed" not in summary_table(base, model)
