"""Entry point of the ``e3relax`` command: sub-commands are modules with ``add_parser(subparsers)``.

Each sub-command module defines ``add_parser(subparsers)`` which registers an ``argparse`` parser
whose ``func(args) -> int`` runs it. Modules are listed in ``SUBCOMMANDS`` and imported lazily so
``e3relax --help`` stays fast.

Errors a user can fix (:class:`e3relax.errors.UserError`, a missing file, an unreadable LMDB) are
printed as one line, ``e3relax <command>: error: <what and why>``, with exit status 2; ``--debug``
(before or after the sub-command) shows the traceback instead. A training run stopped by SIGINT or
SIGTERM exits with 130 or 143 after saving its state.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from e3relax.version import __version__

#: sub-command modules, in the order shown by --help
SUBCOMMANDS: list[str] = ["e3relax.cli.data", "e3relax.cli.train", "e3relax.cli.evaluate", "e3relax.cli.predict"]

#: exit status of a user error (same as argparse's for a bad command line)
USER_ERROR = 2


def _add_debug(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--debug`` on ``parser`` and, recursively, on every sub-command parser."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the full traceback of an error")
    for action in parser._actions:  # noqa: SLF001 - argparse keeps sub-parsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in set(action.choices.values()):
                _add_debug(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e3relax",
        description="Predict relaxed crystal structures in one forward pass (E3Relax and baselines).",
    )
    parser.add_argument("--version", action="version", version=f"e3relax {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    _add_debug(parser, top=True)
    return parser


def _command(args: argparse.Namespace) -> str:
    parts = ["e3relax", getattr(args, "command", None), getattr(args, "data_command", None)]
    return " ".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from e3relax.errors import Interrupted, user_message

    try:
        return int(args.func(args) or 0)
    except Interrupted as exc:
        print(f"{_command(args)}: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{_command(args)}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line, anything else is re-raised
        message = user_message(exc)
        if message is None or args.debug:
            raise
        print(f"{_command(args)}: error: {message}", file=sys.stderr, flush=True)
        return USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
