"""Run by tests/run/test_distributed.py under ``accelerate launch``: one training step, saved.

Each process writes ``rank<k>.pt``: the step's gathered rewards, group ids and advantages,
its own shard, and the gradient the update applied. Not a test module itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from cgrpo.train.trainer import GRPOTrainer


def one_step(trainer: GRPOTrainer) -> dict[str, torch.Tensor]:
    """One train step; returns what the test compares across process counts."""
    seen: dict[str, torch.Tensor] = {}
    advantages = trainer.advantages

    def spy(rewards: dict[str, torch.Tensor], group_ids: torch.Tensor):
        adv = advantages(rewards, group_ids)
        r_id, r_p = rewards["identity"], rewards["prompt"]
        a_id, a_p = adv["identity"], adv["prompt"]
        seen.update(r_id=r_id, r_p=r_p, group_ids=group_ids, a_id=a_id, a_p=a_p)
        return adv

    trainer.advantages = spy  # type: ignore[method-assign]
    res = trainer.train_step()
    assert not res.skipped, res.metrics
    full = trainer.dist.full  # FSDP: the whole gradient, gathered from the shards
    grads = torch.cat([full(p.grad).flatten() for p in trainer.params])
    held = sum(trainer.dist.local(p).numel() for p in trainer.params)
    shard = torch.tensor([trainer.shard.start, trainer.shard.stop])
    return {
        **seen,
        "grad": grads,
        "shard": shard,
        "world": torch.tensor(trainer.dist.world),
        # the share of the trainable weights this process holds (1 unless sharded)
        "held": torch.tensor(held / grads.numel()),
    }


def flux_trainer(flux_dir: Path, out: Path, *overrides: str) -> GRPOTrainer:
    """The trainer on the tiny FLUX model with the model-free colour rewards."""
    from tests.conftest import flux_train_config

    return GRPOTrainer(flux_train_config(flux_dir, out, *overrides))


def main() -> None:
    """``dist_worker.py OUT WEIGHTS [overrides]`` (embedded world) or
    ``dist_worker.py OUT flux FLUX_DIR [overrides]`` (tiny FLUX, LoRA)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import fast_config

    out, weights, *overrides = sys.argv[1:]
    if weights == "flux":
        rank_dir = Path(out) / f"data{os.environ.get('RANK', '0')}"  # no shared writes
        rank_dir.mkdir(parents=True, exist_ok=True)
        trainer = flux_trainer(Path(overrides[0]), rank_dir, *overrides[1:])
    else:
        trainer = GRPOTrainer(fast_config(Path(out) / "run", Path(weights), *overrides))
    result = one_step(trainer)
    module = getattr(trainer.policy, "transformer", None)
    if module is not None:  # FLUX: the share of the frozen base this process holds
        parts = [trainer.dist.local(p) for p in module.parameters()]
        total = sum(p.numel() for p in module.parameters())
        result["held_all"] = torch.tensor(sum(p.numel() for p in parts) / total)
    torch.save(result, Path(out) / f"rank{trainer.dist.rank}.pt")


if __name__ == "__main__":
    main()
