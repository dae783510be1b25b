"""The held-out figure ``cgrpo pretrain`` writes beside the weights (``<out>.json``).

The flow-matching loss against the renderer's truth (no copy bias) on fixed pairs: for
each held-out identity ``prompts_per_subject`` seeded prompts, each pair at the 8 noise
levels ``sigmoid(z)`` with ``z`` the (i + 0.5) / 8 quantiles of N(0, 1) (a quadrature of
the training distribution) and its own fixed noise; and the same on as many pairs of
training identities. Both models of the report (the new weights and the shipped base) see
the same pairs and the same noise, so their figures are paired. The rewards of the base's
draws are ``cgrpo eval``'s business (a floor up); this figure needs none.
"""

from __future__ import annotations

import random
from statistics import NormalDist

import numpy as np
import torch

from cgrpo.world import scene
from cgrpo.world.generator import TinyKontext, Tokenizer
from cgrpo.world.split import SubjectSplit

__all__ = ["LEVELS", "loss_figures"]

#: noise levels of the figure: logit-normal(0, 1) quantiles
LEVELS = tuple(float(1 / (1 + np.exp(-NormalDist().inv_cdf((i + 0.5) / 8)))) for i in range(8))


def _pairs(
    subjects: list[scene.Subject], rng: random.Random
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    prompts = [scene.random_prompt(s, rng) for s in subjects]
    refs = np.stack([scene.reference_image(s) for s in subjects])
    truth = np.stack([scene.render(s, p) for s, p in zip(subjects, prompts, strict=True)])
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() * 2 - 1  # noqa: E731
    return [p.text for p in prompts], to(refs), to(truth)


@torch.no_grad()
def _loss(
    model: TinyKontext, pairs: tuple[list[str], torch.Tensor, torch.Tensor], seed: int
) -> float:
    prompts, refs, x0 = pairs
    tok = Tokenizer(model.config.max_text)
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for sigma in LEVELS:
        noise = torch.randn(x0.shape, generator=gen)
        for i in range(0, len(prompts), 64):
            sl = slice(i, i + 64)
            xt = (1 - sigma) * x0[sl] + sigma * noise[sl]
            s = torch.full((xt.shape[0],), sigma)
            v = model(xt, s, tok(prompts[sl]), reference=refs[sl])
            total += (v - (noise[sl] - x0[sl])).pow(2).mean(dim=(1, 2, 3)).sum().item()
            count += xt.shape[0]
    return total / count


def loss_figures(
    models: dict[str, TinyKontext],
    split: SubjectSplit,
    *,
    prompts_per_subject: int = 4,
    seed: int = 3407,
) -> dict[str, dict[str, float]]:
    """``{model name: {held_out_loss, train_loss}}`` on the fixed pairs of ``split``."""
    rng = random.Random(seed)
    held = [s for s in split.held_out for _ in range(prompts_per_subject)]
    held_pairs = _pairs(held, rng)
    train_pairs = _pairs([rng.choice(split.train) for _ in held], rng)
    out = {}
    for name, model in models.items():
        was_training = model.training
        model.eval()
        out[name] = {
            "held_out_loss": round(_loss(model, held_pairs, seed), 6),
            "train_loss": round(_loss(model, train_pairs, seed + 1), 6),
        }
        model.train(was_training)
    return out
