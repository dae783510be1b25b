"""Whether a run's training pairs overlap its evaluation pairs.

A pair's identity is its :data:`PairKey`: the reference files (resolved, so two spellings
of one path are one file) and the prompt (case and runs of whitespace ignored). A source
that lists its pairs (:class:`ListsPairs`: the file-based ones) can be checked before
anything is trained; :func:`check_eval_overlap` stops the run at start when an evaluation
pair is also a training pair (training on the evaluation set, as the paper's benchmarks
forbid), unless the user says so on purpose (``data.allow_eval_overlap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from cgrpo.config.errors import quoted, shorten

__all__ = ["ListsPairs", "PairKey", "check_eval_overlap", "eval_overlap", "pair_key"]

#: (resolved reference paths, normalised prompt)
PairKey = tuple[tuple[str, ...], str]


def pair_key(references: Sequence[Path], prompt: str) -> PairKey:
    """The identity of a (references, prompt) pair: the files' resolved paths and the
    prompt in lower case with its runs of whitespace made single spaces."""
    files = tuple(str(Path(p).resolve()) for p in references)
    return files, " ".join(prompt.lower().split())


@runtime_checkable
class ListsPairs(Protocol):
    """A pair source that can list the pairs it trains on and evaluates on."""

    def train_keys(self) -> set[PairKey]:
        """Every pair ``sample`` can draw."""
        ...

    def eval_keys(self) -> list[PairKey]:
        """The pairs of ``eval_pairs``, in its order."""
        ...


def eval_overlap(source: object) -> tuple[list[PairKey], int]:
    """(the evaluation pairs that are also training pairs, the number of evaluation pairs);
    nothing for a source that does not list its pairs (the embedded world, whose held-out
    subjects are disjoint from its training subjects by construction)."""
    if not isinstance(source, ListsPairs):
        return [], 0
    train, evaluation = source.train_keys(), source.eval_keys()
    return [k for k in evaluation if k in train], len(evaluation)


def check_eval_overlap(source: object, *, allow: bool) -> None:
    """Raise one line when ``source`` trains on any of its evaluation pairs, unless
    ``allow``."""
    both, total = eval_overlap(source)
    if not both or allow:
        return
    (files, prompt) = both[0]
    raise ValueError(
        f"the training pairs contain {len(both)} of the {total} evaluation pairs (first: "
        f"'{shorten(str(files[0]))}' with {quoted(prompt)}): the evaluation would score pairs "
        "the run trained on. "
        "Train on other pairs (e.g. SynCD: configs/uno_syncd.yaml) or evaluate elsewhere "
        "(data.eval_root), or set data.allow_eval_overlap=true if that is what you want"
    )
