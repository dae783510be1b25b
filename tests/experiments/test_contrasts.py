"""Paired contrasts: between arms of one sweep (what each part adds), and against the same
arm and seed of another sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cgrpo.eval.summary import pair_means
from cgrpo.experiments.cells import pooled_cell
from cgrpo.experiments.contrasts import against_section, check_against, components_section
from cgrpo.experiments.statistics import pooled
from tests.experiments.conftest import shifted_arm, synthetic_base


def test_components_are_paired_contrasts_of_the_arms_that_finished() -> None:
    """Each row is one arm minus another image by image: a planted SARS effect shows in the
    rows that contain SARS only, and a contrast with an arm not run is left out."""
    rng = np.random.default_rng(2)
    base = synthetic_base(rng)
    finals = {
        "naive_1_1": shifted_arm(base, 0.02, 0.01, seeds=3, rng=rng),
        "sars": shifted_arm(base, 0.03, 0.01, seeds=3, rng=rng),  # SARS adds +0.01 identity
        "sars_tdw": shifted_arm(base, 0.03, 0.01, seeds=3, rng=rng),
    }
    text = components_section(finals, 2)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[4:] if line}
    assert list(rows) == ["SARS only minus naive GRPO 1:1", "SARS + TDW minus SARS only"]
    sars = rows["SARS only minus naive GRPO 1:1"].split(" | ")
    assert sars[2] == "3" and sars[3].endswith("*")
    assert float(sars[3].split(" ± ")[0]) == pytest.approx(0.01, abs=0.002)
    assert not sars[4].endswith("*")  # no planted prompt effect
    tdw = rows["SARS + TDW minus SARS only"].split(" | ")
    assert not tdw[3].endswith("*") and not tdw[4].endswith("*")
    assert components_section({"naive_1_1": finals["naive_1_1"]}, 2) == ""


def test_against_pairs_the_same_arm_and_seed_of_another_sweep(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = synthetic_base(rng)
    here = {
        "sars_tdw": shifted_arm(base, 0.03, 0.02, seeds=3, rng=rng),
        "naive_1_1": shifted_arm(base, 0.0, 0.0, seeds=1, rng=rng),
    }
    there = {
        "sars_tdw": shifted_arm(base, 0.01, 0.02, seeds=2, rng=rng)
    }  # seeds 0 and 1; no naive 1:1
    text = against_section(here, there, 2, name="runs/other")
    d = {k: here["sars_tdw"][k]["identity"] - there["sars_tdw"][k]["identity"] for k in (0, 1)}
    pool = pooled({k: pair_means(v, 2) for k, v in d.items()})
    row = next(line for line in text.splitlines() if line.startswith("| SARS + TDW |"))
    assert row.startswith(f"| SARS + TDW | 0, 1 | {pooled_cell(pool)} |")
    assert abs(pool[0] - 0.02) < 0.003 and "naive GRPO 1:1" not in text
    none = against_section({"naive_1_1": here["naive_1_1"]}, there, 2, name="runs/other")
    assert "No arm and seed finished" in none and "| naive" not in none
    # a sweep on other pairs or noise is refused before anything runs
    summary = {"per_image": {r: v.tolist() for r, v in base.items()}}
    (tmp_path / "o" / "base_eval").mkdir(parents=True)
    (tmp_path / "o" / "base_eval" / "metrics.json").write_text(json.dumps(summary))
    check_against(tmp_path / "o", summary)  # the same base: fine
    # the same images evaluated elsewhere: float rounding in a few rewards is not a new base
    jitter = base["identity"].copy()
    jitter[::7] += 1.1e-4
    check_against(tmp_path / "o", {"per_image": {**summary["per_image"], "identity": jitter}})
    one_moved = base["identity"].copy()
    one_moved[3] += 0.02  # one image of another noise is enough to refuse
    shorter = {r: v[:-2].tolist() for r, v in base.items()}  # another --eval-images
    for other in ({**summary["per_image"], "identity": one_moved.tolist()}, shorter):
        with pytest.raises(SystemExit, match="cannot be paired image by image"):
            check_against(tmp_path / "o", {"per_image": other})
    moved = {"per_image": {**summary["per_image"], "prompt": (base["prompt"] + 0.1).tolist()}}
    with pytest.raises(SystemExit, match="cannot be paired image by image"):
        check_against(tmp_path / "o", moved)
    with pytest.raises(SystemExit, match="point it at another sweep's --out"):
        check_against(tmp_path / "missing", summary)
