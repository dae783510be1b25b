"""The one place where an error of a ``cgrpo`` command becomes one line on stderr and an
exit code (the table below; README "Exit codes" and docs/reliability.md list it).

An *expected* error is a bad input or a refused state the user fixes: its message already
names the key, file or value and the fix, so a traceback would only hide it. Every class
in :data:`EXIT_CODES` is expected; anything else is a bug and keeps its traceback.
``cgrpo --debug <command>`` or ``CGRPO_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from cgrpo.config.errors import quoted

__all__ = ["EXIT_CODES", "ExitCode", "debug_requested", "exit_code_of", "one_line", "table"]


@dataclass(frozen=True)
class ExitCode:
    """An exit code, what it means, and the error classes ("module:Class") that end in it."""

    code: int
    meaning: str
    classes: tuple[str, ...] = ()


#: The exit codes, most specific class first: the first row naming a class of the error's
#: MRO decides (classes are matched by name, so handling an error imports nothing).
EXIT_CODES = (
    ExitCode(0, "done"),
    ExitCode(
        4,
        "a reward server or judge failed (unreachable, timed out, refused, bad reply)",
        ("cgrpo.io.errors:ServiceError",),
    ),
    ExitCode(
        3,
        "the device or a resource is missing or exhausted (no GPU, out of memory, disk full)",
        ("cgrpo.io.errors:ResourceError", "torch:OutOfMemoryError", "builtins:MemoryError"),
    ),
    ExitCode(
        5,
        "training stopped (e.g. too many non-finite steps)",
        ("cgrpo.train.errors:TrainingError",),
    ),  # fmt: skip
    ExitCode(
        2,
        "bad input: config, data, image, checkpoint, path (nothing was started)",
        (
            "builtins:ValueError",
            "builtins:FileNotFoundError",
            "builtins:NotADirectoryError",
            "builtins:IsADirectoryError",
            "builtins:PermissionError",
            "builtins:FileExistsError",
        ),
    ),  # fmt: skip
    ExitCode(
        1,
        "another process of a distributed run failed (its line is printed); an unexpected "
        "error (a bug: its traceback)",
        ("cgrpo.run.distributed:ProcessFailed",),
    ),  # fmt: skip
    ExitCode(
        75,
        "stopped by SIGTERM, SIGUSR1 or Ctrl-C with a checkpoint: run the same command with "
        "--resume",
        ("cgrpo.train.preemption:Preempted", "cgrpo.io.interrupts:StopRequested"),
    ),
    ExitCode(
        130,
        "stopped at once by a second Ctrl-C (no checkpoint of the step in flight)",
        ("builtins:KeyboardInterrupt",),
    ),  # fmt: skip
)

#: OSError numbers that mean a resource ran out (exit 3), not a bad path.
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM}


def debug_requested(flag: bool = False) -> bool:
    """Whether tracebacks are wanted: ``--debug`` or ``CGRPO_DEBUG`` set to anything but
    ``""`` / ``0``."""
    return flag or os.environ.get("CGRPO_DEBUG", "") not in ("", "0")


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code of an expected error, or None for an unexpected one (a bug).
    An :class:`OSError` counts when it names a file (a path the user gave) or a resource
    that ran out (no space: exit 3)."""
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return 3
    names = {f"{c.__module__}:{c.__qualname__}" for c in type(exc).__mro__}  # (no imports)
    for row in EXIT_CODES:
        if names.intersection(row.classes):
            return row.code
    if isinstance(exc, OSError) and exc.filename is not None:
        return 2
    return None


def one_line(exc: BaseException) -> str:
    """The error's message as one line: an OSError as ``<what>: '<file>'``, any other as its
    message with line breaks folded."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        what = exc.strerror or type(exc).__name__
        text = f"{what}: {quoted(str(exc.filename))}"
        if exc.errno in _RESOURCE_ERRNOS:
            text += "; free space there (or point the path elsewhere) and run again"
    elif isinstance(exc, KeyboardInterrupt):
        text = (
            "stopped at once by a second Ctrl-C; the last checkpoint written is kept (cgrpo "
            "train --resume continues from it)"
        )
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def table() -> str:
    """The exit codes as the Markdown table README and docs/reliability.md show."""
    rows = sorted(EXIT_CODES, key=lambda r: r.code)
    lines = [f"| {r.code} | {r.meaning} |" for r in rows]
    return "\n".join(["| code | meaning |", "|---|---|", *lines])
