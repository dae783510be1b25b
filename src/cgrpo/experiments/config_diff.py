"""Config diffing: the settings where a saved run config differs from the one a command
would train, so a run of other settings is never skipped, resumed, reported or recorded
as this command's."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["config_changes", "config_of_text", "saved_config"]


def saved_config(path: Path):
    """The config saved at ``path`` (a run's ``config.yaml``, the base's ``model.yaml``)."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import TrainConfig

    return load_config(TrainConfig, path)


def config_of_text(text: str):
    """The config a saved ``config.yaml``'s ``text`` holds (one kept in a record)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        return saved_config(path)


def config_changes(old, new, ignore: tuple[str, ...] = ("run.out_dir",)) -> list[str]:
    """The keys (``section.key``) where config ``old`` differs from ``new``, leaving out
    ``ignore`` (a key, or a section ending in ``.``; ``run.out_dir`` by default: where the
    folder is, moved or a record's)."""
    from cgrpo.config.core import config_to_dict

    old, new = config_to_dict(old), config_to_dict(new)
    return sorted(
        f"{sec}.{k}"
        for sec in set(old) | set(new)
        for k in set(old.get(sec) or {}) | set(new.get(sec) or {})
        if (old.get(sec) or {}).get(k) != (new.get(sec) or {}).get(k)
        and f"{sec}." not in ignore
        and f"{sec}.{k}" not in ignore
    )
