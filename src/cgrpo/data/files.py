"""(reference image, prompt) pairs listed in a JSONL / JSON file, for the real-model tier.

All sources implement :class:`cgrpo.data.base.PairSource`:

- ``sample(n, rng) -> (references (n,3,S,S) float32 in [0,1], prompts)``
- ``eval_pairs() -> (references, prompts, names)``

Images are read with :func:`cgrpo.io.images.load_image` (``crop=True``): RGB, resized
so that the *shorter* side is ``image_size`` (bicubic) and centre-cropped to ``image_size`` x
``image_size``; subject photos (DreamBench) are roughly centred. With ``keep_aspect``
(``flux.reference_preprocess`` kontext or uno: the policy prepares each reference as its
model's pipeline does) and for pairs with several references, the batch is a
:class:`~cgrpo.data.references.ReferenceBatch`: the whole images, and the same square crops as
its view for the rewards.

* :class:`JsonlPairs`: a JSONL file (one object per line) or a JSON list of objects
  ``{"reference": path, "prompt": str, "target": path (optional)}`` (or
  ``"references": [path, ...]``: several subjects in one image, UNO; ``"image_paths"`` as
  in UNO's ``dreambench_multiip.json`` reads the same), the shape of what
  subject datasets provide; relative paths are resolved against ``image_root`` (default:
  the file's folder). ``fields`` renames keys, so a dataset's own list is read as it is:
  the paper's SynCD list (``train_1w_syncd_embedding.json``: ``ref_img``, ``text``,
  ``img``, ``id``, ... relative to the SynCD image folder) is
  ``fields={"reference": "ref_img", "prompt": "text", "target": "img", "name": "id"}``.
  ``target`` is checked and kept (``.entries``) but GRPO does not use it (it is online
  RL: the policy's own samples are scored).

The DreamBench folder is :mod:`cgrpo.data.dreambench`; training on one source and
evaluating on another is :class:`cgrpo.data.base.PairsWithEval`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cgrpo.config.errors import not_utf8, shorten
from cgrpo.data.overlap import PairKey, pair_key
from cgrpo.data.references import ReferenceBatch, References
from cgrpo.io.images import check_image, load_image, square_crop

__all__ = [
    "DatasetError",
    "FIELDS",
    "check_files",
    "JsonlPairs",
    "PairEntry",
    "load_reference",
    "reference_batch",
]

#: the record keys a pair file may rename with ``fields`` (our name -> the file's key)
FIELDS: tuple[str, ...] = ("reference", "references", "prompt", "target", "name")


class DatasetError(ValueError):
    """A data file is missing, empty, malformed or names an unreadable image."""


def load_reference(path: Path, image_size: int | None) -> torch.Tensor:
    """(3, S, S) float32 in [0, 1]: RGB, shorter side resized to S, centre crop, stored
    orientation (no EXIF rotation); ``image_size=None``: the whole image at its stored size.
    An unreadable file raises :class:`DatasetError`."""
    try:
        if image_size is None:
            return load_image(path, exif_transpose=False)
        return load_image(path, image_size, crop=True, exif_transpose=False)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


@dataclass(frozen=True)
class PairEntry:
    """One pair: its reference image(s) (several for UNO's multi-subject generation)."""

    references: tuple[Path, ...]
    prompt: str
    target: Path | None = None
    name: str = ""

    @property
    def reference(self) -> Path:
        return self.references[0]


def reference_batch(
    groups: list[tuple[Path, ...]],
    load: Callable[[Path, int | None], torch.Tensor],
    image_size: int,
    *,
    keep_aspect: bool,
) -> References:
    """The batch of the pairs whose reference files are ``groups``: a (B, 3, S, S) tensor of
    square crops when every pair has one reference and the aspect is not kept, else a
    :class:`~cgrpo.data.references.ReferenceBatch` (whole images when ``keep_aspect``; their
    square views are cropped from them in memory, each file is read once)."""
    if not keep_aspect:
        views = [[load(p, image_size) for p in g] for g in groups]
        if all(len(g) == 1 for g in groups):
            return torch.stack([v[0] for v in views])
        return ReferenceBatch.from_pairs(views, views)
    images = [[load(p, None) for p in g] for g in groups]
    views = [[square_crop(x, image_size) for x in g] for g in images]
    return ReferenceBatch.from_pairs(images, views)


def _read_records(path: Path) -> list[tuple[str, Any]]:
    """``(where, record)`` per pair: ``where`` is ``line N`` (1-based file line) in JSONL,
    ``item N`` (1-based) in a JSON list. The file is UTF-8 (a leading BOM is dropped)."""
    name = shorten(str(path))
    try:
        if not path.is_file():
            raise DatasetError(f"pair file not found: '{name}'")
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"pair file '{name}' cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"pair file '{name}' {not_utf8(raw, exc)}: save it as UTF-8") from None
    if not text.strip():
        raise DatasetError(f"pair file '{path}' is empty: expected JSONL or a JSON list of pairs")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DatasetError(f"'{path}' is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DatasetError(f"'{path}' must hold a JSON list of pair objects")
        return [(f"item {i}", rec) for i, rec in enumerate(data, 1)]
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {i}", json.loads(line)))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DatasetError(f"'{path}' line {i} is not valid JSON: {exc}") from None
    return records


def check_files(
    items: list[tuple[str, Path]], source: str, skip_bad: bool, *, fix: str
) -> set[str]:
    """Decode every image whole once (:func:`~cgrpo.io.images.check_image`: a truncated
    file, one PIL cannot decode or one over :data:`~cgrpo.io.images.MAX_PIXELS` is bad)
    before any compute, each file once however many entries name it:
    returns the ``where`` labels of the bad ones when ``skip_bad`` (and says how many were
    skipped), else raises one :class:`DatasetError` listing them all (up to 20) with ``fix``."""
    bad, seen = [], {}
    for where, path in items:
        if path not in seen:
            seen[path] = check_image(path)
        if seen[path] is not None:
            bad.append((where, path, seen[path]))
    if not bad:
        return set()
    if skip_bad:
        print(f"{source}: skipping {len(bad)} of {len(items)} entries with unreadable images "
              f"(first: {bad[0][0]}: '{bad[0][1]}')", flush=True)  # fmt: skip
        return {w for w, _, _ in bad}
    shown = "; ".join(f"{w}: '{p}' {why}" for w, p, why in bad[:20])
    more = f"; ... {len(bad) - 20} more" if len(bad) > 20 else ""
    raise DatasetError(
        f"{source}: {len(bad)} of {len(items)} entries name unreadable images: {shown}{more}. {fix}"
    )


class JsonlPairs:
    """Pairs listed in a JSONL / JSON file (see the module docstring for the schema).

    ``eval_pairs`` returns the first ``eval_count`` entries (use :class:`PairsWithEval` to
    evaluate on a separate benchmark instead). Every referenced file is decoded once at
    construction: an unreadable one is refused there, naming its line (or skipped with
    ``skip_bad``), not when a training step first draws it.
    """

    def __init__(
        self,
        path: str | Path,
        image_size: int = 512,
        eval_count: int = 16,
        *,
        skip_bad: bool = False,
        keep_aspect: bool = False,
        image_root: str | Path | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.image_size = image_size
        self.eval_count = eval_count
        self.keep_aspect = keep_aspect
        root = Path(image_root) if image_root is not None else self.path.parent
        if not root.is_dir():
            raise DatasetError(
                f"image folder of '{self.path}' not found: '{root}' (data.image_root)"
            )
        rename = _renaming(fields or {})

        def resolve(name: str) -> Path:
            p = Path(name)
            return p if p.is_absolute() else root / p

        entries, images = [], []
        for line, rec in _read_records(self.path):
            where = f"'{self.path}' {line}"
            if not isinstance(rec, dict):
                raise DatasetError(f"{where} is not an object")
            rec = {rename.get(k, k): v for k, v in rec.items()}
            refs = _reference_field(rec, where)
            if not isinstance(rec.get("prompt"), str):
                raise DatasetError(f"{where} needs a string field 'prompt'")
            if not rec["prompt"].strip():
                raise DatasetError(f"{where} has an empty prompt")
            files = tuple(resolve(r) for r in refs)
            target = resolve(rec["target"]) if rec.get("target") is not None else None
            images += [(line, f) for f in files] + ([(line, target)] if target else [])
            name = str(rec.get("name") or files[0].stem)
            entries.append((line, PairEntry(files, rec["prompt"], target, name)))
        if not entries:
            raise DatasetError(f"pair file '{self.path}' holds no pairs")
        bad = check_files(
            images, f"pair file '{self.path}'", skip_bad,
            fix="Fix or remove those lines, or set data.skip_bad=true to train without them.",
        )  # fmt: skip
        self.skipped = len({w for w, _ in entries if w in bad})
        self.entries: list[PairEntry] = [e for w, e in entries if w not in bad]
        if not self.entries:
            raise DatasetError(f"pair file '{self.path}': no entry with readable images is left")

    def __len__(self) -> int:
        return len(self.entries)

    def _batch(self, entries: list[PairEntry]) -> tuple[References, list[str]]:
        groups = [e.references for e in entries]
        refs = reference_batch(
            groups, load_reference, self.image_size, keep_aspect=self.keep_aspect
        )
        return refs, [e.prompt for e in entries]

    def sample(self, n: int, rng: random.Random) -> tuple[References, list[str]]:
        return self._batch([rng.choice(self.entries) for _ in range(n)])

    def eval_pairs(self) -> tuple[References, list[str], list[str]]:
        chosen = self.entries[: self.eval_count]
        refs, prompts = self._batch(chosen)
        return refs, prompts, [e.name for e in chosen]

    def train_keys(self) -> set[PairKey]:
        """Every pair :meth:`sample` can draw."""
        return {pair_key(e.references, e.prompt) for e in self.entries}

    def eval_keys(self) -> list[PairKey]:
        """The pairs of :meth:`eval_pairs` (the first ``eval_count``: training pairs too)."""
        return [pair_key(e.references, e.prompt) for e in self.entries[: self.eval_count]]


def _renaming(fields: dict[str, str]) -> dict[str, str]:
    """The file's key -> our key, from ``fields`` (our key -> the file's key)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DatasetError(f"data.fields: unknown field(s) {unknown}; choose from {list(FIELDS)}")
    return {theirs: ours for ours, theirs in fields.items() if theirs != ours}


def _reference_field(rec: dict[str, Any], where: str) -> list[str]:
    """A record's reference paths: ``"reference": path`` or ``"references": [path, ...]``
    (several subjects, UNO's multi-reference generation; ``"image_paths"``, the key of UNO's
    own lists such as ``datasets/dreambench_multiip.json``, is read the same), exactly one.
    A list under ``reference`` counts as ``references`` (the release's SynCD loader takes a
    path or a list under ``ref_img``)."""
    one = rec.get("reference")
    if isinstance(one, list):  # a list under 'reference' (SynCD's ref_img may be either)
        rec = {k: v for k, v in rec.items() if k != "reference"} | {"references": one}
        one = None
    lists = [k for k in ("references", "image_paths") if rec.get(k) is not None]
    many = rec[lists[0]] if len(lists) == 1 else None
    if (one is None) == (not lists) or len(lists) > 1:
        raise DatasetError(
            f"{where} needs exactly one of 'reference' (a path) and 'references' (a list of "
            "paths, several subjects; 'image_paths' as in UNO's lists)"
        )
    if one is not None:
        if not isinstance(one, str):
            raise DatasetError(f"{where}: 'reference' must be a string path")
        return [one]
    if not isinstance(many, list) or not many or not all(isinstance(r, str) for r in many):
        raise DatasetError(f"{where}: 'references' must be a non-empty list of string paths")
    return many
