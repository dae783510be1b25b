"""The reward registry (a :class:`cgrpo.config.registry.Registry`): lazy built-ins, run-time
registration, reading and checking the ``rewards:`` section of a config."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import cgrpo.rewards
from cgrpo.config.registry import Registry, import_path
from cgrpo.rewards import REWARDS, make_reward, reads_references
from cgrpo.rewards.base import BUILTIN_REWARDS, make_reward_on
from cgrpo.rewards.segment import SEGMENTERS
from cgrpo.rewards.spec import RewardSpec, canonical_rewards, parse_rewards

BACKENDS = sorted({spec.partition(":")[0] for spec in BUILTIN_REWARDS.values()})


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout


def _modules_after(code: str) -> list[str]:
    """The ``cgrpo.rewards.*`` modules loaded after running ``code`` in a fresh interpreter."""
    script = (
        f"import json, sys\n{code}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cgrpo.rewards.'))))"
    )
    return json.loads(_run(script).strip().splitlines()[-1])


def test_importing_the_package_imports_no_backend() -> None:
    loaded = _modules_after(
        "import cgrpo.rewards\n"
        "from cgrpo.rewards import REWARDS\n"
        "assert 'dinov2' in REWARDS and 'embedded_identity' in REWARDS.names()\n"
        "assert 'torch' not in sys.modules"
    )
    assert loaded == ["cgrpo.rewards.base"]
    assert not set(loaded) & set(BACKENDS)


def test_the_rewards_section_is_read_without_torch() -> None:
    """``TrainConfig`` reads ``rewards:`` through cgrpo.rewards.spec: no torch, no backend."""
    loaded = _modules_after(
        "from cgrpo.rewards.spec import canonical_rewards\n"
        "canonical_rewards({'identity': {'kind': 'dinov2', 'path': 'w'}, 'p': {'kind': 'hpsv3'}})\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    assert loaded == ["cgrpo.rewards.base", "cgrpo.rewards.spec"]


def test_building_a_kind_imports_only_its_backend() -> None:
    loaded = _modules_after("from cgrpo.rewards import make_reward\nmake_reward('colour')")
    assert "cgrpo.rewards.colour" in loaded
    assert not {"cgrpo.rewards.hf", "cgrpo.rewards.hpsv3", "cgrpo.rewards.effnet"} & set(loaded)


def test_backends_do_not_import_the_registry() -> None:
    """The dependency runs one way: the registry names the backends, not the reverse."""
    root = Path(cgrpo.rewards.__file__).parent
    for path in root.glob("*.py"):
        if path.name in ("__init__.py", "base.py", "spec.py", "set.py"):  # they read it
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "cgrpo.rewards.base", path.name
                if node.module == "cgrpo.rewards":
                    assert not {a.name for a in node.names} & {"base", "REWARDS"}
            elif isinstance(node, ast.Import):
                assert "cgrpo.rewards.base" not in {a.name for a in node.names}, path.name


def test_every_builtin_resolves_to_a_factory() -> None:
    assert isinstance(REWARDS, Registry) and REWARDS.family == "reward"
    assert set(BUILTIN_REWARDS) <= set(REWARDS.names())
    assert REWARDS.names() == sorted(REWARDS.kinds)
    for name in BUILTIN_REWARDS:
        factory = REWARDS.get(name)
        assert callable(factory) and REWARDS.kinds[name] is factory
        assert not hasattr(factory, "kind")  # a reward registry tags nothing
        inspect.signature(factory)  # configs are checked against it


def test_unknown_name_lists_the_builtins() -> None:
    out = _run(
        "from cgrpo.rewards import make_reward\n"
        "try:\n    make_reward('nope')\nexcept ValueError as e:\n    print(e)"
    )
    assert out.startswith("unknown reward kind 'nope'; valid kinds: clip, colour, dino,")
    for name in BUILTIN_REWARDS:
        assert name in out
    with pytest.raises(ValueError, match=r"valid kinds: .*embedded_prompt, hpsv3"):
        REWARDS.get("nope")
    with pytest.raises(ValueError, match="unknown reward kind 'nope'"):
        make_reward_on("nope", "cpu")
    with pytest.raises(ValueError, match=r"unknown reward kind \['x'\]"):
        REWARDS.get(["x"])  # unhashable: not a kind either


def test_options_can_be_checked_against_the_factory() -> None:
    params = inspect.signature(REWARDS.get("embedded_prompt")).parameters
    assert "tau_colour" in params and "device" not in params
    assert "weights" in inspect.signature(REWARDS.get("effnet")).parameters


class _Constant:
    name = "constant"

    def __init__(self, value: float = 1.0, device: str = "cpu") -> None:
        self.value, self.device = value, device

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        return torch.full((images.shape[0],), self.value)


def test_third_party_registration_at_run_time() -> None:
    REWARDS.register("test_constant")(_Constant)
    try:
        assert "test_constant" in REWARDS.names()
        assert REWARDS.get("test_constant") is _Constant
        r = make_reward("test_constant", value=0.5)
        assert torch.equal(
            r(torch.zeros(2, 3, 4, 4), ["a", "b"], torch.zeros(2, 3, 4, 4)), torch.full((2,), 0.5)
        )
        assert make_reward_on("test_constant", "meta").device == "meta"
        assert make_reward_on("test_constant", "meta", device="cpu").device == "cpu"
        REWARDS.register("test_constant")(_Constant)  # the same factory again: no-op
        with pytest.raises(ValueError, match="reward kind 'test_constant' is registered twice"):
            REWARDS.register("test_constant")(lambda: _Constant())
    finally:
        del REWARDS.kinds["test_constant"]
    assert "test_constant" not in REWARDS.names()


def test_a_builtin_name_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError, match="'dino' is registered twice"):
        REWARDS.register("dino")(_Constant)
    with pytest.raises(ValueError, match="'dino' is registered twice"):
        REWARDS.register_lazy("dino", "somewhere:Else")


def test_decorator_form() -> None:
    @REWARDS.register("test_decorated")
    def _factory() -> _Constant:
        return _Constant(2.0)

    try:
        assert make_reward("test_decorated").value == 2.0
    finally:
        del REWARDS.kinds["test_decorated"]


# ----------------------------------------------------------------------------- the registry


def test_lazy_entries_are_imported_on_first_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("my_lazy_kinds")

    class Thing:
        def __init__(self, x: int = 1) -> None:
            self.x = x

    mod.Thing = Thing  # type: ignore[attr-defined]
    mod.ns = types.SimpleNamespace(Inner=Thing)  # type: ignore[attr-defined]
    reg: Registry[type] = Registry("thing", lazy={"a": "my_lazy_kinds:Thing"})
    reg.register_lazy("b", "my_lazy_kinds:ns.Inner")
    reg.register_lazy("a", "my_lazy_kinds:Thing")  # the same path again: no-op
    assert "a" in reg and reg.names() == ["a", "b"] and len(reg.kinds) == 2
    monkeypatch.setitem(sys.modules, "my_lazy_kinds", mod)
    assert reg.kinds.lazy_path("a") == "my_lazy_kinds:Thing"
    assert reg.make("a", x=3).x == 3 and reg.get("a") is Thing
    assert reg.kinds.lazy_path("a") is None and Thing.kind == "a"  # tag=True: named
    assert reg.get("b") is Thing
    with pytest.raises(ValueError, match="unknown thing kind 'c'; valid kinds: a, b"):
        reg.get("c")
    gone: Registry[type] = Registry("thing", lazy={"x": "my_lazy_kinds:Missing"})
    with pytest.raises(ImportError, match="has no attribute 'Missing'"):
        gone.get("x")


def test_import_path() -> None:
    assert import_path("cgrpo.config.registry:Registry") is Registry
    assert import_path("cgrpo.config.registry:Registry.get") is Registry.get
    with pytest.raises(ValueError, match="package.module:attribute"):
        import_path("cgrpo.config.registry")
    with pytest.raises(ImportError):
        import_path("no_such_module_xyz:thing")


def test_segmenters_share_the_registry() -> None:
    assert isinstance(SEGMENTERS, Registry) and {"none", "u2netp"} <= set(SEGMENTERS.names())
    assert SEGMENTERS.kinds.lazy_path("u2netp") == "cgrpo.rewards.u2netp:U2NetPSegmenter"
    assert SEGMENTERS.make("none") is None
    with pytest.raises(ValueError, match="segmenter kind 'none' is registered twice"):
        SEGMENTERS.register("none")(lambda: None)


# ----------------------------------------------------------------------------- config section


def test_parse_rewards_reads_the_canonical_form() -> None:
    raw = {
        "identity": {"kind": "dinov2", "weight": 2, "path": "w"},
        "gone": None,
        "prompt": {"kind": "hpsv3"},
    }
    assert parse_rewards(raw) == [
        RewardSpec("identity", "dinov2", 2.0, {"path": "w"}),
        RewardSpec("prompt", "hpsv3", 1.0, {}),
    ]
    assert canonical_rewards(raw) == {
        "identity": {"kind": "dinov2", "weight": 2.0, "path": "w"},
        "prompt": {"kind": "hpsv3", "weight": 1.0},
    }
    # a reward that happens to be called *_options is a reward
    assert parse_rewards({"x_options": {"kind": "colour"}})[0].kind == "colour"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"identity": "dino"}, "rewards.identity=dino: write rewards.identity: {kind: dino}"),
        (
            {"identity": {"kind": "dino"}, "identity_options": {"path": "w"}},
            "rewards.identity_options: write the options inside rewards.identity: "
            "{kind: ..., weight: ..., <option>: ...}",
        ),
        (
            {"dino": {"reward": "dino", "path": "w"}},
            "rewards.dino: reward: is now kind: (write rewards.dino.kind=dino)",
        ),
        ({"x": {"kind": "nope"}}, "rewards.x.kind='nope' is not a registered reward; valid"),
        ({"x": 3}, "rewards.x must be a mapping {kind: <reward>, weight: <float>, ...options}"),
        ({"x": {"kind": "colour", "weight": "1"}}, "rewards.x.weight must be a number"),
        ({"x": {"kind": "colour", "weight": float("nan")}}, "rewards.x.weight must be finite"),
        ({"x": None}, "rewards: name at least one reward"),
    ],
)
def test_parse_rewards_refuses_with_one_line(raw: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rewards(raw)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_removed_spellings_are_refused_in_metrics_too() -> None:
    with pytest.raises(ValueError, match=r"^metrics\.dino=dino: write metrics\.dino: \{kind"):
        parse_rewards({"dino": "dino"}, where="metrics")


# ----------------------------------------------------------------------------- capabilities


def test_reads_references_is_a_declared_capability() -> None:
    class Reads:
        name = "r"

    class Ignores:
        name = "i"
        uses_references = False

    class Says:
        name = "s"

        def __init__(self) -> None:
            self.uses_references = True

    assert reads_references(Reads()) and reads_references(Says())
    assert not reads_references(Ignores())
    assert isinstance(Ignores(), cgrpo.rewards.ReferenceUse)
    assert not isinstance(Reads(), cgrpo.rewards.ReferenceUse)


@pytest.mark.parametrize("kind", ["dinov2", "dino", "clip", "effnet"])
def test_a_misspelt_option_of_a_reward_that_passes_options_on_is_named(kind: str) -> None:
    """The identity rewards pass their segmentation options on (``**options``) to their
    base: a misspelt one is still named, with the valid ones, before any folder is read."""
    from cgrpo.rewards.set import RewardSet
    from cgrpo.rewards.spec import parse_rewards

    folder = {"weights" if kind == "effnet" else "path": "no/such/folder"}
    specs = parse_rewards({"identity": {"kind": kind, **folder, "seg_mod": 1}})
    with pytest.raises(ValueError, match=r"no option\(s\) \['seg_mod'\]; its options: .*seg_mode"):
        RewardSet.build(specs, "cpu")
