"""Training and evaluation pairs: (reference image, prompt).

A data source gives the trainer batches of pairs and a fixed held-out evaluation set:

- ``sample(n, rng) -> (references (n,3,H,W) in [0,1], prompts)``
- ``eval_pairs() -> (references, prompts, subject names)``
- optionally ``eval_truth() -> images``: the ground-truth image of each held-out pair
  (the embedded world renders it), so evaluations report the share of the gap closed; a
  source that has it is a :class:`HasEvalTruth` (checked with ``isinstance``)

:class:`EmbeddedData` draws them from the embedded world: training pairs from the training
subjects of a split, evaluation pairs from its held-out subjects with fixed prompts. The
split is the base generator's (:func:`cgrpo.world.split.read_split` of ``model.weights``);
by default the shipped one, 24 training and 8 held-out subjects.
"""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from cgrpo.data.overlap import ListsPairs, PairKey
from cgrpo.world import scene
from cgrpo.world.split import SubjectSplit, shipped_split


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """List of (H,W,3) arrays in [0,1] -> (B,3,H,W) float32 tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float()


class PairSource(Protocol):
    """Training pairs and the fixed held-out pairs (references, prompts, subject names)."""

    def sample(self, n: int, rng: random.Random) -> tuple[torch.Tensor, list[str]]: ...

    def eval_pairs(self) -> tuple[torch.Tensor, list[str], list[str]]: ...


@runtime_checkable
class HasEvalTruth(Protocol):
    """The optional capability of a pair source that knows each held-out pair's ground truth."""

    def eval_truth(self) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1]: the ground-truth image of each pair of ``eval_pairs()``,
        in its order."""
        ...


class EmbeddedData:
    """Pairs of the embedded subject world."""

    def __init__(
        self,
        attribute_prob: float = 0.45,
        eval_prompts_per_subject: int = 32,
        eval_seed: int = 3407,
        *,
        split: SubjectSplit | None = None,
    ) -> None:
        split = split or shipped_split()
        self.train_subjects, self.eval_subjects = list(split.train), list(split.held_out)
        self.attribute_prob = attribute_prob
        self.eval_prompts_per_subject = eval_prompts_per_subject
        self.eval_seed = eval_seed

    def sample(self, n: int, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
        subjects = [rng.choice(self.train_subjects) for _ in range(n)]
        prompts = [scene.random_prompt(s, rng, self.attribute_prob).text for s in subjects]
        return images_to_tensor([scene.reference_image(s) for s in subjects]), prompts

    def eval_pairs(self) -> tuple[torch.Tensor, list[str], list[str]]:
        rng = random.Random(self.eval_seed)
        refs, prompts, names = [], [], []
        for s in self.eval_subjects:
            for _ in range(self.eval_prompts_per_subject):
                refs.append(scene.reference_image(s))
                prompts.append(scene.random_prompt(s, rng, self.attribute_prob).text)
                names.append(s.name)
        return images_to_tensor(refs), prompts, names

    def eval_truth(self) -> torch.Tensor:
        """(N, 3, H, W): each held-out pair's ground truth, the renderer's image of its
        subject as its prompt asks (same order as :meth:`eval_pairs`)."""
        _, prompts, names = self.eval_pairs()
        return images_to_tensor(
            [
                scene.render(scene.subject_by_name(n), scene.parse_prompt(p))
                for p, n in zip(prompts, names, strict=True)
            ]
        )


class PairsWithEval:
    """Training pairs from ``train``, evaluation pairs from ``evaluation`` (SynCD ->
    DreamBench); it lists its pairs when both sources do."""

    def __init__(self, train: PairSource, evaluation: PairSource) -> None:
        self.train = train
        self.evaluation = evaluation

    def sample(self, n: int, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
        return self.train.sample(n, rng)

    def eval_pairs(self) -> tuple[torch.Tensor, list[str], list[str]]:
        return self.evaluation.eval_pairs()

    def train_keys(self) -> set[PairKey]:
        return self.train.train_keys() if isinstance(self.train, ListsPairs) else set()

    def eval_keys(self) -> list[PairKey]:
        ev = self.evaluation
        return ev.eval_keys() if isinstance(ev, ListsPairs) else []
