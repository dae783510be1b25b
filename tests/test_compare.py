"""``cgrpo compare`` and the experiment report, on real run folders and synthetic runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import fast_config

from cgrpo.cli import main
from cgrpo.compare import (
    ArmResult,
    RunResult,
    compare_command,
    load_run,
    write_experiment_report,
)
from cgrpo.trainer import GRPOTrainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    run = tmp_path_factory.mktemp("r") / "run"
    cfg = fast_config(run, tiny_weights, "run.steps=3", "run.eval_every=2")
    GRPOTrainer(cfg).train(quiet=True)
    return run


def test_load_train_run(run_dir: Path) -> None:
    r = load_run(run_dir)
    ev = json.loads((run_dir / "eval.json").read_text())
    assert r.trained == {"identity": ev["trained"]["identity"], "prompt": ev["trained"]["prompt"]}
    assert r.base == {"identity": ev["base"]["identity"], "prompt": ev["base"]["prompt"]}
    assert [c[0] for c in r.curve] == [0, 2]  # base, then every run.eval_every steps
    assert r.curve[0][1:] == (r.base["identity"], r.base["prompt"])
    assert [c[0] for c in r.conflict] == [1, 2, 3]
    assert all(0 <= c[1] <= 1 for c in r.conflict)


def test_compare_command_table_and_plot(tmp_path: Path, run_dir: Path) -> None:
    ev = tmp_path / "ev"
    assert main(["eval", "--run", str(run_dir), "--quiet", f"out_dir={ev}", "base=true",
                 "prompts_per_subject=1"]) == 0  # fmt: skip
    out = tmp_path / "cmp"
    table = compare_command([run_dir, ev], out)
    m = json.loads((ev / "metrics.json").read_text())
    change = m["overall"]["identity"] - m["base"]["identity"]
    assert f"{change:+.4f}" in table and str(ev) in table
    assert (out / "compare.png").stat().st_size > 1000
    assert "compare.png" in (out / "compare.md").read_text()


def test_compare_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="neither eval.json"):
        load_run(tmp_path)
    assert main(["compare", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    for name, axes in (("a", ("identity", "prompt")), ("b", ("dino", "hps"))):
        d = tmp_path / name
        d.mkdir()
        x, y = axes
        (d / "metrics.json").write_text(
            json.dumps({"identity_column": x, "prompt_column": y, "overall": {x: 0.5, y: 0.2}})
        )
    with pytest.raises(ValueError, match="different things"):
        compare_command([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def _run(i: float, p: float, seed: int) -> RunResult:
    base = {"identity": 0.5, "prompt": 0.8}
    return RunResult(
        f"s{seed}",
        Path(f"s{seed}"),
        {"identity": i, "prompt": p},
        base,
        steps=10,
        curve=[(0, 0.5, 0.8), (5, (0.5 + i) / 2, (0.8 + p) / 2), (10, i, p)],
        conflict=[(s, 0.1 * seed) for s in range(1, 11)],
    )


def test_experiment_report(tmp_path: Path) -> None:
    good = ArmResult("good", "Good arm", [_run(0.52, 0.83, 0), _run(0.54, 0.85, 1)])
    bad = ArmResult("bad", "Bad arm", [_run(0.45, 0.86, 0), _run(0.47, 0.84, 1)])
    doc = tmp_path / "docs" / "results.md"
    write_experiment_report([good, bad], doc, "python x.py")
    text = doc.read_text()
    ids = np.array([0.52, 0.54])
    assert f"{ids.mean():.4f} ± {ids.std(ddof=1):.4f}" in text
    d = ids - 0.5  # the change from base
    assert f"| {d.mean():+.4f} ± {d.std(ddof=1):.4f} |" in text
    assert "above base on both rewards: Good arm." in text
    assert "`python x.py`" in text
    for name in ("results_pareto.png", "results_curves.png"):
        assert (tmp_path / "docs" / "images" / name).stat().st_size > 1000
    # hand-written text above the marker survives a rewrite
    doc.write_text("# Mine\n\nMy reading.\n\n" + text[text.index("<!-- generated -->") :])
    write_experiment_report([good], doc, "python y.py")
    new = doc.read_text()
    assert new.startswith("# Mine\n\nMy reading.") and "Bad arm" not in new
