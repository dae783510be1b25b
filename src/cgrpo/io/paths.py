"""Checks of an output path before a command spends compute on it: a folder it will
create (a run folder, an evaluation folder) or a file it will write (a grid, a LoRA).

Each check creates nothing and raises one :class:`OutputPathError` (a ``ValueError``)
naming the setting, the path and the fix: a folder that is a file, a path under a file,
a name longer than the file system allows, or a place this user cannot write.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutputPathError", "check_output_dir", "check_output_file"]


class OutputPathError(ValueError):
    """An output path the command cannot create or write."""


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a path too long to look up does not (its length is
    reported by :func:`_check_chain`)."""
    try:
        return path.exists()
    except OSError:
        return False


def _limits(existing: Path) -> tuple[int, int]:
    """(longest file name, longest path) of the file system holding ``existing``."""
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # (not POSIX: the common limits)
        return 255, 4096


def _check_chain(path: Path, key: str) -> None:
    """Every existing part of ``path`` is a folder, the rest can be created under the
    nearest existing one (lengths and write permission)."""
    path = Path(os.path.abspath(path))
    existing = path
    while not _exists(existing):
        existing = existing.parent
    if not existing.is_dir() and existing != path:
        raise OutputPathError(
            f"{key}: '{path}' is under '{existing}', which is a file, not a folder; choose a "
            "path under a folder"
        )
    name_max, path_max = _limits(existing if existing.is_dir() else existing.parent)
    long = next((p for p in path.parts if len(os.fsencode(p)) > name_max), None)
    if long is not None:
        raise OutputPathError(
            f"{key}: the name '{long[:40]}...' ({len(os.fsencode(long))} bytes) is longer than "
            f"this file system allows ({name_max}); choose a shorter path"
        )
    if len(os.fsencode(str(path))) >= path_max:
        raise OutputPathError(
            f"{key}: the path is {len(os.fsencode(str(path)))} bytes, longer than this file "
            f"system allows ({path_max}); choose a shorter path"
        )
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{key}: cannot write under '{folder}' (permission denied); choose a folder you "
            "can write to"
        )


def check_output_dir(path: str | os.PathLike[str], key: str) -> Path:
    """``path`` as a folder the command may create or write into (it may exist);
    ``key`` names the setting in the message (``run.out_dir``, ``--out``)."""
    p = Path(path)
    if _exists(p) and not p.is_dir():
        raise OutputPathError(
            f"{key}: '{p}' is a file, not a folder; choose a folder path (or move the file)"
        )
    _check_chain(p, key)
    return p


def check_output_file(
    path: str | os.PathLike[str], key: str, *, suffixes: tuple[str, ...] = ()
) -> Path:
    """``path`` as a file the command may write (replacing one that is there); a folder
    there, or a missing suffix of ``suffixes`` (e.g. ``(".png",)``), is refused."""
    p = Path(path)
    if _exists(p) and p.is_dir():
        raise OutputPathError(
            f"{key}: '{p}' is a folder; give a file path"
            + (f" ending in {' or '.join(suffixes)}" if suffixes else "")
            + (f", e.g. '{p / ('out' + suffixes[0])}'" if suffixes else "")
        )
    if suffixes and p.suffix.lower() not in suffixes:
        raise OutputPathError(
            f"{key}: '{p}' must end in {' or '.join(suffixes)} (the file format is chosen by it)"
        )
    _check_chain(p, key)
    return p
