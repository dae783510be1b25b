"""Run records: the listed files of a run in one compressed file, written whole, unpacked
byte for byte into a new folder, never over a run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cgrpo.experiments.records import (
    FORMAT,
    read_record,
    restore_record,
    save_record,
    write_record,
)

FILES = ["config.yaml", "eval/source.json", "eval/metrics.json"]


def _run(root: Path) -> Path:
    (root / "eval").mkdir(parents=True)
    (root / "config.yaml").write_text("a: 1\n")
    (root / "eval" / "metrics.json").write_text('{"x": 1}')
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "model.safetensors").write_bytes(b"\0" * 64)
    return root


def test_save_keeps_only_the_listed_files_that_exist(tmp_path: Path) -> None:
    run, rec = _run(tmp_path / "run"), tmp_path / "rec.json.gz"
    assert save_record(run, rec, FILES) == ["config.yaml", "eval/metrics.json"]
    assert read_record(rec) == {"config.yaml": "a: 1\n", "eval/metrics.json": '{"x": 1}'}
    with gzip.open(rec, "rt") as f:  # plain gzip'd JSON, readable without the project
        assert json.load(f)["format"] == FORMAT
    (run / "config.yaml").write_text("a: 2\n")  # a later save replaces the older one
    save_record(run, rec, FILES)
    assert read_record(rec)["config.yaml"] == "a: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json.gz", "run"]  # no temp left


def test_a_record_is_replaced_whole_and_left_alone_when_unchanged(tmp_path: Path) -> None:
    run, rec = _run(tmp_path / "run"), tmp_path / "rec.json.gz"
    (run / "eval" / "source.json").write_text("{}")
    assert save_record(run, rec, FILES) == FILES
    (run / "eval" / "source.json").unlink()  # the newer run lacks a file the older one had
    (run / "config.yaml").write_text("a: 3\n")
    assert save_record(run, rec, FILES) == ["config.yaml", "eval/metrics.json"]
    assert "eval/source.json" not in read_record(rec)  # not a mix of the two runs
    before = rec.stat().st_mtime_ns
    save_record(run, rec, FILES)  # unchanged: not rewritten
    assert rec.stat().st_mtime_ns == before
    # the same files give the same bytes (no time stamp): a record rewritten is no change
    again = tmp_path / "again.json.gz"
    save_record(run, again, FILES)
    assert again.read_bytes() == rec.read_bytes()
    assert save_record(tmp_path / "nothing", tmp_path / "none.json.gz", FILES) == []
    assert not (tmp_path / "none.json.gz").exists()


def test_a_record_without_its_done_file_is_not_restored(tmp_path: Path) -> None:
    run, rec = _run(tmp_path / "run"), tmp_path / "rec.json.gz"
    (run / "eval" / "metrics.json").unlink()  # "done" is the last file listed
    assert save_record(run, rec, FILES) == ["config.yaml"]
    assert restore_record(rec, tmp_path / "new", FILES) == []
    assert not (tmp_path / "new").exists()


def test_restore_fills_a_new_folder_and_never_touches_an_existing_one(tmp_path: Path) -> None:
    rec = tmp_path / "rec.json.gz"
    save_record(_run(tmp_path / "run"), rec, FILES)
    new = tmp_path / "other" / "run"
    (tmp_path / "other" / ".run.restoring").mkdir(parents=True)  # a killed restore's leftover
    assert restore_record(rec, new, FILES) == ["config.yaml", "eval/metrics.json"]
    assert (new / "eval" / "metrics.json").read_text() == '{"x": 1}'
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["run"]
    (new / "config.yaml").write_text("mine\n")  # a folder that exists is left as it is
    assert restore_record(rec, new, FILES) == []
    assert (new / "config.yaml").read_text() == "mine\n"
    # no record: nothing is created
    assert restore_record(tmp_path / "none.json.gz", tmp_path / "x", FILES) == []
    assert not (tmp_path / "x").exists()


def test_files_come_back_byte_for_byte(tmp_path: Path) -> None:
    """Line ends, non-ASCII text and a missing final newline are kept as they were."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    raw = {"config.yaml": b"a: 1\r\nb: \xc2\xb1 2", "eval/metrics.json": b'{"x": 0.123456}\n'}
    for name, data in raw.items():
        (run / name).write_bytes(data)
    save_record(run, tmp_path / "rec.json.gz", FILES)
    restore_record(tmp_path / "rec.json.gz", tmp_path / "back", FILES)
    assert {n: (tmp_path / "back" / n).read_bytes() for n in raw} == raw


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.json.gz"
    with gzip.open(other, "wt") as f:
        json.dump({"files": {}}, f)
    with pytest.raises(ValueError, match="not a run record"):
        read_record(other)
    write_record(tmp_path / "sub" / "r.json.gz", {"a": "1"})  # parents are made
    assert read_record(tmp_path / "sub" / "r.json.gz") == {"a": "1"}
