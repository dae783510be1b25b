"""Synthetic final evaluations for the claims and contrasts: the base's images moved by a
planted effect plus image noise, per seed."""

from __future__ import annotations

import numpy as np


def synthetic_base(rng: np.random.Generator, images: int = 400) -> dict[str, np.ndarray]:
    """Per-image base rewards (200 pairs x 2 draws by default)."""
    return {"identity": rng.uniform(0.3, 0.7, images), "prompt": rng.uniform(0.6, 0.9, images)}


def shifted_arm(base: dict, d_id: float, d_p: float, *, seeds: int, rng) -> dict:
    """Per seed, the base's images moved by (d_id, d_p) plus image noise."""
    return {
        k: {
            "identity": base["identity"] + d_id + rng.normal(0, 0.01, base["identity"].shape),
            "prompt": base["prompt"] + d_p + rng.normal(0, 0.01, base["prompt"].shape),
        }
        for k in range(seeds)
    }
