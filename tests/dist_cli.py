"""Run by tests/run/test_multi_node.py under ``accelerate launch``: the ``cgrpo`` command
line with one more reward kind registered, ``fails_on_rank`` (raises on the process whose
``RANK`` is its ``rank`` option, scores 0 elsewhere), and the trainer's place in the run
printed as it is made (``dist_cli: process <rank> of <world>``: what the trainer's
:class:`~cgrpo.run.distributed.Dist` sees). Not a test module itself.

``dist_cli.py train [args]`` is ``cgrpo train [args]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


class FailsOnRank:
    """A reward that raises on one process: what a broken reward model does there."""

    uses_references = False

    def __init__(self, rank: int = 1, device: str = "cpu") -> None:
        self.rank = rank

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        if int(os.environ.get("RANK", "0")) == self.rank:
            raise RuntimeError(f"scorer crashed on process {self.rank}\nsecond line")
        return torch.zeros(len(images))


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cgrpo.cli import main as cli
    from cgrpo.rewards import REWARDS
    from cgrpo.run.distributed import Dist

    REWARDS.register("fails_on_rank")(FailsOnRank)
    made = Dist.from_env

    def shown(cls: type[Dist], *args: object, **kwargs: object) -> Dist:
        dist = made(*args, **kwargs)
        print(f"dist_cli: process {dist.rank} of {dist.world}", flush=True)
        return dist

    Dist.from_env = classmethod(shown)  # type: ignore[method-assign,assignment]
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
