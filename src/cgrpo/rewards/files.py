"""Locate a model file: a path the user gave, or the copy inside an installed package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def find_model_file(
    what: str,
    filename: str,
    given: str | Path | None,
    *,
    package: str,
    package_subdir: str,
    howto: str,
) -> Path:
    """``given`` (the file, or a folder holding it directly or under ``package_subdir``),
    else ``<package>/<package_subdir>/<filename>`` of the installed ``package``, found
    without importing it.

    Raises ``FileNotFoundError`` with one line: where it looked, the file expected, ``howto``.
    """
    if given is not None:
        p = Path(given)
        cands = [p] if p.is_file() else [p / filename, p / package_subdir / filename]
        for c in cands:
            if c.is_file():
                return c
        raise FileNotFoundError(
            f"{what}: no model file at {str(p)!r} (expected {filename} or a folder holding "
            f"it); get it with: {howto}"
        )
    spec = importlib.util.find_spec(package)
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        c = Path(loc) / package_subdir / filename
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{what}: {filename} not found (no path given and package {package!r} with it not "
        f"installed); get it with: {howto}"
    )
