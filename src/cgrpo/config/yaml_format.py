"""YAML as configs read and write it: PyYAML's safe schema with YAML 1.2 floats (``1e-4``
is a float) and no timestamps (dates stay text); the dumper quotes what the loader would
read back as another type."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cgrpo.config.errors import ConfigError

__all__ = ["Dumper", "Loader", "read_yaml", "yaml_scalar"]


class Loader(yaml.SafeLoader):
    """Reads YAML 1.2 floats (``1e-4``); dates stay text."""


class Dumper(yaml.SafeDumper):
    """Quotes the text that ``Loader`` or PyYAML would read as a float or a date."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

for _cls in (Loader, Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def yaml_scalar(raw: str) -> Any:
    try:
        return yaml.load(raw, Loader=Loader)
    except yaml.YAMLError:
        return raw


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "not found"
        raise ConfigError(f"config file {what}: '{p}'")
    try:
        loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{p}' is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(
            f"config file '{p}' must contain a mapping of keys at the top level, "
            f"got {type(loaded).__name__}"
        )
    return dict(loaded)
