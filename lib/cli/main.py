"""Entry point of the ``e3relax`` command: sub-commands are modules with ``add_parser(subparsers)``.

Each sub-command module defines ``add_parser(subparsers)`` which registers an ``argparse`` parser
whose ``func(args) -> int`` runs it. Modules are listed in ``SUBCOMMANDS`` and imported lazily so
``e3relax --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from e3relax.version import __version__

#: sub-command modules, in the order shown by --help
SUBCOMMANDS: list[str] = ["e3relax.cli.data", "e3relax.cli.train", "e3relax.cli.evaluate", "e3relax.cli.predict"]


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
