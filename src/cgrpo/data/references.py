"""A batch of reference images that need not share one size: :class:`ReferenceBatch`.

By default the datasets hand the trainer square references, one (B, 3, S, S) tensor
(shorter side resized to S, centre crop). The FLUX pipelines prepare a reference their own
way (``flux.reference_preprocess``: Kontext resizes it to its preferred resolution of the
image's aspect ratio, UNO to a long side of 512 or 320), and UNO takes several references
per pair. For those, the datasets keep each pair's references whole and give a
:class:`ReferenceBatch`:

* ``images[i]``: pair i's references, a tuple of (3, H, W) float tensors in [0, 1] at their
  stored size (what the policy prepares for its model);
* ``view``: the (B, 3, S, S) square view of each pair's *first* reference, exactly what the
  square datasets return (same loader, same crop). Rewards that compare with the reference
  and image grids read it; :meth:`views` gives the square view of every reference (a
  pair's reward against several references is the mean over them,
  :meth:`cgrpo.rewards.set.RewardSet.score`).

It indexes and repeats like the tensor it stands in for (``refs[idx]``,
``refs.repeat_interleave(G, dim=0)``, ``len``, ``.to``/``.cpu`` move the view), so the
trainer and the evaluator handle both alike; :func:`reward_view` gives the tensor either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["ReferenceBatch", "References", "count", "reward_view"]


@dataclass(frozen=True)
class ReferenceBatch:
    """Per pair, one or more reference images of any size, plus their square view."""

    images: tuple[tuple[torch.Tensor, ...], ...]
    view: torch.Tensor  # (B, 3, S, S): each pair's first reference, square
    extra_views: tuple[tuple[torch.Tensor, ...], ...] = ()  # per pair: views of refs 2..n

    def __post_init__(self) -> None:
        if len(self.images) != self.view.shape[0]:
            raise ValueError(
                f"ReferenceBatch: {len(self.images)} pairs of images but a view of "
                f"{self.view.shape[0]}"
            )
        if any(len(refs) == 0 for refs in self.images):
            raise ValueError("ReferenceBatch: every pair needs at least one reference image")
        if self.extra_views and len(self.extra_views) != len(self.images):
            raise ValueError("ReferenceBatch: extra_views must have one entry per pair")

    @classmethod
    def from_pairs(
        cls, images: Sequence[Sequence[torch.Tensor]], views: Sequence[Sequence[torch.Tensor]]
    ) -> ReferenceBatch:
        """From per-pair lists of full images and of their (3, S, S) square views."""
        first = torch.stack([v[0] for v in views])
        extra = tuple(tuple(v[1:]) for v in views)
        return cls(tuple(tuple(r) for r in images), first, extra if any(extra) else ())

    def __len__(self) -> int:
        return len(self.images)

    def _extra(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.extra_views[i] if self.extra_views else ()

    def __getitem__(self, idx: int | slice | Sequence[int] | torch.Tensor) -> ReferenceBatch:
        """The pairs ``idx`` (an int, a slice, a list or a tensor of indices, or a boolean
        mask), always as a batch (an int gives a batch of one)."""
        if isinstance(idx, slice):
            rows = list(range(len(self)))[idx]
        else:
            n, t = len(self), torch.as_tensor(idx).cpu()
            if t.dtype == torch.bool:
                if t.shape != (n,):
                    raise IndexError(f"a mask of shape {tuple(t.shape)} for {n} pairs")
                t = t.nonzero()
            values = [int(i) for i in t.reshape(-1).tolist()]
            if any(not -n <= i < n for i in values):
                raise IndexError(f"index out of range for a batch of {n} pairs: {values}")
            rows = [i % n for i in values]
        extra = tuple(self._extra(i) for i in rows)
        return ReferenceBatch(
            tuple(self.images[i] for i in rows),
            self.view[rows],
            extra if any(extra) else (),
        )

    def repeat_interleave(self, repeats: int, dim: int = 0) -> ReferenceBatch:
        if dim != 0:
            raise ValueError("ReferenceBatch repeats along the batch (dim 0) only")
        return self[[i for i in range(len(self)) for _ in range(repeats)]]

    def to(self, device: torch.device | str) -> ReferenceBatch:
        """The square views on ``device`` (the full images stay where they are: the policy
        prepares and moves them)."""
        extra = tuple(tuple(v.to(device) for v in views) for views in self.extra_views)
        return ReferenceBatch(self.images, self.view.to(device), extra)

    def cpu(self) -> ReferenceBatch:
        return self.to("cpu")

    def pair_views(self, i: int) -> tuple[torch.Tensor, ...]:
        """The square view of each of pair ``i``'s references."""
        return (self.view[i], *self._extra(i))

    @property
    def counts(self) -> list[int]:
        """References per pair."""
        return [len(r) for r in self.images]

    def views(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, view)``: the pairs that have a ``k``-th reference (0-based) and the
        (len(rows), 3, S, S) square view of it."""
        if k == 0:
            return torch.arange(len(self)), self.view
        rows = [i for i in range(len(self)) if len(self.images[i]) > k]
        if not rows:
            return torch.zeros(0, dtype=torch.long), self.view[:0]
        view = torch.stack([self._extra(i)[k - 1] for i in rows]).to(self.view.device)
        return torch.tensor(rows), view


#: What a data source hands the policy and the rewards: a square tensor or a batch.
References = torch.Tensor | ReferenceBatch


def reward_view(references: References) -> torch.Tensor:
    """The (B, 3, S, S) tensor rewards and grids read: the tensor itself, or the batch's
    square view of each pair's first reference."""
    return references.view if isinstance(references, ReferenceBatch) else references


def count(references: References) -> int:
    """Pairs in ``references``."""
    return len(references) if isinstance(references, ReferenceBatch) else references.shape[0]
