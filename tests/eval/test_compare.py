"""``cgrpo compare``, on run folders written here in the formats
``cgrpo train`` / ``cgrpo eval`` write (made-up values, three named rewards)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cgrpo.cli import main
from cgrpo.eval.compare import compare_command, compare_table, load_run

REWARDS = {"identity": "embedded_identity", "prompt": "embedded_prompt", "colour": "colour"}
BASE = {"identity": 0.5, "prompt": 0.8, "colour": 0.3}


def _summary(means: dict[str, float], seed: int, n: int = 12) -> dict:
    """An evaluation summary (cgrpo.eval.summary's keys) of ``n`` made-up images."""
    rng = np.random.default_rng(seed)
    per = {k: [round(float(v), 6) for v in rng.normal(m, 0.05, n)] for k, m in means.items()}
    return {
        "overall": {k: float(np.mean(v)) for k, v in per.items()},
        "overall_std": {k: float(np.std(v)) for k, v in per.items()},
        "pairs": n,
        "images": n,
        "images_per_pair": 1,
        "per_image": per,
    }


def write_train_run(path: Path, gain: float = 0.02, pair=("identity", "prompt")) -> dict:
    """A ``cgrpo train`` folder: config.yaml, eval.json (base + trained), metrics.csv with 3
    steps and a held-out evaluation at step 2; returns what eval.json holds."""
    path.mkdir(parents=True)
    rewards = {k: {"kind": v, "weight": 1.0} for k, v in REWARDS.items()}
    cfg = {"rewards": rewards, "method": {"pair": list(pair)}, "run": {"steps": 3}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    trained = {k: m + gain for k, m in BASE.items()}
    ev = {"base": _summary(BASE, 0), "trained": _summary(trained, 1), "steps": 3}
    (path / "eval.json").write_text(json.dumps(ev))
    keys = ["step", *(f"reward/{k}/{s}" for k in REWARDS for s in ("mean", "std"))]
    keys += [
        "share/synergy",
        "share/conflict",
        "share/joint_failure",
        *(f"eval/{k}" for k in REWARDS),
    ]
    with (path / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        for step in (1, 2, 3):
            row = {"step": step, "share/synergy": 0.3, "share/conflict": 0.1 * step}
            row |= {f"reward/{k}/mean": BASE[k] + 0.01 * step for k in REWARDS}
            if step == 2:
                row |= {f"eval/{k}": BASE[k] + gain / 2 for k in REWARDS}
            w.writerow(row)
    return ev


def write_eval_folder(path: Path, x: str = "identity", y: str = "prompt") -> dict:
    """A ``cgrpo eval`` folder: metrics.json with its base; returns what it holds."""
    path.mkdir(parents=True)
    names = {x: 0.4, y: 0.6, "colour": 0.2}
    m = {"protocol": "embedded", "columns": {k: k for k in names}, "identity_column": x}
    m |= {"prompt_column": y, **_summary({k: v + 0.03 for k, v in names.items()}, 2)}
    m["base"] = _summary(names, 3)
    (path / "metrics.json").write_text(json.dumps(m))
    return m


def test_load_train_run(tmp_path: Path) -> None:
    ev = write_train_run(tmp_path / "run")
    r = load_run(tmp_path / "run")
    assert r.trained == ev["trained"]["overall"] and r.base == ev["base"]["overall"]
    assert set(r.trained) == set(REWARDS) and r.steps == 3 and r.axes == ("identity", "prompt")
    assert [c[0] for c in r.curve] == [0, 2]  # base, then every run.eval_every steps
    assert r.curve[0][1] == r.base
    # the held-out curve comes from the eval/<reward> rows, every reward
    assert r.curve[1][1] == pytest.approx({k: BASE[k] + 0.01 for k in REWARDS})
    assert [c[0] for c in r.conflict] == [1, 2, 3]
    assert all(0 <= c[1] <= 1 for c in r.conflict)


def test_paired_se_matches_numpy(tmp_path: Path) -> None:
    ev = write_train_run(tmp_path / "run")
    r = load_run(tmp_path / "run")
    table = compare_table([r])
    for k in REWARDS:
        d = np.array(ev["trained"]["per_image"][k]) - np.array(ev["base"]["per_image"][k])
        se = d.std(ddof=1) / np.sqrt(d.size)
        assert r.paired[k] == pytest.approx((d.mean(), se))
        change = r.trained[k] - r.base[k]
        assert f"{r.trained[k]:.4f} ({change:+.4f} ± {se:.4f})" in table


def test_axes_from_config_and_eval_folder(tmp_path: Path) -> None:
    write_train_run(tmp_path / "a", pair=("colour", "prompt"))
    assert load_run(tmp_path / "a").axes == ("colour", "prompt")
    write_train_run(tmp_path / "b")
    (tmp_path / "b" / "config.yaml").unlink()  # no config: the default pair
    assert load_run(tmp_path / "b").axes == ("identity", "prompt")
    m = write_eval_folder(tmp_path / "ev", "dino", "hps")
    r = load_run(tmp_path / "ev")
    assert r.axes == ("dino", "hps") and r.trained == m["overall"]
    assert r.base == m["base"]["overall"] and r.curve == [] and r.steps is None
    d = np.array(m["per_image"]["hps"]) - np.array(m["base"]["per_image"]["hps"])
    assert r.paired["hps"] == pytest.approx((d.mean(), d.std(ddof=1) / np.sqrt(d.size)))


def test_compare_command_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, ev = tmp_path / "run", tmp_path / "ev"
    write_train_run(run)
    m = write_eval_folder(ev)
    out = tmp_path / "cmp"
    table = compare_command([run, ev], out)
    head = table.splitlines()[0]
    assert all(f" {k} |" in head for k in REWARDS)  # every reward the runs share is tabled
    change = m["overall"]["identity"] - m["base"]["overall"]["identity"]
    assert f"{change:+.4f}" in table and str(ev) in table and str(run) in table
    assert table.splitlines()[2].startswith("| base | ")
    assert (out / "compare.png").stat().st_size > 1000
    assert "compare.png" in (out / "compare.md").read_text()
    assert main(["compare", str(run), str(ev), "--out", str(out)]) == 0
    assert "colour" in capsys.readouterr().out
    # a reward only one run has is not a column; an unfinished run is marked
    extra = load_run(run, name="extra")
    extra.trained = {**extra.trained, "sharpness": 1.0}
    assert "sharpness" not in compare_table([load_run(run), extra])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "eval.json").write_text(json.dumps({"base": _summary(BASE, 0)}))
    assert "| half | (unfinished) |" in compare_table([load_run(run), load_run(tmp_path / "half")])


def test_compare_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="neither eval.json"):
        load_run(tmp_path)
    assert main(["compare", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    bad = tmp_path / "bad"
    write_train_run(bad)
    for text in ("{not json", '{"trained": {"identity": 0.5}}', "[1, 2]"):
        (bad / "eval.json").write_text(text)
        with pytest.raises(ValueError, match="eval.json is malformed.*should hold") as e:
            load_run(bad)
        assert str(bad) in str(e.value)
    assert main(["compare", str(bad)]) == 2
    assert "eval.json is malformed" in capsys.readouterr().err
    ev = json.loads(json.dumps(write_eval_folder(tmp_path / "short")))
    ev["per_image"]["identity"] = ev["per_image"]["identity"][:3]  # not the base's images
    (tmp_path / "short" / "metrics.json").write_text(json.dumps(ev))
    with pytest.raises(ValueError, match="metrics.json is malformed.*same images"):
        load_run(tmp_path / "short")
    write_eval_folder(tmp_path / "a")
    write_eval_folder(tmp_path / "b", "dino", "hps")
    with pytest.raises(ValueError, match="different things"):
        compare_command([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_gap_to_the_truth_is_read_and_tabled(tmp_path: Path) -> None:
    """eval.json's ground-truth scores give each reward's share of the gap closed."""
    from cgrpo.eval.summary import gap_closed

    ev = write_train_run(tmp_path / "run")
    ev["truth"] = _summary({k: m + 0.2 for k, m in BASE.items()}, 2)
    (tmp_path / "run" / "eval.json").write_text(json.dumps(ev))
    r = load_run(tmp_path / "run")
    assert r.gap == gap_closed(ev["trained"], ev["base"], ev["truth"]) and set(r.gap) == set(BASE)
    table = compare_table([r])
    g, se = r.gap["colour"]
    assert f"gap {100 * g:+.1f} ± {100 * se:.1f} %" in table
    assert (
        "gap"
        not in compare_table([load_run(write_train_run(tmp_path / "b") and tmp_path / "b")]).split(
            "\n\n"
        )[0]
    )
