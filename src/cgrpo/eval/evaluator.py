"""Held-out evaluation: the one code path of training's base / trained evaluation and of
``cgrpo eval``.

- **Pairs**: (reference, prompt, subject, prompt index) of a protocol (:class:`EvalPairs`).
- **Images**: ``images_per_pair`` per pair, item ``j = i * images_per_pair + k`` is draw
  ``k`` of pair ``i``, sampled deterministically (Euler ODE on the run's sigma schedule, or
  one at another shift; with the policy's guidance, or another one) from its own noise,
  seeded by ``(seed, i, k)`` alone (:func:`image_seed`): an image does not depend on its
  batch, the process count, or which command drew it.
- **Micro-batches**: a batch's images are drawn ``micro_batch_size`` at a time (condition,
  sampling and decoding), so the models never see more than that many; the images are
  the same for any micro-batch size (bit for bit on CPU; a GPU may pick other kernels for
  another batch size). Drawing runs under ``torch.no_grad()`` and leaves
  the policy as it is (a FLUX LoRA is applied unmerged, as in training).
- **Scores**: the images are quantised to 8 bits (:func:`quantize`, exactly what a PNG
  holds) and scored by named metrics (a :class:`~cgrpo.rewards.set.RewardSet`), so scores
  computed from PNG files on disk equal scores computed in memory.
- **Processes**: every process draws every ``world``-th item (padded to equal counts, so
  a sharded policy's collectives stay in step); scores are gathered, so the figures do not
  depend on the number of processes.

:class:`EvalResult.summary` is what ``eval.json`` (training) and ``metrics.json``
(``cgrpo eval``) hold per model: per-metric means and stds and the per-image values, so
two evaluations of the same pairs compare image by image (paired standard errors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm import tqdm

from cgrpo.data.base import HasEvalTruth, PairSource
from cgrpo.io.images import to_uint8
from cgrpo.policies.base import HasGuidance, Policy
from cgrpo.rewards.set import RewardSet
from cgrpo.run.build import eval_sigmas
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist
from cgrpo.sampling.rollout import sample_ode
from cgrpo.sampling.sde import sigma_schedule

__all__ = [
    "build_evaluator",
    "eval_pairs_of",
    "EvalError",
    "EvalPairs",
    "EvalResult",
    "Evaluator",
    "guidance_context",
    "ImageStore",
    "grid_items",
    "image_seed",
    "quantize",
    "to_uint8",
]


class EvalError(ValueError):
    """The evaluation cannot run as configured; the message names the setting and the fix."""


@dataclass
class EvalPairs:
    """The protocol's pairs; ``prompt_index``: the prompt's index within its subject."""

    references: torch.Tensor  # (N, 3, H, W) in [0, 1]
    prompts: list[str]
    subjects: list[str]
    prompt_index: list[int]
    truth: torch.Tensor | None = None  # (N, 3, H, W): each pair's ground truth, if known

    @classmethod
    def from_lists(
        cls,
        references: torch.Tensor,
        prompts: list[str],
        subjects: list[str],
        *,
        truth: torch.Tensor | None = None,
    ) -> EvalPairs:
        """Pairs whose prompt index counts each subject's prompts in order."""
        seen: dict[str, int] = {}
        index = []
        for s in subjects:
            index.append(seen.get(s, 0))
            seen[s] = index[-1] + 1
        return cls(references, list(prompts), list(subjects), index, truth)

    def __len__(self) -> int:
        return len(self.prompts)


def image_seed(seed: int, pair: int, k: int) -> int:
    """The noise seed of draw ``k`` of pair ``pair``: ``seed * 1_000_003 + pair * 1_009 + k``."""
    return seed * 1_000_003 + pair * 1_009 + k


def guidance_context(
    policy: Policy, guidance: float | None
) -> contextlib.AbstractContextManager[None]:
    """The policy's forwards within get guidance ``guidance`` (None: the policy's own);
    EvalError when a value is given for a policy without a guidance embedding."""
    if guidance is None:
        return contextlib.nullcontext()
    if not isinstance(policy, HasGuidance):
        raise EvalError(
            f"guidance={guidance}: this policy has no guidance embedding (the embedded "
            "generator); leave guidance null"
        )
    return policy.guidance_set_to(guidance)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """``to_uint8(x) / 255`` in float32: what reading the PNG back gives."""
    return to_uint8(images).float() / 255


class ImageStore(Protocol):
    """Where ``cgrpo eval`` keeps its images (resumable): item -> 8-bit image file."""

    def load(self, item: int) -> torch.Tensor | None: ...

    def save(self, item: int, image: torch.Tensor) -> None: ...


@dataclass
class EvalResult:
    """Per-image scores of one evaluation (item order), and images kept for a grid."""

    per_image: dict[str, torch.Tensor]
    pairs: int
    images_per_pair: int
    kept: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.per_image)

    def mean(self, name: str) -> float:
        return float(self.per_image[name].double().mean())

    def summary(self) -> dict[str, Any]:
        """``{overall, overall_std, pairs, images, images_per_pair, per_image}``."""
        n = self.pairs * self.images_per_pair
        return {
            "overall": {k: self.mean(k) for k in self.per_image},
            "overall_std": {
                k: float(v.double().std()) if n > 1 else 0.0 for k, v in self.per_image.items()
            },
            "pairs": self.pairs,
            "images": n,
            "images_per_pair": self.images_per_pair,
            "per_image": {k: [round(float(x), 6) for x in v] for k, v in self.per_image.items()},
        }


def grid_items(pairs: EvalPairs, images_per_pair: int, subjects: int = 8, *, prompts: int = 8):
    """Items of a grid: the first draw of up to ``prompts`` prompts of up to ``subjects``
    subjects, in pair order; returns (items, row length)."""
    rows: dict[str, list[int]] = {}
    for i, s in enumerate(pairs.subjects):
        if (s in rows or len(rows) < subjects) and len(rows.setdefault(s, [])) < prompts:
            rows[s].append(i * images_per_pair)
    if not rows:
        return [], 0
    width = min(len(v) for v in rows.values())
    return [j for v in rows.values() for j in v[:width]], width


class Evaluator:
    """Draws and scores the items of ``pairs`` for a policy (see the module docstring)."""

    def __init__(
        self,
        pairs: EvalPairs,
        metrics: RewardSet,
        sigmas: torch.Tensor,
        *,
        seed: int,
        images_per_pair: int = 1,
        batch_size: int = 64,
        dist: Dist | None = None,
        guidance: float | None = None,
        micro_batch_size: int = 0,
        solver: str = "euler",
    ) -> None:
        """``batch_size``: images drawn and scored per batch; ``micro_batch_size``: images
        per pass of the models within a batch (0: the whole batch); ``solver``: the ODE
        solver that draws (:data:`~cgrpo.sampling.ode_solvers.ODE_SOLVERS`)."""
        if images_per_pair < 1 or batch_size < 1:
            raise EvalError(
                f"images per pair ({images_per_pair}) and batch size ({batch_size}) must be >= 1"
            )
        if micro_batch_size < 0:
            raise EvalError(f"micro batch size must be >= 0 (0: the batch), got {micro_batch_size}")
        if len(pairs) == 0:
            raise EvalError("the evaluation has no pairs; check the protocol's data")
        self.pairs, self.metrics, self.sigmas = pairs, metrics, sigmas
        self.seed, self.k, self.batch_size = seed, images_per_pair, batch_size
        self.dist = dist or Dist()
        self.guidance = guidance  # None: the policy's own
        self.micro_batch_size = micro_batch_size
        self.solver = solver

    @property
    def num_items(self) -> int:
        return len(self.pairs) * self.k

    @torch.no_grad()
    def truth_summary(self) -> dict[str, Any] | None:
        """The ground truth's scores (8-bit, as the samples), each pair's repeated for its
        ``images_per_pair`` items: ``{overall, per_image}``; None without a ground truth."""
        if self.pairs.truth is None:
            return None
        per: dict[str, list[torch.Tensor]] = {}
        for lo in range(0, len(self.pairs), self.batch_size):
            sl = slice(lo, lo + self.batch_size)
            scores = self.metrics.score(
                quantize(self.pairs.truth[sl]), self.pairs.prompts[sl], self.pairs.references[sl]
            )
            for name, v in scores.items():
                per.setdefault(name, []).append(v.double())
        values = {k: torch.cat(v).repeat_interleave(self.k) for k, v in per.items()}
        res = EvalResult(values, len(self.pairs), self.k)
        s = res.summary()
        return {"overall": s["overall"], "per_image": s["per_image"]}

    def noise(self, items: list[int], shape: tuple[int, ...]) -> torch.Tensor:
        """The initial noise of each item (float32, CPU), from its own seed."""
        return torch.stack(
            [
                torch.randn(
                    shape,
                    generator=torch.Generator().manual_seed(
                        image_seed(self.seed, j // self.k, j % self.k)
                    ),
                )
                for j in items
            ]
        )

    @torch.no_grad()
    def _draw(self, policy: Policy, items: list[int]) -> torch.Tensor:
        """The 8-bit images of ``items``, ``micro_batch_size`` at a time (CPU)."""
        mb = self.micro_batch_size or len(items)
        return torch.cat(
            [self._draw_micro(policy, items[lo : lo + mb]) for lo in range(0, len(items), mb)]
        )

    def _draw_micro(self, policy: Policy, items: list[int]) -> torch.Tensor:
        pair = [j // self.k for j in items]
        cond = policy.encode_condition(
            self.pairs.references[pair], [self.pairs.prompts[i] for i in pair]
        )
        noise = self.noise(items, tuple(policy.latent_shape())).to(policy.device)
        with guidance_context(policy, self.guidance):
            latents = sample_ode(policy, cond, self.sigmas, noise=noise, solver=self.solver)
        return quantize(policy.decode(latents)).cpu()

    @torch.no_grad()
    def run(
        self,
        policy: Policy,
        store: ImageStore | None = None,
        keep: Iterable[int] = (),
        *,
        quiet: bool = True,
        desc: str = "eval",
    ) -> EvalResult:
        """Every item's scores; images of the items in ``keep`` are returned in ``kept``.

        With a ``store`` (single process only), images already stored are read instead of
        drawn, and drawn ones are stored."""
        if store is not None and self.dist.world > 1:
            raise EvalError("a resumable image folder is for one process; run cgrpo eval alone")
        keep = set(keep)
        mine, real = self.dist.padded_share(self.num_items)
        bar = tqdm(total=real, desc=desc, disable=quiet or not self.dist.is_main, mininterval=2)
        rows: list[tuple[int, list[float], torch.Tensor | None]] = []
        for lo in range(0, len(mine), self.batch_size):
            batch = mine[lo : lo + self.batch_size]
            images = self._batch_images(policy, batch, store)
            n = max(0, min(len(batch), real - lo))  # the padding is drawn, never scored
            if n == 0:
                continue
            batch, images = batch[:n], images[:n]
            pair = [j // self.k for j in batch]
            scores = self.metrics.score(
                images, [self.pairs.prompts[i] for i in pair], self.pairs.references[pair]
            )
            for name, v in scores.items():
                if not torch.isfinite(v).all():
                    bad = [batch[t] for t in torch.nonzero(~torch.isfinite(v)).flatten()][:3]
                    raise EvalError(
                        f"metric {name!r} gave a non-finite value for items {bad} (pairs "
                        f"{[self.pairs.subjects[j // self.k] for j in bad]}); check the reward"
                    )
            for t, j in enumerate(batch):
                vals = [float(scores[name][t]) for name in scores]
                rows.append((j, vals, images[t] if j in keep else None))
            bar.update(n)
        bar.close()
        rows = sorted(self.dist.gather_objects(rows), key=lambda r: r[0])
        names = self.metrics.names
        per_image = {
            name: torch.tensor([r[1][c] for r in rows], dtype=torch.float64)
            for c, name in enumerate(names)
        }
        kept = {r[0]: r[2] for r in rows if r[2] is not None}
        return EvalResult(per_image, len(self.pairs), self.k, kept)

    def _batch_images(
        self, policy: Policy, batch: list[int], store: ImageStore | None
    ) -> torch.Tensor:
        if store is None:
            return self._draw(policy, batch)
        found = {j: store.load(j) for j in batch}
        todo = [j for j in batch if found[j] is None]
        if todo:
            for j, img in zip(todo, self._draw(policy, todo), strict=True):
                store.save(j, img)
                found[j] = img
        return torch.stack([found[j] for j in batch])


def eval_pairs_of(data: PairSource) -> EvalPairs:
    """The held-out pairs of a pair source (with their ground truth where it has one)."""
    refs, prompts, subjects = data.eval_pairs()
    truth = data.eval_truth() if isinstance(data, HasEvalTruth) else None
    return EvalPairs.from_lists(refs, prompts, subjects, truth=truth)


def build_evaluator(
    cfg: TrainConfig,
    pairs: EvalPairs,
    metrics: RewardSet,
    *,
    dist: Dist | None = None,
    images_per_pair: int = 0,
    steps: int = 0,
    seed: int | None = None,
    batch_size: int = 0,
    shift: float | None = None,
    guidance: float | None = None,
    micro_batch_size: int = 0,
    ode_solver: str | None = None,
) -> Evaluator:
    """The run's held-out evaluator: :func:`eval_sigmas`, noise seed ``data.eval_seed``,
    ``data.eval_noises`` images per pair, ``run.eval_batch_size``,
    ``run.eval_micro_batch_size``, the policy's guidance, ``sampler.ode_solver``;
    each of the keyword settings replaces the run's when given (non-zero / not None):
    ``shift`` draws on the run's number of steps at that time shift instead of
    ``sampler.shift``."""
    sigmas = eval_sigmas(cfg, steps)
    if shift is not None:
        sigmas = sigma_schedule(len(sigmas) - 1, shift)
    return Evaluator(
        pairs,
        metrics,
        sigmas,
        seed=cfg.data.eval_seed if seed is None else seed,
        images_per_pair=images_per_pair or cfg.data.eval_noises,
        batch_size=batch_size or cfg.run.eval_batch_size,
        dist=dist,
        guidance=guidance,
        micro_batch_size=micro_batch_size or cfg.run.eval_micro_batch_size,
        solver=ode_solver or cfg.sampler.ode_solver,
    )
