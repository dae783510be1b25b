"""The PNG files ``cgrpo eval`` keeps its images in (an :class:`ImageStore`): one file per
item, ``images/<subject>/<prompt index>_<k>.png``, written whole (temp file + rename), so an
interrupted evaluation resumes from the images already on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cgrpo.eval.evaluator import EvalPairs
from cgrpo.io.images import to_uint8

__all__ = ["PngStore"]


class PngStore:
    """An :class:`ImageStore` of PNG files ``images/<subject>/<prompt index>_<k>.png``."""

    def __init__(self, root: Path, pairs: EvalPairs, images_per_pair: int) -> None:
        self.root, self.pairs, self.k = root, pairs, images_per_pair

    def path(self, item: int) -> Path:
        i, k = divmod(item, self.k)
        return (
            self.root
            / "images"
            / self.pairs.subjects[i]
            / f"{self.pairs.prompt_index[i]:03d}_{k}.png"
        )

    def load(self, item: int) -> torch.Tensor | None:
        from cgrpo.io.images import load_image

        p = self.path(item)
        return load_image(p) if p.is_file() else None

    def save(self, item: int, image: torch.Tensor) -> None:
        from PIL import Image

        from cgrpo.io.atomic import atomic_write

        arr = to_uint8(image).permute(1, 2, 0).numpy().astype(np.uint8)
        p = self.path(item)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
