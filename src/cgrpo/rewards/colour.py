"""A model-free reward on pixel statistics, for smoke runs and cost benchmarks.

``colour`` needs no weights: use it to check a new set-up end to end (the FLUX tier on a
GPU before the reward models are in place, ``rewards.identity.kind=colour
rewards.identity.measure=brightness``), or where only the policy's cost matters
(``benchmarks/flux_step.py``). It is not a reward of the method.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["ColourReward"]


class ColourReward:
    """``brightness``: mean of all pixels; ``redness``: mean red minus mean blue."""

    def __init__(self, measure: Literal["brightness", "redness"] = "brightness") -> None:
        if measure not in ("brightness", "redness"):
            raise ValueError(
                f"colour reward measure must be brightness or redness, got {measure!r}"
            )
        self.measure = measure
        self.name = f"colour_{measure}"

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        if self.measure == "brightness":
            return images.mean(dim=(1, 2, 3))
        return images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2))
