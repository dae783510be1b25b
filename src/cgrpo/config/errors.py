"""The one error of a bad config: unknown key, ill-typed value, bad file, malformed override.
Its message is one line naming the full dotted key and the fix.

Error lines quote the user's values through :func:`quoted` / :func:`shorten`, which cut a
long one (a 1 MB prompt, a pasted file) to :data:`QUOTE_LIMIT` characters and say how long
it was, so the line stays readable."""

from typing import Any

__all__ = ["QUOTE_LIMIT", "ConfigError", "not_utf8", "quoted", "shorten"]

#: The most characters of a user's value an error line shows.
QUOTE_LIMIT = 200


class ConfigError(ValueError):
    """A configuration problem: unknown key, ill-typed value, bad file or malformed override."""


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` itself when at most ``limit`` characters, else its first ``limit`` and
    ``... (N chars)``."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error line (one line: newlines show as ``\\n``), cut to
    ``limit`` characters of the value with ``... (N chars)`` after a longer one."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} chars)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    """What an error line says of ``data`` that failed to decode as UTF-8 (``exc``):
    ``is not UTF-8 text: byte 1234 (line 5) is 0xff``."""
    line = data.count(b"\n", 0, exc.start) + 1
    return f"is not UTF-8 text: byte {exc.start} (line {line}) is 0x{data[exc.start]:02x}"
