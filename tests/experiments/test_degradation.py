"""The competitive-degradation experiment's definition: its arms, each run's config and
folder, the order runs are trained in, its records unpacked into a sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgrpo.experiments.degradation import (
    ARMS,
    BASE_RECORD,
    PRIMARY,
    RUN_RECORD,
    Settings,
    run_config,
    schedule,
)
from cgrpo.experiments.degradation_records import record_of, restore_records
from cgrpo.experiments.records import read_record, write_record


def test_schedule_trains_the_default_arm_first_and_every_arm_a_seed_before_the_next() -> None:
    order = schedule([*PRIMARY, "naive_2_1"], [0, 1])
    assert order[:2] == [("sars_tdw", 0), ("naive_1_1", 0)]
    assert sorted(a for a, k in order[:6]) == sorted(PRIMARY) and order[5][0] == "naive_0.5_0.5"
    assert [k for _, k in order[:12]] == [0] * 6 + [1] * 6
    assert order[12:] == [("naive_2_1", 0), ("naive_2_1", 1)]


def test_a_run_config_is_the_arm_on_the_sweeps_budget(tmp_path: Path) -> None:
    s = Settings(out=tmp_path, steps=7, eval_every=3, overrides=("optim.lr=3e-5",))
    assert s.run_dir("sars", 2) == tmp_path / "sars" / "seed2"
    cfg = run_config(s, "sars", 2)
    assert (cfg.run.steps, cfg.run.seed, cfg.run.eval_every) == (7, 2, 3)
    assert cfg.run.out_dir == str(tmp_path / "sars" / "seed2") and cfg.optim.lr == 3e-5
    assert run_config(s, "sars", 2, run_dir=tmp_path / "b").run.out_dir == str(tmp_path / "b")
    assert set(ARMS) == {*PRIMARY, "naive_2_1"}
    with pytest.raises(SystemExit, match="drop the run.time_budget"):
        run_config(Settings(out=tmp_path, overrides=("run.time_budget=5",)), "sars", 0)


def test_records_are_unpacked_into_an_empty_sweep(tmp_path: Path, capsys) -> None:
    """Each recorded run of a known arm with its "done" file, and the base, are unpacked;
    a record not done, or of an unknown arm, is not."""
    rec = tmp_path / "rec"
    files = {n: f"{n}\n" for n in RUN_RECORD}
    write_record(record_of(rec, "sars_tdw/seed0"), files)
    write_record(record_of(rec, "naive_1_1/seed1"), {"config.yaml": "x\n"})  # not done
    write_record(record_of(rec, "mystery/seed0"), files)
    write_record(record_of(rec, "base_eval"), {n: n for n in BASE_RECORD})
    assert record_of(rec, "base_eval") == rec / "base_eval.json.gz"
    out = tmp_path / "out"
    restore_records(Settings(out=out, records=rec))
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert found == sorted(
        ["sars_tdw/seed0/" + n for n in RUN_RECORD] + ["base_eval/" + n for n in BASE_RECORD]
    )
    done = out / "sars_tdw" / "seed0" / "eval_final" / "metrics.json"
    assert done.read_text() == "eval_final/metrics.json\n"
    assert capsys.readouterr().out == f"restored from {rec}: 1 runs, the base\n"
    restore_records(Settings(out=out, records=None))  # no records: nothing to do
    assert read_record(record_of(rec, "sars_tdw/seed0")) == files  # the records are untouched
