"""Config files and overrides that are hostile or broken fail in one line naming the file
(or the override) fast: nested aliases ("billion laughs"), an alias inside itself, bytes
that are not UTF-8, deep nesting, invalid YAML; and a 1 MB value is quoted cut short."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cgrpo.config.core import load_config, option
from cgrpo.config.errors import ConfigError, quoted, shorten
from cgrpo.config.registry import Registry
from cgrpo.config.yaml_format import MAX_ALIAS_NODES, read_yaml


@dataclass
class Run:
    steps: int = option(3, "steps")
    name: str = option("run", "a name")
    tags: list[str] = option([], "tags")
    extra: dict[str, list[str]] = option({}, "named lists")


@dataclass
class Cfg:
    run: Run = option(Run(), "the run")


def _laughs(levels: int, width: int = 10) -> str:
    lines = ["lol0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines)


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_billion_laughs_file_is_refused_at_once_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9) + "\nrun: {tags: *l9}\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert time.perf_counter() - t0 < 1.0
    text = _one_line(err)
    assert f"config file '{path}' has YAML aliases" in text
    assert f"over the {MAX_ALIAS_NODES:,} allowed" in text and len(text) < 300


def test_aliases_that_expand_a_little_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("run:\n  tags: &t [a, b]\n  extra: {x: *t, y: *t}\n")
    assert load_config(Cfg, path).run.extra == {"x": ["a", "b"], "y": ["a", "b"]}
    # just under the bound: 10 x 10 x 10 x 10 leaves + lists, reused 9 more times
    path.write_text(_laughs(3) + "\n")
    assert len(read_yaml(path)["lol3"]) == 10


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "self.yaml"
    path.write_text("run:\n  tags: &t [a, *t]\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert f"config file '{path}' has an alias inside its own anchor (line 2)" in _one_line(err)


def test_a_billion_laughs_override_is_refused_naming_the_key() -> None:
    value = "{" + _laughs(9).replace("\n", ", ") + "}"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, None, [f"run.extra={value}"])
    assert time.perf_counter() - t0 < 1.0
    assert _one_line(err).startswith("override 'run.extra' has YAML aliases")


def test_a_config_that_is_not_utf8_names_the_file_and_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert _one_line(err) == (
        f"config file '{path}' is not UTF-8 text: byte 16 (line 2) is 0xe9: save it as UTF-8"
    )


def test_invalid_and_too_deep_yaml_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  tags: [a, b\n  name: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    text = _one_line(err)
    assert text.startswith(f"config file '{path}' is not valid YAML: ")
    assert "line 3" in text and "^" not in text
    path.write_text("run: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert _one_line(err) == f"config file '{path}' nests too deep to read"


BIG = "x" * 1_000_000


@pytest.mark.parametrize(
    "override",
    [f"{BIG}=1", f"run.{BIG}=1", f"run.steps.{BIG}=1", f"run.steps={BIG}", BIG],
    ids=["key", "nested key", "under a value", "value", "no equals sign"],
)
def test_a_1mb_override_is_quoted_cut_short(override: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, None, [override])
    text = _one_line(err)
    assert len(text) < 600, text[:700]
    assert "xxxxxxxxxx" in text  # the start is still shown


def test_a_1mb_kind_name_is_quoted_cut_short() -> None:
    class One:
        pass

    reg: Registry[object] = Registry("thing")
    reg.register("one")(One)
    text = str(reg.unknown(BIG))
    assert len(text) < 400 and "... (1000000 chars)" in text


def test_quoted_and_shorten() -> None:
    assert quoted("short") == "'short'" and shorten("short") == "short"
    assert quoted("a\nb") == "'a\\nb'"  # one line
    assert quoted("y" * 201) == repr("y" * 200) + "... (201 chars)"
    assert shorten("y" * 201) == "y" * 200 + "... (201 chars)"
    assert quoted(list(range(1000))).endswith(f"... ({len(repr(list(range(1000))))} chars)")
