"""Run records: saved files, copied back whole into a new folder, never over a run."""

from __future__ import annotations

from pathlib import Path

from cgrpo.experiments.records import restore_record, save_record

FILES = ["config.yaml", "eval/source.json", "eval/metrics.json"]


def _run(root: Path) -> Path:
    (root / "eval").mkdir(parents=True)
    (root / "config.yaml").write_text("a: 1\n")
    (root / "eval" / "metrics.json").write_text('{"x": 1}')
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "model.safetensors").write_bytes(b"\0" * 64)
    return root


def test_save_keeps_only_the_listed_files_that_exist(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    assert save_record(run, tmp_path / "rec", FILES) == ["config.yaml", "eval/metrics.json"]
    kept = sorted(p.relative_to(tmp_path / "rec").as_posix() for p in (tmp_path / "rec").rglob("*"))
    assert kept == ["config.yaml", "eval", "eval/metrics.json"]  # no checkpoint, no temp file
    (run / "config.yaml").write_text("a: 2\n")  # a later save replaces the older copy
    save_record(run, tmp_path / "rec", FILES)
    assert (tmp_path / "rec" / "config.yaml").read_text() == "a: 2\n"


def test_a_record_is_replaced_whole_and_left_alone_when_unchanged(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    (run / "eval" / "source.json").write_text("{}")
    rec = tmp_path / "rec"
    assert save_record(run, rec, FILES) == FILES
    (run / "eval" / "source.json").unlink()  # the newer run lacks a file the older one had
    (run / "config.yaml").write_text("a: 3\n")
    assert save_record(run, rec, FILES) == ["config.yaml", "eval/metrics.json"]
    assert not (rec / "eval" / "source.json").exists()  # not a mix of the two runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec", "run"]  # no temp left
    before = (rec / "config.yaml").stat().st_mtime_ns
    save_record(run, rec, FILES)  # unchanged: not rewritten
    assert (rec / "config.yaml").stat().st_mtime_ns == before


def test_a_record_without_its_done_file_is_not_restored(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    (run / "eval" / "metrics.json").unlink()  # "done" is the last file listed
    assert save_record(run, tmp_path / "rec", FILES) == ["config.yaml"]
    assert restore_record(tmp_path / "rec", tmp_path / "new", FILES) == []
    assert not (tmp_path / "new").exists()


def test_restore_fills_a_new_folder_and_never_touches_an_existing_one(tmp_path: Path) -> None:
    save_record(_run(tmp_path / "run"), tmp_path / "rec", FILES)
    new = tmp_path / "other" / "run"
    (tmp_path / "other" / ".run.restoring").mkdir(parents=True)  # a killed restore's leftover
    assert restore_record(tmp_path / "rec", new, FILES) == ["config.yaml", "eval/metrics.json"]
    assert (new / "eval" / "metrics.json").read_text() == '{"x": 1}'
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["run"]
    (new / "config.yaml").write_text("mine\n")  # a folder that exists is left as it is
    assert restore_record(tmp_path / "rec", new, FILES) == []
    assert (new / "config.yaml").read_text() == "mine\n"
    # no record: nothing is created
    assert restore_record(tmp_path / "none", tmp_path / "x", FILES) == []
    assert not (tmp_path / "x").exists()
