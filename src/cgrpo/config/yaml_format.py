"""YAML as configs read and write it: PyYAML's safe schema with YAML 1.2 floats (``1e-4``
is a float) and no timestamps (dates stay text); the dumper quotes what the loader would
read back as another type.

Aliases (``*name``) are checked when a document is composed, before anything is built
from it: a "billion laughs" file of nested aliases, whose expansion would add more than
:data:`MAX_ALIAS_NODES` nodes, and an alias inside its own anchor (a value that contains
itself) are refused in one line. A config file must be UTF-8; its error names the byte."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cgrpo.config.errors import ConfigError, not_utf8, quoted, shorten

__all__ = ["MAX_ALIAS_NODES", "AliasError", "Dumper", "Loader", "read_yaml", "yaml_scalar"]

#: The most nodes the aliases of one YAML document may add when expanded (a config with
#: aliases adds a few dozen; a 9-level "billion laughs" file adds 10^9).
MAX_ALIAS_NODES = 100_000


class AliasError(ConfigError):
    """A YAML document whose aliases expand too far or contain themselves (the message
    says how; the caller names the file or the override)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def check_aliases(root: yaml.Node) -> None:
    """Count the nodes of composed document ``root`` as if every alias were written out
    (linear in the nodes written, whatever the expansion); :class:`AliasError` when that
    adds more than :data:`MAX_ALIAS_NODES` or an alias sits inside its own anchor."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            continue
        if key in sizes:
            continue
        if key in open_:
            mark = node.start_mark
            raise AliasError(
                f"has an alias inside its own anchor (line {mark.line + 1}): a value that "
                "contains itself; write the value out"
            )
        open_.add(key)
        stack.append((node, True))
        stack += [(c, False) for c in _children(node) if id(c) not in sizes]
    added = sizes[id(root)] - len(sizes)
    if added > MAX_ALIAS_NODES:
        raise AliasError(
            f"has YAML aliases (*name) that expand to {added:,} more nodes, over the "
            f"{MAX_ALIAS_NODES:,} allowed (nested aliases, a 'billion laughs'?): write the "
            "values out or use fewer aliases"
        )


class Loader(yaml.SafeLoader):
    """Reads YAML 1.2 floats (``1e-4``); dates stay text; aliases checked
    (:func:`check_aliases`)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        check_aliases(node)
        return node


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


def yaml_scalar(raw: str, *, where: str = "override value") -> Any:
    """``raw`` read as YAML (``Loader``), else the text itself; :class:`ConfigError`
    naming ``where`` when its aliases expand too far or it nests too deep."""
    try:
        return yaml.load(raw, Loader=Loader)
    except yaml.YAMLError:
        return raw
    except AliasError as exc:
        raise ConfigError(f"{where} {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where} {quoted(raw)} nests too deep to read") from None


def _problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint in one line: the problem and where (its caret drawing left out)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark, context = exc.problem_mark, exc.context_mark
        text = exc.problem + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
        if exc.context:
            at = f" from line {context.line + 1}, column {context.column + 1}" if context else ""
            text += f" ({exc.context}{at})"
        return shorten(text)
    return shorten(" ".join(str(exc).split()))


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of YAML file ``path`` (``{}`` when empty); one
    :class:`ConfigError` line naming the file for anything else."""
    p = Path(path)
    name = shorten(str(p))
    try:
        if not p.is_file():
            what = "is a directory, not a file" if p.is_dir() else "not found"
            raise ConfigError(f"config file {what}: '{name}'")
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file '{name}' cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{name}' {not_utf8(data, exc)}: save it as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=Loader)
    except AliasError as exc:
        raise ConfigError(f"config file '{name}' {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file '{name}' nests too deep to read") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{name}' is not valid YAML: {_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(
            f"config file '{name}' must contain a mapping of keys at the top level, "
            f"got {type(loaded).__name__}"
        )
    return dict(loaded)
