"""The experiment report (:mod:`cgrpo.experiments.report`) on made-up runs of three named
rewards: its tables, figures, and the hand-written text it keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cgrpo.eval.compare import RunResult
from cgrpo.experiments.report import ArmResult, write_experiment_report


def _run(i: float, p: float, seed: int) -> RunResult:
    base = {"identity": 0.5, "prompt": 0.8, "colour": 0.3}
    mid = {"identity": (0.5 + i) / 2, "prompt": (0.8 + p) / 2, "colour": 0.3}
    return RunResult(
        f"s{seed}",
        Path(f"s{seed}"),
        trained={"identity": i, "prompt": p, "colour": 0.31},
        base=base,
        steps=10,
        curve=[(0, base), (5, mid), (10, {"identity": i, "prompt": p, "colour": 0.31})],
        conflict=[(s, 0.1 * seed) for s in range(1, 11)],
        paired={"identity": (i - 0.5, 0.004), "prompt": (p - 0.8, 0.003)},
    )


def test_experiment_report(tmp_path: Path) -> None:
    good = ArmResult("good", "Good arm", [_run(0.52, 0.83, 0), _run(0.54, 0.85, 1)])
    bad = ArmResult("bad", "Bad arm", [_run(0.45, 0.86, 0), _run(0.47, 0.84, 1)])
    doc = tmp_path / "docs" / "results.md"
    write_experiment_report([good, bad], doc, "python x.py", extra="**1. A claim**: holds.")
    text = doc.read_text()
    assert text.index("above base on both") < text.index("**1. A claim**") < text.index("s0 |")
    ids = np.array([0.52, 0.54])
    assert f"{ids.mean():.4f} ± {ids.std(ddof=1):.4f}" in text
    d = ids - 0.5  # the change from base
    assert f"| {d.mean():+.4f} ± {d.std(ddof=1):.4f} |" in text
    assert "above base on both rewards: Good arm." in text
    assert "`python x.py`" in text and "| Δ identity | Δ prompt |" in text
    assert f"| Good arm | s0 | {0.02:+.4f} ± 0.0040 | {0.03:+.4f} ± 0.0030 |" in text
    assert "step 0 | step 5 | step 10" in text and "0.515 / 0.820" in text
    for name in ("results_pareto.png", "results_curves.png"):
        assert (tmp_path / "docs" / "images" / name).stat().st_size > 1000
    # hand-written text above the marker survives a rewrite
    doc.write_text("# Mine\n\nMy reading.\n\n" + text[text.index("<!-- generated -->") :])
    write_experiment_report([good], doc, "python y.py")
    new = doc.read_text()
    assert new.startswith("# Mine\n\nMy reading.") and "Bad arm" not in new
    # the arms' axes are the reported pair
    other = ArmResult("c", "Colour arm", [_run(0.52, 0.83, 0)])
    for r in other.runs:
        r.axes = ("colour", "prompt")
    assert other.curve()[1].tolist() == [[0.3, 0.3, 0.31]]
    with pytest.raises(ValueError, match="different things"):
        write_experiment_report([good, other], doc, "python z.py")
    # a second report in the same folder keeps its own figures (named after its page)
    before = (tmp_path / "docs" / "images" / "results_pareto.png").read_bytes()
    second = tmp_path / "docs" / "results_full.md"
    write_experiment_report([bad], second, "python w.py")
    assert "](images/results_full_pareto.png)" in second.read_text()
    assert (tmp_path / "docs" / "images" / "results_full_curves.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "images" / "results_pareto.png").read_bytes() == before
    # a hand-written page without the marker is kept whole, the figures below it
    second.write_text("# Full schedule\n\nMy reading of it.\n")
    write_experiment_report([bad], second, "python w.py")
    text = second.read_text()
    assert text.startswith("# Full schedule\n\nMy reading of it.\n\n<!-- generated -->")
    write_experiment_report([bad], second, "python w.py")  # and once marked, not doubled
    assert second.read_text() == text
