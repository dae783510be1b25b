"""Run records: the few small files that hold a finished run's figures, kept apart from its
folder so they outlive the machine it ran on.

A long experiment (arms x seeds x hours) outlasts one machine, and a run folder is mostly
checkpoints and images (megabytes) that its report never reads. A record is the listed
files only (config, logged curve, evaluation summaries), copied into a folder that can be
committed; copied back into an empty run folder on a new machine, it makes the sweep see the
run as finished, so only the runs not yet recorded are trained.

A record is written whole: its files are copied into a temp folder that then takes the
record's place, so no file is half-written and a record never mixes files of two saves (a
file the newer run lacks is not left behind). The last file listed is the one whose presence
means "done": a record without it is never restored. Restoring fills a temp folder renamed
into place, and never touches a run folder that exists.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["save_record", "restore_record"]


def _fill(src: Path, dst: Path, names: Sequence[str]) -> None:
    """Copy ``names`` (paths relative to ``src``) into ``dst``, a temp folder that is then
    renamed into place whole (so no file needs its own temp name)."""
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dst / name)


def _same(a: Path, b: Path, names: Sequence[str]) -> bool:
    """Whether folders ``a`` and ``b`` hold the same ``names``, byte for byte."""
    for n in names:
        if (a / n).is_file() != (b / n).is_file():
            return False
        if (a / n).is_file() and (a / n).read_bytes() != (b / n).read_bytes():
            return False
    return True


def save_record(run_dir: Path, record_dir: Path, files: Sequence[str]) -> list[str]:
    """Copy each of ``files`` (paths relative to ``run_dir``) that exists into
    ``record_dir``, replacing the whole older record (unchanged: left as it is); returns
    the ones in the record. The files go into a temp folder beside ``record_dir`` that then
    takes its place: the older record is renamed aside first (``.<name>.old.*``, where a
    kill between the two renames leaves it) and removed after."""
    copied = [n for n in files if (run_dir / n).is_file()]
    if not copied or _same(run_dir, record_dir, files):
        return copied
    record_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{record_dir.name}.saving.", dir=record_dir.parent))
    old = None
    try:
        _fill(run_dir, tmp, copied)
        if record_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{record_dir.name}.old.", dir=record_dir.parent))
            os.replace(record_dir, old / "record")
        os.replace(tmp, record_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return copied


def restore_record(record_dir: Path, run_dir: Path, files: Sequence[str]) -> list[str]:
    """Copy the recorded ``files`` back into ``run_dir``, only when ``run_dir`` does not
    exist yet (a run started on this machine is never mixed with a record); returns the
    ones copied (none when there is no record, it lacks its last file, the "done" one, or
    the folder exists). The folder is filled under a temp name and renamed into place, so
    it appears whole or not at all."""
    if run_dir.exists() or not (record_dir / files[-1]).is_file():  # (no record, or not done)
        return []
    tmp = run_dir.with_name(f".{run_dir.name}.restoring")
    shutil.rmtree(tmp, ignore_errors=True)  # (left by a restore that was killed)
    copied = [n for n in files if (record_dir / n).is_file()]
    _fill(record_dir, tmp, copied)
    os.replace(tmp, run_dir)  # (copied holds files[-1] at least)
    return copied
