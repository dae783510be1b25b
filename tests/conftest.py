"""Shared fixtures: a tiny random generator and a fast training config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.config import load_config
from cgrpo.train_config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.world.generator import GeneratorConfig, TinyKontext
from cgrpo.world.pretrain import save_generator

TINY = GeneratorConfig(dim=32, depth=1, heads=2, mlp_ratio=2.0, head_channels=8)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors on a shared 2-core machine: one thread is faster and deterministic."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "tiny.safetensors"
    save_generator(TinyKontext(TINY), path)
    return path


def fast_config(out_dir: Path, weights: Path, *overrides: str) -> TrainConfig:
    """The embedded config shrunk to seconds: tiny model, 2 pairs x 4 samples, 3 steps."""
    base = [
        f"run.out_dir={out_dir}",
        f"model.weights={weights}",
        "run.steps=2",
        "run.threads=1",
        "run.image_every=1",
        "run.checkpoint_every=1",
        "data.prompts_per_step=2",
        "data.eval_prompts_per_subject=1",
        "grpo.group_size=4",
        "sampler.num_steps=3",
        "optim.lr=1e-3",
    ]
    return load_config(TrainConfig, EMBEDDED_CONFIG, [*base, *overrides])
