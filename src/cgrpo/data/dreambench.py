"""The DreamBench folder as a pair source (``../shared/data/dreambench``, see its SOURCE.md):
30 subjects, one reference each from ``single_reference.json``, 25 prompts per subject from
``prompts_and_classes.txt`` with the class word in place of ``"{unique_token} {class}"``
(object prompts, or live-subject prompts for cats and dogs): the single-reference protocol
of UNO and Customized-GRPO (30 x 25 = 750 pairs)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch

from cgrpo.data.files import DatasetError, check_files, load_reference, reference_batch
from cgrpo.data.overlap import PairKey, pair_key
from cgrpo.data.references import References

__all__ = ["DreamBenchPairs", "LIVE_CLASSES"]


LIVE_CLASSES = frozenset({"cat", "dog"})
_PROMPT_LINE = re.compile(r"""^\s*['"](.*)['"]\s*\.format\(""")


def _parse_prompts_and_classes(path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """(subject -> class, object templates, live-subject templates) with ``{0} {1}`` kept."""
    if not path.is_file():
        raise DatasetError(f"DreamBench prompt file not found: '{path}'")
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {"object": [], "live": []}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s.startswith("Object Prompts"):
            current = "object"
        elif s.startswith("Live Subject Prompts"):
            current = "live"
        elif current is None and "," in s and s != "subject_name,class":
            subject, cls = s.split(",", 1)
            classes[subject.strip()] = cls.strip()
        elif current is not None:
            m = _PROMPT_LINE.match(s)
            if m:
                lists[current].append(m.group(1))
    if not classes or not lists["object"] or not lists["live"]:
        raise DatasetError(
            f"'{path}' does not look like DreamBench's prompts_and_classes.txt "
            "(class table, 'Object Prompts' and 'Live Subject Prompts' lists)"
        )
    return classes, lists["object"], lists["live"]


class DreamBenchPairs:
    """DreamBench, single-reference protocol (UNO / Customized-GRPO): 30 x 25 pairs.

    ``sample`` draws a random subject and one of its 25 prompts; ``eval_pairs`` gives
    ``prompts_per_subject`` prompts per subject (25: the full 750-pair protocol; fewer:
    evenly spaced over the list, so background, outfit and property prompts all appear).
    Reference images are loaded once and kept (30 images).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 512,
        prompts_per_subject: int = 25,
        *,
        keep_aspect: bool = False,
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.keep_aspect = keep_aspect
        if not self.root.is_dir():
            raise DatasetError(f"DreamBench folder not found: '{self.root}'")
        ref_file = self.root / "single_reference.json"
        if not ref_file.is_file():
            raise DatasetError(f"DreamBench reference list not found: '{ref_file}'")
        try:
            refs = json.loads(ref_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"'{ref_file}' is not valid JSON: {exc}") from None
        classes, obj, live = _parse_prompts_and_classes(self.root / "prompts_and_classes.txt")
        self.subjects: list[str] = sorted(refs)
        self.classes: dict[str, str] = {}
        self.references: dict[str, Path] = {}
        self.prompts: dict[str, list[str]] = {}
        for s in self.subjects:
            if s not in classes:
                raise DatasetError(f"subject '{s}' of '{ref_file}' has no class in the table")
            path = self.root / s / refs[s]
            cls = classes[s]
            templates = live if cls in LIVE_CLASSES else obj
            self.classes[s] = cls
            self.references[s] = path
            self.prompts[s] = [t.replace("{0} {1}", cls) for t in templates]
        n = len(obj)
        if not 1 <= prompts_per_subject <= n:
            raise DatasetError(
                f"prompts_per_subject must be in [1, {n}], got {prompts_per_subject}"
            )
        self.prompts_per_subject = prompts_per_subject
        check_files(
            [(f"subject '{s}'", self.references[s]) for s in self.subjects],
            f"DreamBench folder '{self.root}'", False,
            fix="Restore those files (see the folder's SOURCE.md) or remove the subjects from "
            "single_reference.json.",
        )  # fmt: skip
        self._images: dict[tuple[Path, int | None], torch.Tensor] = {}

    def _load(self, path: Path, size: int | None) -> torch.Tensor:
        if (path, size) not in self._images:  # 30 references: each loaded once per size
            self._images[path, size] = load_reference(path, size)
        return self._images[path, size]

    def image(self, subject: str) -> torch.Tensor:
        """The subject's square reference (3, S, S)."""
        return self._load(self.references[subject], self.image_size)

    def _refs(self, subjects: list[str]) -> References:
        groups = [(self.references[s],) for s in subjects]
        return reference_batch(groups, self._load, self.image_size, keep_aspect=self.keep_aspect)

    def eval_indices(self) -> list[int]:
        n, k = len(self.prompts[self.subjects[0]]), self.prompts_per_subject
        return [i * n // k for i in range(k)]

    def sample(self, n: int, rng: random.Random) -> tuple[References, list[str]]:
        subjects = [rng.choice(self.subjects) for _ in range(n)]
        prompts = [rng.choice(self.prompts[s]) for s in subjects]
        return self._refs(subjects), prompts

    def eval_pairs(self) -> tuple[References, list[str], list[str]]:
        idx = self.eval_indices()
        names = [s for s in self.subjects for _ in idx]
        prompts = [self.prompts[s][i] for s in self.subjects for i in idx]
        return self._refs(names), prompts, names

    def train_keys(self) -> set[PairKey]:
        """Every pair :meth:`sample` can draw: each subject with each of its prompts."""
        return {pair_key((self.references[s],), p) for s in self.subjects for p in self.prompts[s]}

    def eval_keys(self) -> list[PairKey]:
        """The pairs of :meth:`eval_pairs`, in its order."""
        idx = self.eval_indices()
        return [
            pair_key((self.references[s],), self.prompts[s][i]) for s in self.subjects for i in idx
        ]
