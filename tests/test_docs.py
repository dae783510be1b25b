"""Docs stay true: the configuration reference matches the typed configs."""

from pathlib import Path

from cgrpo.config.docs import undocumented_keys
from cgrpo.docs import configuration_markdown
from cgrpo.eval.config import EvalConfig
from cgrpo.run.config import TrainConfig
from cgrpo.world.pretrain import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == configuration_markdown(), "run `python -m cgrpo.docs` to regenerate it"


def test_every_key_is_documented() -> None:
    assert undocumented_keys(TrainConfig) == []
    assert undocumented_keys(PretrainConfig) == []
    assert undocumented_keys(EvalConfig) == []


def test_readme_has_exactly_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == ["make train", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
