"""Shared fixtures: a tiny random generator and a fast training config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.config.core import load_config
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
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


def straight_and_resumed(tmp_path: Path, weights: Path, args: list[str]):
    """Two trainers of :func:`fast_config` + ``args``: one run straight to step 4, one run
    to step 2, then resumed from its checkpoint to step 4 (compare them after)."""
    from cgrpo.train.trainer import GRPOTrainer

    straight = GRPOTrainer(fast_config(tmp_path / "a", weights, "run.steps=4", *args))
    straight.train(quiet=True)
    GRPOTrainer(fast_config(tmp_path / "b", weights, "run.steps=2", *args)).train(quiet=True)
    resumed = GRPOTrainer(fast_config(tmp_path / "b", weights, "run.steps=4", *args))
    resumed.train(resume=True, quiet=True)
    return straight, resumed


def record_weighted_steps(trainer) -> list[int]:
    """Make ``trainer``'s weighting record each step index it is asked for; returns the
    list it appends to (the weights themselves are the strategy's own)."""
    weighted: list[int] = []
    inner = trainer.weighting

    class Recorder:
        def step_weights(self, t, n, base, *, pair):
            weighted.append(t)
            return inner.step_weights(t, n, base, pair=pair)

    trainer.weighting = Recorder()
    return weighted


# ----------------------------------------------------------------- tiny FLUX components

PROMPTS = ["a dog in the snow", "a red can on the beach"]  # words of random_flux.WORDS


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FLUX model folder in diffusers layout (random weights, seed 0)."""
    from cgrpo.policies.random_flux import save_random_flux

    return save_random_flux(tmp_path_factory.mktemp("tiny_flux"), "tiny", seed=0)


def flux_train_config(flux_dir: Path, tmp_path: Path, *overrides: str) -> TrainConfig:
    """A train config on the tiny FLUX model: two plain-colour references with PROMPTS as a
    JSONL pairs file, 16 px, LoRA rank 4, 2 pairs x 3 samples x 4 steps, and the
    model-free colour rewards (brightness as identity, redness as prompt)."""
    import json

    from PIL import Image

    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (24, 20), colour).save(tmp_path / f"ref{i}.png")
    pairs = tmp_path / "pairs.jsonl"
    rows = (json.dumps({"reference": f"ref{i}.png", "prompt": p}) for i, p in enumerate(PROMPTS))
    pairs.write_text("\n".join(rows))
    base = [
        "model.kind=flux", f"flux.path={flux_dir}", "flux.dtype=float32",
        "flux.resolution=16", "flux.lora_rank=4", "flux.max_sequence_length=8",
        "data.kind=jsonl", f"data.path={pairs}", "data.prompts_per_step=2",
        "data.allow_eval_overlap=true",
        "grpo.group_size=3", "sampler.num_steps=4", "optim.lr=1e-2",
        f"run.out_dir={tmp_path / 'run'}", "run.threads=1",
        "rewards.identity={kind: colour, measure: brightness}",
        "rewards.prompt={kind: colour, measure: redness}",
    ]  # fmt: skip
    return load_config(TrainConfig, None, [*base, *overrides])
