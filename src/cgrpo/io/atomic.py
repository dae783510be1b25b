"""Atomic file writes: every file the project writes goes into a hidden temp file in the
target's folder, is fsynced, then moved into place with :func:`os.replace`. A crash at any
point leaves either the old file or the new one, never a torn one.

No torch here: the config machinery saves through it without loading torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CheckpointError", "atomic_write", "remove_stale_temps"]


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint file exists but cannot be read safely (corrupt, truncated or unsafe).
    Also a ``ValueError``: a bad input the user fixes, which the CLI prints as one line."""


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename inside it survives a power loss."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write_fn: Callable[[Path], Any]) -> Path:
    """Atomically create or replace ``path`` with what ``write_fn`` writes.

    ``write_fn(tmp_path)`` must write the complete file at ``tmp_path``, a hidden temp file in
    the same directory (``.{name}.tmp-{pid}-{random}``). The temp file is fsynced and then
    moved onto ``path`` with :func:`os.replace`. If anything raises (including
    ``KeyboardInterrupt``) the temp file is removed, the exception propagates and any previous
    file at ``path`` is left untouched. Missing parent directories are created.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write_fn(tmp)
        if not tmp.is_file():
            raise CheckpointError(f"atomic_write: write_fn did not create the file for '{target}'")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create 0600 files
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")


def remove_stale_temps(folder: str | os.PathLike[str], *, recursive: bool = False) -> int:
    """Delete the temp files :func:`atomic_write` left in ``folder`` when its process was
    killed (``kill -9``, power loss: nothing else could remove them): those whose writer's
    process id is not a live process. Returns how many were removed."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.rglob(".*.tmp-*") if recursive else root.glob(".*.tmp-*"):
        m = _TEMP_RE.match(path.name)
        if m is None or not path.is_file() or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this one counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (exists, another user's)
        return True
    return True
