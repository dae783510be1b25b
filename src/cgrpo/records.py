"""Run records: the few small files that hold a finished run's figures, kept apart from its
folder so they outlive the machine it ran on.

A long experiment (arms x seeds x hours) outlasts one machine, and a run folder is mostly
checkpoints and images (megabytes) that its report never reads. A record is the listed
files only (config, logged curve, evaluation summaries), copied into a folder that can be
committed; copied back into an empty run folder on a new machine, it makes the sweep see the
run as finished, so only the runs not yet recorded are trained.

Saving copies the files in the order listed, each through a temp file renamed into place:
the last one (the file whose presence means "done") is never there before the others, and
no file is ever half-written. Restoring fills a temp folder renamed into place, and never
touches a run folder that exists.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["save_record", "restore_record"]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)  # (unique per call)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_record(run_dir: Path, record_dir: Path, files: Sequence[str]) -> list[str]:
    """Copy each of ``files`` (paths relative to ``run_dir``) that exists into
    ``record_dir``, replacing older copies; returns the ones copied."""
    copied = []
    for name in files:
        if (run_dir / name).is_file():
            _copy(run_dir / name, record_dir / name)
            copied.append(name)
    return copied


def restore_record(record_dir: Path, run_dir: Path, files: Sequence[str]) -> list[str]:
    """Copy the recorded ``files`` back into ``run_dir``, only when ``run_dir`` does not
    exist yet (a run started on this machine is never mixed with a record); returns the
    ones copied (none when there is no record or the folder exists). The folder is filled
    under a temp name and renamed into place, so it appears whole or not at all."""
    if run_dir.exists() or not record_dir.is_dir():
        return []
    tmp = run_dir.with_name(f".{run_dir.name}.restoring")
    shutil.rmtree(tmp, ignore_errors=True)  # (left by a restore that was killed)
    copied = [n for n in files if (record_dir / n).is_file()]
    for name in copied:
        _copy(record_dir / name, tmp / name)
    if copied:
        os.replace(tmp, run_dir)
    return copied
