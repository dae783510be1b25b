"""Tests for :mod:`cgrpo.config.core`: defaults, YAML + overrides, type rules, errors, docs,
strategy-family sections and dotted overrides into dict fields."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml

from cgrpo.config.core import config_from_dict, config_to_dict, load_config, option, save_config
from cgrpo.config.docs import (
    config_keys,
    config_markdown_table,
    describe_config,
    undocumented_keys,
)
from cgrpo.config.errors import ConfigError
from cgrpo.config.registry import Registry


@dataclass
class LoraConfig:
    rank: int = option(4, "LoRA rank")
    alpha: float = option(8.0, "LoRA scaling numerator")


@dataclass
class TrainerConfig:
    lr: float = option(1e-4, "AdamW learning rate")
    steps: int = option(100, "optimizer steps", unit="steps")
    warmup: int = option(0, "linear warmup length", unit="steps")
    clip: float | None = option(None, "gradient-norm clip (null disables)")
    sampler: Literal["sde", "ode"] = option("sde", "rollout sampler")
    milestones: list[int] = option([10, 20], "LR decay steps", unit="steps")
    resolution: tuple[int, ...] = option((64, 64), "image size", unit="px")
    lora: LoraConfig = option(LoraConfig(rank=16), "adapter settings")

    def __post_init__(self) -> None:
        if self.warmup > self.steps:
            raise ValueError(f"warmup ({self.warmup}) must not exceed steps ({self.steps})")


@dataclass
class Config:
    name: str = option("run", "run name")
    seed: int = option(0, "global seed")
    deterministic: bool = option(False, "use deterministic kernels")
    out_dir: Path = option(Path("runs"), "output folder")
    reference: LoraConfig | None = option(None, "optional reference adapter")
    trainer: TrainerConfig = option(TrainerConfig(), "optimisation")


# A tiny strategy family (cgrpo.config.registry): a base class holding a Registry, two kinds.
MIXERS = Registry("mixer")


@dataclass(frozen=True)
class Mixer:
    registry: ClassVar[Registry] = MIXERS


@MIXERS.register("plain")
@dataclass(frozen=True)
class PlainMixer(Mixer):
    weight: float = option(1.0, "weight of the sum")
    tag: str = option("", "free text")


@MIXERS.register("bonus")
@dataclass(frozen=True)
class BonusMixer(Mixer):
    gamma: float = option(0.4, "bonus scale", unit="x")
    weight: float = option(2.0, "weight of the sum")
    mode: Literal["a", "b"] = option("a", "bonus mode")

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")


@dataclass
class MethodSection:
    mixer: Mixer = option(BonusMixer(), "how the rewards mix")
    backup: Mixer | None = option(None, "optional second mixer")


@dataclass
class FamilyConfig:
    method: MethodSection = option(MethodSection(), "method settings")
    rewards: dict[str, dict[str, Any]] = option(
        {"identity": {"kind": "dino", "weight": 1.0}}, "named rewards"
    )
    options: dict[str, Any] = option({}, "free options")


# A family whose second kind registers only after a first load (its parameter undocumented).
LATE = Registry("late")


class Late:
    """A family base need not be a dataclass."""

    registry: ClassVar[Registry] = LATE


@dataclass(frozen=True)
class LateKind(Late):  # registered inside test_kind_registered_after_first_load
    y: int = 2


@LATE.register("early")
@dataclass(frozen=True)
class EarlyKind(Late):
    x: int = option(1, "x")


@dataclass
class LateConfig:
    late: Late = option(EarlyKind(), "a late family")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def _error(overrides: list[str], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(Config, path, overrides)
    return str(info.value)


# ------------------------------------------------------------------------------------------
# defaults, YAML, overrides
# ------------------------------------------------------------------------------------------


def test_nested_defaults() -> None:
    cfg = load_config(Config)
    assert cfg == Config()
    assert cfg.trainer.lr == 1e-4
    assert cfg.trainer.lora.rank == 16  # the parent's default instance, not LoraConfig()
    assert cfg.trainer.milestones == [10, 20]
    assert cfg.reference is None


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Config(), Config()
    a.trainer.milestones.append(99)
    a.trainer.lora.rank = 1
    assert b.trainer.milestones == [10, 20]
    assert b.trainer.lora.rank == 16


def test_yaml_then_override_precedence(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: from_yaml\nseed: 3\ntrainer:\n  lr: 0.5\n  steps: 7\n  lora:\n    alpha: 2.0\n",
    )
    cfg = load_config(Config, path, ["trainer.lr=1e-3", "seed=4", "seed=5"])
    assert cfg.name == "from_yaml"  # YAML beats defaults
    assert cfg.trainer.steps == 7
    assert cfg.trainer.lr == pytest.approx(1e-3)  # override beats YAML
    assert cfg.seed == 5  # last override wins
    # a partially specified section keeps the other defaults of the parent's default instance
    assert cfg.trainer.lora == LoraConfig(rank=16, alpha=2.0)
    assert cfg.trainer.warmup == 0


def test_override_value_parsing() -> None:
    cfg = load_config(
        Config,
        None,
        [
            "trainer.milestones=[1, 2, 3]",
            "trainer.clip=1.5",
            "deterministic=true",
            "name=123",  # YAML int, but the key is a str: the literal text is kept
            "out_dir=/tmp/x",
            "trainer.resolution=[32, 48]",
            "trainer.sampler=ode",
            "reference.rank=2",  # builds an optional section from its class defaults
        ],
    )
    assert cfg.trainer.milestones == [1, 2, 3]
    assert cfg.trainer.clip == 1.5
    assert cfg.deterministic is True
    assert cfg.name == "123"
    assert cfg.out_dir == Path("/tmp/x")
    assert cfg.trainer.resolution == (32, 48)
    assert cfg.trainer.sampler == "ode"
    assert cfg.reference == LoraConfig(rank=2, alpha=8.0)
    assert load_config(Config, None, ["trainer.clip=null"]).trainer.clip is None


def test_whole_section_override_merges(tmp_path: Path) -> None:
    path = _write(tmp_path, "trainer:\n  steps: 50\n")
    cfg = load_config(Config, path, ["trainer={lr: 0.25}"])
    assert cfg.trainer.lr == 0.25 and cfg.trainer.steps == 50


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(Config, _write(tmp_path, "# nothing here\n")) == Config()


def test_post_init_validation_runs() -> None:
    msg = _error(["trainer.warmup=500"])
    assert "warmup (500) must not exceed steps (100)" in msg
    assert "trainer" in msg


# ------------------------------------------------------------------------------------------
# type rules
# ------------------------------------------------------------------------------------------


def test_float_accepts_int_and_yaml_string_exponent(tmp_path: Path) -> None:
    path = _write(tmp_path, "trainer:\n  lr: 1e-4\n  clip: 2\n")  # YAML 1.2 float, not str
    cfg = load_config(Config, path)
    assert cfg.trainer.lr == 1e-4 and isinstance(cfg.trainer.lr, float)
    assert cfg.trainer.clip == 2.0 and isinstance(cfg.trainer.clip, float)
    assert load_config(Config, None, ["trainer.lr=3"]).trainer.lr == 3.0
    assert load_config(Config, None, ["trainer.lr=-2E+3"]).trainer.lr == -2000.0
    # pydantic's strict rule: quoted text is no float (the old coercion accepted it)
    msg = _error([], _write(tmp_path, 'trainer:\n  lr: "1e-4"\n'))
    assert "config key 'trainer.lr' expects float, got '1e-4' (str)" in msg


def test_yaml_dates_and_exponents_stay_text_for_str_keys(tmp_path: Path) -> None:
    assert load_config(Config, _write(tmp_path, "name: 2024-01-31\n")).name == "2024-01-31"
    assert load_config(Config, None, ["name=1e-3"]).name == "1e-3"
    assert "expects int, got 1000.0 (float)" in _error(["seed=1e3"])


def test_int_is_strict() -> None:
    assert load_config(Config, None, ["trainer.steps=7"]).trainer.steps == 7
    msg = _error(["trainer.steps=7.0"])
    assert "config key 'trainer.steps' expects int, got 7.0 (float)" in msg
    assert "expects int, got True (bool)" in _error(["seed=true"])
    assert "expects int, got '7' (str)" in _error(["seed='7'"])


def test_bool_is_strict() -> None:
    assert load_config(Config, None, ["deterministic=FALSE"]).deterministic is False
    assert load_config(Config, None, ["deterministic=yes"]).deterministic is True
    # pydantic's strict rule: quoted text is no bool (the old coercion accepted 'True')
    assert "expects bool, got 'True' (str)" in _error(["deterministic='True'"])
    assert "config key 'deterministic' expects bool, got 1 (int)" in _error(["deterministic=1"])
    assert "expects bool, got 'maybe' (str)" in _error(["deterministic=maybe"])


def test_float_rejects_garbage_and_bool() -> None:
    assert "config key 'trainer.lr' expects float, got 'abc' (str)" in _error(["trainer.lr=abc"])
    assert "expects float, got True (bool)" in _error(["trainer.lr=true"])


def test_literal() -> None:
    msg = _error(["trainer.sampler=euler"])
    assert "config key 'trainer.sampler' expects one of 'sde', 'ode', got 'euler' (str)" in msg


def test_optional() -> None:
    assert load_config(Config, None, ["trainer.clip=0.5"]).trainer.clip == 0.5
    assert "config key 'trainer.clip' expects float, got 'big' (str)" in _error(
        ["trainer.clip=big"]
    )
    msg = _error(["trainer=null"])  # a non-optional section cannot be null
    assert "'trainer' expects TrainerConfig, got None" in msg


def test_list_and_tuple_elements_are_checked() -> None:
    msg = _error(["trainer.milestones=[1, x]"])
    assert "config key 'trainer.milestones[1]' expects int, got 'x' (str)" in msg
    assert "expects list[int], got 5 (int)" in _error(["trainer.milestones=5"])
    assert "trainer.resolution[0]" in _error(["trainer.resolution=[1.5]"])


def test_str_is_strict_in_yaml_files(tmp_path: Path) -> None:
    msg = _error([], _write(tmp_path, "name: 123\n"))
    assert "config key 'name' expects str, got 123 (int)" in msg


# ------------------------------------------------------------------------------------------
# error messages
# ------------------------------------------------------------------------------------------


def test_unknown_override_key_suggests_and_lists_valid_keys() -> None:
    msg = _error(["trainer.lrr=0.1"])
    assert msg.startswith("unknown config key 'trainer.lrr'. Did you mean 'trainer.lr'?")
    assert "Valid keys under 'trainer': " in msg
    for key in ("clip", "lora", "lr", "milestones", "resolution", "sampler", "steps", "warmup"):
        assert key in msg.split("Valid keys under 'trainer': ")[1]


def test_unknown_key_at_wrong_level_suggests_full_key() -> None:
    msg = _error(["lr=0.1"])
    assert "unknown config key 'lr'. Did you mean 'trainer.lr'?" in msg
    assert (
        "Valid keys at the top level: deterministic, name, out_dir, reference, seed, trainer"
        in (msg)
    )


def test_unknown_nested_yaml_key(tmp_path: Path) -> None:
    msg = _error([], _write(tmp_path, "trainer:\n  lora:\n    rnak: 3\n"))
    assert "unknown config key 'trainer.lora.rnak'. Did you mean 'trainer.lora.rank'?" in msg
    assert "Valid keys under 'trainer.lora': alpha, rank" in msg


def test_unknown_key_without_close_match() -> None:
    msg = _error(["trainer.zzzzzz=1"])
    assert "unknown config key 'trainer.zzzzzz'." in msg and "Did you mean" not in msg


def test_setting_below_a_leaf() -> None:
    msg = _error(["trainer.lr.x=1"])
    assert "'trainer.lr' is a float value, not a section" in msg


@pytest.mark.parametrize("bad", ["trainer.lr", "=3", "  "])
def test_malformed_override(bad: str) -> None:
    msg = _error([bad])
    assert repr(bad) in msg and "key=value" in msg


def test_missing_yaml_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    msg = _error([], missing)
    assert str(missing) in msg and "not found" in msg


def test_yaml_file_not_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "- a\n- b\n")
    msg = _error([], path)
    assert str(path) in msg and "mapping" in msg and "list" in msg


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = _write(tmp_path, "trainer: [unclosed\n")
    assert str(path) in _error([], path)


def test_missing_required_key() -> None:
    @dataclass
    class Required:
        path: str = option(dataclasses.MISSING, "must be given")

    with pytest.raises(ConfigError, match="missing required config key"):
        config_from_dict(Required, {})
    assert config_from_dict(Required, {"path": "x"}).path == "x"


def test_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------------------------------
# serialisation and documentation
# ------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        Config,
        None,
        [
            "name=true",  # a str that looks like a YAML bool must survive the round trip
            "trainer.lr=1e-10",
            "trainer.clip=0.25",
            "trainer.resolution=[8, 16, 24]",
            "reference.alpha=0.5",
            "out_dir=2e-3",  # a str that looks like a YAML 1.2 float: quoted when saved
        ],
    )
    assert cfg.name == "true"
    path = tmp_path / "sub" / "saved.yaml"
    save_config(cfg, path)
    assert [p.name for p in path.parent.iterdir()] == ["saved.yaml"]  # no temp files left
    assert load_config(Config, path) == cfg
    plain = yaml.safe_load(path.read_text())
    assert plain == config_to_dict(cfg)
    assert plain["trainer"]["resolution"] == [8, 16, 24]
    assert plain["out_dir"] == "2e-3"


def test_config_to_dict_is_plain() -> None:
    d = config_to_dict(Config())
    assert d["trainer"]["lora"] == {"rank": 16, "alpha": 8.0}
    assert d["reference"] is None
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_describe_config_lists_every_leaf_with_default() -> None:
    text = describe_config(Config)
    lines = text.splitlines()
    keys = config_keys(Config)
    assert "trainer.lora.rank" in keys and "trainer" not in keys
    for key in keys:
        matching = [ln for ln in lines if ln.strip().startswith(f"{key} (")]
        assert len(matching) == 1, key
    assert "  trainer.lr (float, default: 0.0001)" in text
    line = next(ln for ln in lines if ln.strip().startswith("trainer.steps ("))
    assert "(int, default: 100, unit: steps)" in line and line.rstrip().endswith("optimizer steps")
    assert "trainer.lora.rank (int, default: 16)" in text  # parent default instance
    assert "trainer.sampler ('sde' | 'ode', default: 'sde')" in text
    assert "reference (LoraConfig | None, default: null)" in text
    assert "reference.rank (int, default: 4)" in text
    assert "trainer.clip (float | None, default: null)" in text


def test_describe_config_prefix() -> None:
    assert describe_config(LoraConfig, prefix="x").splitlines()[0].startswith("  x.rank (int")


def test_markdown_table() -> None:
    table = config_markdown_table(Config)
    rows = table.strip().splitlines()
    assert rows[0] == "| key | type | default | unit | meaning |"
    assert "| `trainer.steps` | `int` | `100` | steps | optimizer steps |" in rows
    assert (
        "| `trainer.clip` | `float \\| None` | `null` |  | gradient-norm clip (null disables) |"
        in (rows)
    )
    assert all(len(re.split(r"(?<!\\)\|", row)) == 7 for row in rows)  # 5 cells per row


def test_every_key_documented() -> None:
    assert undocumented_keys(Config) == []

    @dataclass
    class Partly:
        a: int = option(1, "documented")
        b: int = 2

    assert undocumented_keys(Partly) == ["b"]


def test_option_helper() -> None:
    f = option([1], "a list", unit="u")
    assert f.default is dataclasses.MISSING and f.default_factory() == [1]
    assert dict(f.metadata) == {"help": "a list", "unit": "u"}
    g = option(3, "plain")
    assert g.default == 3 and "unit" not in g.metadata


def test_cli_overrides_before_and_after_flags(tmp_path, capsys) -> None:
    """`cgrpo eval out_dir=... --quiet prompts_per_subject=1`: both overrides apply."""
    import json

    from cgrpo.cli import main

    out = tmp_path / "ev"
    assert main(["eval", f"out_dir={out}", "--quiet", "prompts_per_subject=1"]) == 0
    assert json.loads((out / "metrics.json").read_text())["pairs"] == 8
    capsys.readouterr()
    assert main(["eval", "--quiet", "--nonsense"]) == 2
    assert "unrecognized arguments: --nonsense" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# strategy-family sections
# ------------------------------------------------------------------------------------------


def _fam(overrides: list[str], text: str | None = None, tmp_path: Path | None = None) -> Any:
    path = _write(tmp_path, text) if text is not None and tmp_path is not None else None
    return load_config(FamilyConfig, path, overrides)


def _fam_error(overrides: list[str], text: str | None = None, tmp: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        _fam(overrides, text, tmp)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_family_defaults() -> None:
    cfg = load_config(FamilyConfig)
    assert cfg == FamilyConfig()
    assert cfg.method.mixer == BonusMixer() and cfg.method.mixer.kind == "bonus"
    assert cfg.method.backup is None


def test_family_yaml_without_kind_merges_onto_current_kind(tmp_path: Path) -> None:
    cfg = _fam([], "method:\n  mixer: {gamma: 0.1}\n", tmp_path)
    assert cfg.method.mixer == BonusMixer(gamma=0.1, weight=2.0)
    cfg = _fam(["method.mixer.weight=3"], "method:\n  mixer: {kind: bonus, gamma: 0.1}\n", tmp_path)
    assert cfg.method.mixer == BonusMixer(gamma=0.1, weight=3.0)  # same kind: merged


def test_family_other_kind_starts_from_its_defaults(tmp_path: Path) -> None:
    # YAML: another kind than the default -> that kind's defaults (not bonus's weight 2)
    assert _fam([], "method:\n  mixer: {kind: plain}\n", tmp_path).method.mixer == PlainMixer()
    # an override changing the kind drops the lower layer's keys of the old kind, no error
    yaml_text = "method:\n  mixer: {gamma: 0.1, weight: 5}\n"
    cfg = _fam(["method.mixer.kind=plain"], yaml_text, tmp_path)
    assert cfg.method.mixer == PlainMixer(weight=1.0)
    # back to the lower layer's kind: its keys merge again
    cfg = _fam(["method.mixer.tag=t"], "method:\n  mixer: {kind: plain, weight: 5}\n", tmp_path)
    assert cfg.method.mixer == PlainMixer(weight=5.0, tag="t")


def test_family_bare_string_is_the_kind(tmp_path: Path) -> None:
    assert _fam([], "method:\n  mixer: plain\n", tmp_path).method.mixer == PlainMixer()
    assert _fam(["method.mixer=plain"]).method.mixer == PlainMixer()
    assert _fam(["method.mixer=plain", "method.mixer.weight=4"]).method.mixer == PlainMixer(4.0)
    assert _fam(["method.mixer={kind: plain, weight: 4}"]).method.mixer == PlainMixer(4.0)


def test_family_overrides_in_any_order() -> None:
    expected = PlainMixer(weight=3.0, tag="123")  # a str key keeps the literal text
    orders = [
        ["method.mixer.weight=3", "method.mixer.kind=plain", "method.mixer.tag=123"],
        ["method.mixer.kind=plain", "method.mixer.tag=123", "method.mixer.weight=3"],
    ]
    for overrides in orders:
        assert _fam(overrides).method.mixer == expected
    assert _fam(["method.mixer.gamma=0.2"]).method.mixer == BonusMixer(gamma=0.2)
    assert _fam(["method.mixer.mode=b"]).method.mixer.mode == "b"


def test_optional_family() -> None:
    assert _fam(["method.backup.kind=plain"]).method.backup == PlainMixer()
    assert _fam(["method.backup=bonus", "method.backup=null"]).method.backup is None
    msg = _fam_error(["method.backup.weight=2"])  # no kind below and none given
    assert "unknown mixer kind None for config key 'method.backup.kind'" in msg


def test_family_unknown_kind(tmp_path: Path) -> None:
    msg = _fam_error(["method.mixer.kind=zz"])
    assert msg == (
        "unknown mixer kind 'zz' for config key 'method.mixer.kind'; valid kinds: bonus, plain"
    )
    assert "'method.mixer.kind'; valid kinds: bonus, plain" in _fam_error(
        [], "method:\n  mixer: zz\n", tmp_path
    )


def test_family_unknown_field_names_kind_and_fields(tmp_path: Path) -> None:
    msg = _fam_error(["method.mixer.gama=1"])
    assert msg == (
        "unknown config key 'method.mixer.gama'. Did you mean 'method.mixer.gamma'? "
        "Valid keys under 'method.mixer' (kind 'bonus'): gamma, kind, mode, weight"
    )
    msg = _fam_error(["method.mixer.kind=plain", "method.mixer.gamma=1"])
    assert msg == (
        "unknown config key 'method.mixer.gamma'. 'gamma' is a key of kind 'bonus'. "
        "Valid keys under 'method.mixer' (kind 'plain'): kind, tag, weight"
    )
    msg = _fam_error([], "method:\n  mixer: {kind: plain, zzz: 1}\n", tmp_path)
    assert "unknown config key 'method.mixer.zzz'." in msg and "(kind 'plain')" in msg


def test_family_value_errors() -> None:
    msg = _fam_error(["method.mixer.gamma=abc"])
    assert msg == "config key 'method.mixer.gamma' expects float, got 'abc' (str)"
    msg = _fam_error(["method.mixer.mode=c"])
    assert msg == "config key 'method.mixer.mode' expects one of 'a', 'b', got 'c' (str)"
    msg = _fam_error(["method.mixer.gamma=-1"])  # the kind's __post_init__
    assert msg == "invalid section 'method.mixer': gamma must be >= 0, got -1.0"
    msg = _fam_error(["method.mixer=5"])
    assert msg == (
        "config key 'method.mixer' expects a mixer kind name or a mapping with 'kind', got 5 (int)"
    )


def test_family_serialisation_round_trip(tmp_path: Path) -> None:
    cfg = _fam(["method.mixer=plain", "method.mixer.weight=0.5"])
    d = config_to_dict(cfg)
    assert d["method"] == {"mixer": {"kind": "plain", "weight": 0.5, "tag": ""}, "backup": None}
    assert config_from_dict(FamilyConfig, d) == cfg
    for overrides in ([], ["method.backup=bonus", "method.backup.mode=b"], ["options.a=[1]"]):
        cfg = _fam(overrides)
        assert config_from_dict(FamilyConfig, config_to_dict(cfg)) == cfg
        save_config(cfg, tmp_path / "c.yaml")
        assert load_config(FamilyConfig, tmp_path / "c.yaml") == cfg
    # instances are accepted in a dict as well
    cfg = config_from_dict(FamilyConfig, {"method": {"mixer": PlainMixer(weight=3.0)}})
    assert cfg.method.mixer == PlainMixer(weight=3.0)


def test_family_documentation() -> None:
    keys = config_keys(FamilyConfig)
    assert len(keys) == len(set(keys))  # every key once
    for key in (
        "method.mixer.kind",
        "method.mixer.gamma",
        "method.mixer.weight",
        "method.mixer.tag",
    ):
        assert key in keys
    assert "method.mixer" not in keys and "method.backup.kind" in keys
    text = describe_config(FamilyConfig)
    lines = text.splitlines()
    for key in keys:
        assert len([ln for ln in lines if ln.strip().startswith(f"{key} (")]) == 1, key
    assert "  method.mixer.kind ('bonus' | 'plain', default: 'bonus')" in text
    assert "method.mixer.gamma (bonus; float, default: 0.4, unit: x)" in text
    # a parameter of both kinds: listed once, default of the default kind
    assert "method.mixer.weight (bonus, plain; float, default: 2.0)" in text
    assert "method.mixer.tag (plain; str, default: '')" in text
    assert "method.backup (Mixer | None, default: null)" in text
    assert "method.backup.kind ('bonus' | 'plain', default: required)" in text
    rows = config_markdown_table(FamilyConfig).splitlines()
    assert "| `method.mixer.gamma` (bonus) | `float` | `0.4` | x | bonus scale |" in rows
    assert (
        "| `method.mixer.kind` | `'bonus' \\| 'plain'` | `'bonus'` |  | how the rewards mix |"
        in rows
    )
    assert undocumented_keys(FamilyConfig) == []


def test_kind_registered_after_first_load() -> None:
    assert load_config(LateConfig).late == EarlyKind()
    assert undocumented_keys(LateConfig) == []
    with pytest.raises(ConfigError, match="valid kinds: early$"):
        load_config(LateConfig, None, ["late=later"])
    LATE.register("later")(LateKind)
    assert load_config(LateConfig, None, ["late=later", "late.y=5"]).late == LateKind(y=5)
    assert undocumented_keys(LateConfig) == ["late.y"]  # a kind's parameter without help


# ------------------------------------------------------------------------------------------
# dotted overrides into dict fields
# ------------------------------------------------------------------------------------------


def test_dotted_override_into_dict_fields(tmp_path: Path) -> None:
    cfg = _fam(["rewards.colour.kind=colour", "rewards.identity.weight=2"])
    assert cfg.rewards == {
        "identity": {"kind": "dino", "weight": 2},  # set inside the default entry
        "colour": {"kind": "colour"},  # a new entry
    }
    assert _fam(["options.a.b=1", "options.c=x"]).options == {"a": {"b": 1}, "c": "x"}
    # a YAML (or whole-value) dict replaces the current one, as before ...
    yaml_text = "rewards:\n  prompt: {kind: hps}\n"
    assert _fam([], yaml_text, tmp_path).rewards == {"prompt": {"kind": "hps"}}
    assert _fam(["rewards={x: {kind: y}}"]).rewards == {"x": {"kind": "y"}}
    # ... and a dotted override then sets inside that value
    cfg = _fam(["rewards.prompt.weight=3"], yaml_text, tmp_path)
    assert cfg.rewards == {"prompt": {"kind": "hps", "weight": 3}}
    cfg = _fam(["rewards={x: {kind: y}}", "rewards.x.weight=1"])
    assert cfg.rewards == {"x": {"kind": "y", "weight": 1}}
    msg = _fam_error(["rewards.identity=5"])
    assert msg == "config key 'rewards.identity' expects dict[str, any], got 5 (int)"
