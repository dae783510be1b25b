"""The reward registry: lazy built-ins, run-time registration, checking a config."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cgrpo.rewards
from cgrpo.rewards import REWARDS, make_reward, register_reward, reward_factory, reward_kinds
from cgrpo.rewards.base import BUILTIN_REWARDS, make_reward_on

BACKENDS = sorted({spec.partition(":")[0] for spec in BUILTIN_REWARDS.values()})


def _modules_after(code: str) -> list[str]:
    """The ``cgrpo.rewards.*`` modules loaded after running ``code`` in a fresh interpreter."""
    script = (
        f"import json, sys\n{code}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cgrpo.rewards.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_package_imports_no_backend() -> None:
    loaded = _modules_after(
        "import cgrpo.rewards\n"
        "from cgrpo.rewards import REWARDS, reward_kinds\n"
        "assert 'dinov2' in REWARDS and 'embedded_identity' in reward_kinds()"
    )
    assert loaded == ["cgrpo.rewards.base"]
    assert not set(loaded) & set(BACKENDS)


def test_building_a_kind_imports_only_its_backend() -> None:
    loaded = _modules_after("from cgrpo.rewards import make_reward\nmake_reward('colour')")
    assert "cgrpo.rewards.colour" in loaded
    assert not {"cgrpo.rewards.hf", "cgrpo.rewards.hpsv3", "cgrpo.rewards.effnet"} & set(loaded)


def test_backends_do_not_import_the_registry() -> None:
    """The dependency runs one way: the registry names the backends, not the reverse."""
    root = Path(cgrpo.rewards.__file__).parent
    for path in root.glob("*.py"):
        if path.name in ("__init__.py", "base.py", "set.py"):  # set.py builds through it
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "cgrpo.rewards.base", path.name
                if node.module == "cgrpo.rewards":
                    assert not {a.name for a in node.names} & {"base", "register_reward"}
            elif isinstance(node, ast.Import):
                assert "cgrpo.rewards.base" not in {a.name for a in node.names}, path.name


def test_every_builtin_resolves_to_a_factory() -> None:
    assert set(BUILTIN_REWARDS) <= set(reward_kinds())
    assert reward_kinds() == sorted(REWARDS)
    for name in BUILTIN_REWARDS:
        factory = reward_factory(name)
        assert callable(factory) and REWARDS[name] is factory
        inspect.signature(factory)  # configs are checked against it


def test_unknown_name_lists_the_builtins() -> None:
    code = (
        "from cgrpo.rewards import make_reward\n"
        "try:\n    make_reward('nope')\nexcept ValueError as e:\n    print(e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert "unknown reward 'nope'" in out
    for name in BUILTIN_REWARDS:
        assert repr(name) in out
    with pytest.raises(ValueError, match=r"registered rewards: \[.*'embedded_prompt'.*'hpsv3'"):
        reward_factory("nope")
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        make_reward_on("nope", "cpu")


def test_options_can_be_checked_against_the_factory() -> None:
    params = inspect.signature(reward_factory("embedded_prompt")).parameters
    assert "tau_colour" in params and "device" not in params
    assert "weights" in inspect.signature(reward_factory("effnet")).parameters


class _Constant:
    name = "constant"

    def __init__(self, value: float = 1.0, device: str = "cpu") -> None:
        self.value, self.device = value, device

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        return torch.full((images.shape[0],), self.value)


def test_third_party_registration_at_run_time() -> None:
    register_reward("test_constant")(_Constant)
    try:
        assert "test_constant" in reward_kinds()
        assert reward_factory("test_constant") is _Constant
        r = make_reward("test_constant", value=0.5)
        assert torch.equal(
            r(torch.zeros(2, 3, 4, 4), ["a", "b"], torch.zeros(2, 3, 4, 4)), torch.full((2,), 0.5)
        )
        assert make_reward_on("test_constant", "meta").device == "meta"
        assert make_reward_on("test_constant", "meta", device="cpu").device == "cpu"
        with pytest.raises(ValueError, match="registered twice"):
            register_reward("test_constant")(_Constant)
    finally:
        del REWARDS["test_constant"]
    assert "test_constant" not in reward_kinds()


def test_a_builtin_name_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError, match="'dino' is registered twice"):
        register_reward("dino")(_Constant)


def test_decorator_form() -> None:
    @register_reward("test_decorated")
    def _factory() -> _Constant:
        return _Constant(2.0)

    try:
        assert make_reward("test_decorated").value == 2.0
    finally:
        del REWARDS["test_decorated"]
