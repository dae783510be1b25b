"""A stand-in reward of a real reward model's size, for memory and time measurements.

HPS-v3 is Qwen2-VL-7B-Instruct (8.29 B parameters in bf16: 16.6 GB) scoring each (image,
prompt); its weights are not on the benchmark machines. ``SizedReward`` holds as many bf16
parameters on its device, as ``k`` matrices of Qwen2-VL-7B's MLP shape (3584 x 18944), and
spends about the same compute per image: ``tokens`` hidden states go through every matrix
and back (x W then x W^T), ``2 * tokens * parameters`` multiply-adds x 2 FLOPs, i.e. 6.6
TFLOP per image at 400 tokens (a 512 px image is about 334 visual tokens plus the prompt).
The matrices are zeros (no random init, no NaN): the score is the images' brightness, so the
trainer still sees a finite, varying reward.

Registered as reward kind ``sized`` when this module is imported.
"""

from __future__ import annotations

import torch

from cgrpo.rewards.base import REWARDS

__all__ = ["HPSV3_PARAMS", "SizedReward"]

#: Qwen2-VL-7B-Instruct's parameter count (HPS-v3's backbone)
HPSV3_PARAMS = 8.29e9
HIDDEN, INNER = 3584, 18944


class SizedReward:
    """``params`` bf16 parameters on ``device`` and ``2 * tokens * params`` x 2 FLOPs per
    image; score = mean brightness of the image (in [0, 1])."""

    uses_references = False

    def __init__(
        self,
        params: float = HPSV3_PARAMS,
        tokens: int = 400,
        *,
        hidden: int = HIDDEN,
        inner: int = INNER,
        device: str = "cpu",
    ) -> None:
        if params < hidden * inner:  # smaller than one matrix (a CPU check): one square one
            hidden = inner = max(8, int(params**0.5))
        k = max(1, round(params / (hidden * inner)))
        self.device = torch.device(device)
        self.tokens, self.hidden = tokens, hidden
        self.weights = [
            torch.zeros(hidden, inner, dtype=torch.bfloat16, device=self.device) for _ in range(k)
        ]

    @property
    def parameters(self) -> int:
        return sum(w.numel() for w in self.weights)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None = None
    ) -> torch.Tensor:
        for _ in range(images.shape[0]):
            x = torch.ones(self.tokens, self.hidden, dtype=torch.bfloat16, device=self.device)
            for w in self.weights:
                x = (x @ w) @ w.T
        return images.float().mean(dim=(1, 2, 3)).to(images.device)


if "sized" not in REWARDS.names():
    REWARDS.register("sized")(SizedReward)
