"""Command line: ``cgrpo train | pretrain | sample | export | setup | serve-reward | eval |
compare``.

Every command takes ``key=value`` overrides of its typed config (``section.key=value``
for nested keys); ``--help`` lists every key with its default, unit and meaning.

A command's config is read and checked before anything heavy loads: the config classes of
``train`` and ``eval`` import no torch (:mod:`cgrpo.config.lazy`), and each command's
modules are imported only when it runs, so a bad key is answered at once.

- :mod:`~cgrpo.cli.parser`: the argument parser.
- :mod:`~cgrpo.cli.commands`: what each command runs.
- :mod:`~cgrpo.cli.exit_codes`: every expected error as one line and an exit code.
"""

from __future__ import annotations

import sys

from cgrpo.cli.commands import COMMANDS
from cgrpo.cli.exit_codes import debug_requested, exit_code_of, one_line
from cgrpo.cli.parser import build_parser
from cgrpo.config.errors import shorten

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected error is one line on stderr and its exit code
    (:data:`~cgrpo.cli.exit_codes.EXIT_CODES`), an unexpected one its traceback."""
    ap = build_parser()
    # key=value overrides may come before and after flags (`run.steps=5 --quiet run.seed=2`)
    try:
        args, extra = ap.parse_known_args(argv)
    except SystemExit as done:  # --help, or a usage error (one line, see cli.parser)
        return done.code if isinstance(done.code, int) else 2
    if extra:
        # a word that is not a flag is an override (a malformed one is named by the config)
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            cmd = f"cgrpo {args.command}"
            print(
                f"{cmd}: error: unrecognized arguments: {shorten(' '.join(extra))} (a config "
                f"override is key=value); see {cmd} --help",
                file=sys.stderr,
            )
            return 2
        args.overrides += extra
    try:
        return COMMANDS[args.command](args)
    except BaseException as e:  # noqa: BLE001 -- sorted below; the rest re-raised
        code = exit_code_of(e)
        if code is None or debug_requested(args.debug):
            raise
        if code in (75, 130):  # a stop the user asked for, not an error
            print(f"cgrpo {args.command}: {one_line(e)}", file=sys.stderr)
        else:
            print(f"cgrpo {args.command}: error: {one_line(e)}", file=sys.stderr)
        return code
