"""The competing pair: the two rewards (identity, prompt following) that SARS couples and
TDW weights by step (``method.pair``; in this order: the identity role, then the prompt
role). :func:`check_pair` is the one check that a strategy's pair is there, used by the
config (before anything loads) and by the strategies themselves (called as a library).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["DEFAULT_PAIR", "check_distinct", "check_pair"]

#: ``method.pair``'s default: the paper's identity and prompt-following rewards.
DEFAULT_PAIR: tuple[str, str] = ("identity", "prompt")


def check_distinct(pair: Sequence[str]) -> None:
    """ValueError unless ``pair`` is two different names (whether or not a strategy uses it)."""
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ValueError(f"method.pair must name two different rewards, got {list(pair)}")


def check_pair(pair: Sequence[str], names: Iterable[str], *, needed_by: str) -> None:
    """ValueError unless ``pair`` is two different names, both among ``names``.

    ``needed_by`` names the strategy in the message (e.g. ``method.shaping=sars``)."""
    names = list(names)
    check_distinct(pair)
    missing = [n for n in pair if n not in names]
    if missing:
        raise ValueError(
            f"{needed_by} needs the rewards of method.pair {list(pair)}; "
            f"{missing} missing from rewards {names}: set method.pair to two of them"
        )
