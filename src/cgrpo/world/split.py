"""Which subject identities a base generator was pretrained on, and which it never saw.

Two splits of the 256 identities (8 shapes x 8 colours x 4 patterns):

- ``shipped``: :func:`cgrpo.world.scene.all_subjects`, 24 training identities and 8 held
  out (one per shape); the shipped base was pretrained on it.
- ``wide``: :func:`wide_split`, every identity but ``held_out`` of them trains (224 of 256
  with the default 32). The held-out set holds the shipped split's 8 held-out identities
  and none of its 24 training ones, so the shipped base never saw any of it either: both
  bases can be scored on either held-out set.

The split travels with the weights: :func:`split_metadata` is written into the weights
file's metadata beside the generator config (``cgrpo pretrain``), and :func:`read_split`
reads it back for whoever needs the subjects (the embedded pairs of a run and of
``cgrpo eval``). A file without it (the shipped base) has the shipped split.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from cgrpo.world import scene
from cgrpo.world.weights_file import read_metadata

__all__ = [
    "SubjectSplit",
    "make_split",
    "read_split",
    "shipped_held_out",
    "split_metadata",
    "wide_split",
]

#: metadata keys of the weights file (JSON lists of subject names, and the split's name)
TRAIN_KEY, HELD_OUT_KEY, NAME_KEY = "subjects_train", "subjects_held_out", "subjects_split"


@dataclass(frozen=True)
class SubjectSplit:
    """Training and held-out identities (disjoint), in a fixed order."""

    train: tuple[scene.Subject, ...]
    held_out: tuple[scene.Subject, ...]
    name: str = "shipped"


def shipped_split() -> SubjectSplit:
    """The split the shipped base was pretrained on (24 / 8)."""
    train, held = scene.all_subjects()
    return SubjectSplit(tuple(train), tuple(held), "shipped")


def wide_split(held_out: int = 32, seed: int = 0) -> SubjectSplit:
    """Hold out ``held_out`` identities (a multiple of 8: as many per shape), train on the rest.

    The held-out set starts from the shipped split's 8 held-out identities and never takes
    one of its 24 training identities; the others are drawn per shape in a seeded order,
    each time the candidate whose colour, then pattern, is least held out so far (so
    colours and patterns spread evenly). Training identities keep the order of
    ``itertools.product(SHAPES, COLOURS, PATTERNS)``.
    """
    per_shape, rest = divmod(held_out, len(scene.SHAPES))
    if rest or not 1 <= per_shape <= 16:
        raise ValueError(
            f"held_out must be a multiple of {len(scene.SHAPES)} between 8 and 128 (as many "
            f"per shape; at least half of each shape's identities train), got {held_out}"
        )
    shipped_train, shipped_held = scene.all_subjects()
    held = list(shipped_held)
    combos = [scene.Subject(s, c, p) for s, c, p in itertools.product(
        scene.SHAPES, scene.COLOURS, scene.PATTERNS)]  # fmt: skip
    order = list(combos)
    random.Random(seed).shuffle(order)
    for shape in scene.SHAPES:
        while sum(h.shape == shape for h in held) < per_shape:
            options = [o for o in order if o.shape == shape and o not in held
                       and o not in shipped_train]  # fmt: skip
            held.append(min(options, key=lambda o: (
                sum(h.colour == o.colour for h in held),
                sum(h.pattern == o.pattern for h in held),
            )))  # fmt: skip
    taken = set(held)
    train = tuple(c for c in combos if c not in taken)
    return SubjectSplit(train, tuple(held), f"wide-{held_out}-seed{seed}")


def shipped_held_out(split: SubjectSplit, where: str = "the base") -> SubjectSplit:
    """``split``'s training subjects with the shipped split's 8 held-out identities as its
    held-out set (in the shipped order): every split made here holds them out, so runs from
    different bases can be scored on the same pairs. A split that trained on one of them
    is refused."""
    _, held = scene.all_subjects()
    trained = set(split.train)
    seen = [h.name for h in held if h in trained]
    if seen:
        raise ValueError(
            f"data.eval_split=shipped: {where} was trained on {', '.join(seen)}, which the "
            "shipped evaluation holds out; use data.eval_split=base"
        )
    return SubjectSplit(split.train, tuple(held), f"{split.name}, shipped held-out")


def make_split(kind: str = "shipped", held_out: int = 32) -> SubjectSplit:
    """The split named by ``cgrpo pretrain``'s ``subjects`` setting."""
    if kind == "shipped":
        return shipped_split()
    if kind == "wide":
        return wide_split(held_out)
    raise ValueError(f"unknown subject split {kind!r}; valid: shipped, wide")


def split_metadata(split: SubjectSplit) -> dict[str, str]:
    """The split as weights-file metadata entries."""
    return {
        NAME_KEY: split.name,
        TRAIN_KEY: json.dumps([s.name for s in split.train]),
        HELD_OUT_KEY: json.dumps([s.name for s in split.held_out]),
    }


def split_from_metadata(meta: dict[str, str], where: str = "weights") -> SubjectSplit:
    """The split written by :func:`split_metadata`; the shipped split when ``meta`` has none."""
    if TRAIN_KEY not in meta and HELD_OUT_KEY not in meta:
        return shipped_split()
    try:
        train = tuple(scene.subject_by_name(n) for n in json.loads(meta[TRAIN_KEY]))
        held = tuple(scene.subject_by_name(n) for n in json.loads(meta[HELD_OUT_KEY]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}: its subject split ({TRAIN_KEY}, {HELD_OUT_KEY}) cannot be read "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); re-create "
            "the file with `cgrpo pretrain`"
        ) from exc
    both = sorted(s.name for s in set(train) & set(held))
    if not train or not held or both:
        raise ValueError(
            f"{where}: its subject split needs training and held-out subjects and no subject "
            f"in both ({len(train)} training, {len(held)} held out, in both: {both[:3]})"
        )
    return SubjectSplit(train, held, meta.get(NAME_KEY, "custom"))


def read_split(weights: str | Path | None = None) -> SubjectSplit:
    """The subject split of a weights file (default: the shipped base), read from its
    metadata (the header only); the shipped split when the file does not record one."""
    where = f"generator weights '{weights}'" if weights else "the shipped base"
    return split_from_metadata(read_metadata(weights), where)
