"""grpo.updates_per_rollout: the release's update granularity (an optimizer step every 4 of
a GPU's 12 samples) makes the PPO ratio of the later chunks of a rollout leave 1, so the
1e-4 clip acts; with one update per rollout it never does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cgrpo.method.objective as objective_module
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import flux_train_config


def ratios_per_call(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Make the GRPO objective record each call's PPO ratio exp(log_prob - old_log_prob)."""
    seen: list[torch.Tensor] = []
    inner = objective_module.grpo_loss

    def recording(log_prob, old_log_prob, advantages, **kw):
        seen.append(torch.exp(log_prob - old_log_prob).detach().flatten())
        return inner(log_prob, old_log_prob, advantages, **kw)

    monkeypatch.setattr(objective_module, "grpo_loss", recording)
    return seen


@pytest.mark.parametrize("updates", [1, 3])
def test_later_updates_of_a_rollout_see_a_clipped_ratio(
    updates: int, flux_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 pairs x 3 samples, 2 of 3 SDE steps trained, clip 1e-4: the first chunk's ratio is 1
    (the policy the samples came from); after an optimizer step, every later chunk has a ratio
    off 1 by more than the clip range, and the clip fraction logged is above 0."""
    seen = ratios_per_call(monkeypatch)
    cfg = flux_train_config(
        flux_dir, tmp_path, "run.steps=1", "run.eval=false", "grpo.clip_range=1e-4",
        f"grpo.updates_per_rollout={updates}", "grpo.micro_batch_size=0",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    stats = trainer.train_step().metrics
    steps = int(stats["trained_steps"])
    assert steps == 2 and len(seen) == steps * updates  # one call per chunk and step
    first, later = seen[:steps], seen[steps:]
    assert all(torch.allclose(r, torch.ones_like(r), atol=1e-5) for r in first)
    assert all(float((r - 1).abs().max()) > 1e-4 for r in later)
    assert (stats["clip_fraction"] > 0) == (updates > 1)
