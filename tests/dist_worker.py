"""Run by tests/test_distributed.py under ``accelerate launch``: one training step, saved.

Each process writes ``rank<k>.pt``: the step's gathered rewards, group ids and advantages,
its own shard, and the gradient the update applied. Not a test module itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from cgrpo.trainer import GRPOTrainer


def one_step(trainer: GRPOTrainer) -> dict[str, torch.Tensor]:
    """One train step; returns what the test compares across process counts."""
    seen: dict[str, torch.Tensor] = {}
    advantages = trainer.advantages

    def spy(r_id: torch.Tensor, r_p: torch.Tensor, group_ids: torch.Tensor):
        a_id, a_p = advantages(r_id, r_p, group_ids)
        seen.update(r_id=r_id, r_p=r_p, group_ids=group_ids, a_id=a_id, a_p=a_p)
        return a_id, a_p

    trainer.advantages = spy  # type: ignore[method-assign]
    res = trainer.train_step()
    assert not res.skipped, res.metrics
    grads = torch.cat([p.grad.flatten() for p in trainer.params])
    shard = torch.tensor([trainer.shard.start, trainer.shard.stop])
    return {**seen, "grad": grads, "shard": shard, "world": torch.tensor(trainer.dist.world)}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import fast_config

    out, weights, *overrides = sys.argv[1:]
    trainer = GRPOTrainer(fast_config(Path(out) / "run", Path(weights), *overrides))
    result = one_step(trainer)
    torch.save(result, Path(out) / f"rank{trainer.dist.rank}.pt")


if __name__ == "__main__":
    main()
