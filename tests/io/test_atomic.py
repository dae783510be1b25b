"""Tests for :mod:`cgrpo.io.atomic`: a write either replaces the file whole or leaves the
old one, with no temp file left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cgrpo.io.atomic import atomic_write


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_atomic_write_replaces_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new contents"))
    assert target.read_bytes() == b"new contents"
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old contents")
    seen: list[Path] = []

    def partial_then_crash(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp != target
        with open(tmp, "wb") as fh:
            fh.write(b"half-writ")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, partial_then_crash)
    assert target.read_bytes() == b"old contents"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_write_failure_in_replace_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_creates_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.txt"
    atomic_write(target, lambda tmp: tmp.write_text("hi"))
    assert target.read_text() == "hi"


def test_atomic_write_gives_umask_permissions(tmp_path: Path) -> None:
    """A file written through a 0600-creating writer ends with the usual 0644-style mode."""
    import stat

    def private_writer(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    old = os.umask(0o022)
    try:
        out = atomic_write(tmp_path / "f.bin", private_writer)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
