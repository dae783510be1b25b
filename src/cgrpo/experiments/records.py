"""Run records: one compressed file per finished run, holding the few small files of its
figures, kept apart from its folder so they outlive the machine it ran on.

A long experiment (arms x seeds x hours) outlasts one machine, and a run folder is mostly
checkpoints and images (megabytes) that its report never reads. A record is the listed
files only (config, logged curve, evaluation summaries), their text byte for byte in one
gzip'd JSON file (``{"format": ..., "files": {name: text}}``, :data:`SUFFIX`) that can be
committed; unpacked into an empty run folder on a new machine, it makes the sweep see the
run as finished, so only the runs not yet recorded are trained.

A record is written whole with :func:`cgrpo.io.atomic.atomic_write` (a temp file moved into
place), so it is never half-written and never mixes files of two saves (a file the newer run
lacks is not left behind); the same files give the same bytes (no time stamp in the gzip
header), and an unchanged record is not rewritten. The last file listed is the one whose
presence means "done": a record without it is never restored. Restoring fills a temp folder
renamed into place, and never touches a run folder that exists.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from cgrpo.io.atomic import atomic_write

__all__ = ["FORMAT", "SUFFIX", "read_record", "restore_record", "save_record", "write_record"]

SUFFIX = ".json.gz"  #: a record's file name ends so: ``<arm>/seed0.json.gz``
FORMAT = "cgrpo.run_record/1"  #: the record's ``format`` field


def read_record(path: Path) -> dict[str, str]:
    """The files the record at ``path`` holds: name (relative to the run folder) -> text;
    empty when there is no record. ``ValueError`` for a file of another format."""
    if not path.is_file():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a run record ({FORMAT})")
    return data["files"]


def write_record(path: Path, files: dict[str, str]) -> None:
    """Write the record ``files`` (name -> text) to ``path`` atomically, the same bytes for
    the same files."""
    text = json.dumps({"format": FORMAT, "files": files}, ensure_ascii=False, indent=1)

    def write(tmp: Path) -> None:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        ):
            gz.write(text.encode("utf-8"))

    atomic_write(path, write)


def save_record(run_dir: Path, record: Path, files: Sequence[str]) -> list[str]:
    """Record each of ``files`` (paths relative to ``run_dir``) that exists in the file
    ``record``, replacing the whole older record (unchanged: left as it is); returns the
    ones in the record (none: no record is written)."""
    kept = {n: (run_dir / n).read_bytes().decode("utf-8") for n in files if (run_dir / n).is_file()}
    if kept and read_record(record) != kept:
        write_record(record, kept)
    return list(kept)


def restore_record(record: Path, run_dir: Path, files: Sequence[str]) -> list[str]:
    """Unpack the recorded ``files`` into ``run_dir``, only when ``run_dir`` does not exist
    yet (a run started on this machine is never mixed with a record); returns the ones
    written (none when there is no record, it lacks its last file, the "done" one, or the
    folder exists). The folder is filled under a temp name and renamed into place, so it
    appears whole or not at all, each file byte for byte as it was recorded."""
    if run_dir.exists():
        return []
    kept = read_record(record)
    if files[-1] not in kept:  # (no record, or not done)
        return []
    tmp = run_dir.with_name(f".{run_dir.name}.restoring")
    shutil.rmtree(tmp, ignore_errors=True)  # (left by a restore that was killed)
    names = [n for n in files if n in kept]
    for name in names:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(kept[name].encode("utf-8"))
    os.replace(tmp, run_dir)  # (names holds files[-1] at least)
    return names
