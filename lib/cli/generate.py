"""``e3relax data generate``: build the built-in dataset (or a larger one) with the generator.

The data command hooks this in as a sub-sub-command::

    from e3relax.cli.generate import add_generate_arguments, run_generate
    p = data_sub.add_parser("generate", help=...)
    add_generate_arguments(p)
    p.set_defaults(func=run_generate)
"""
from __future__ import annotations

import argparse
import logging

__all__ = ["add_generate_arguments", "run_generate"]

logger = logging.getLogger(__name__)


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the generator's options to ``parser`` and return it."""
    from e3relax.datasets.prototypes import PROTOTYPES

    parser.add_argument("--n", type=int, default=300, help="number of items (indices 0..n-1); default 300")
    parser.add_argument("--seed", type=int, default=0, help="seed; item i depends only on (seed, i); default 0")
    parser.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one thread each; default 1")
    parser.add_argument("--relaxer", default="chgnet", choices=["chgnet", "emt"],
                        help="interatomic potential; 'emt' only knows Al Cu Ag Au Ni Pd Pt (tests)")
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence, eV/A; default 0.05")
    parser.add_argument("--max-steps", type=int, default=500, help="FIRE step cap; default 500")
    parser.add_argument("--strain", type=float, default=0.08, help="max strain component; default 0.08")
    parser.add_argument("--rattle", type=float, default=0.1, help="rattle std per component, A; default 0.1")
    parser.add_argument("--prototypes", nargs="+", default=None, choices=sorted(PROTOTYPES),
                        help="restrict to these prototypes (default: all)")
    parser.add_argument("--elements", nargs="+", default=None, help="restrict element choices to these symbols")
    parser.add_argument("--no-compress", action="store_true", help="write pairs.extxyz instead of pairs.extxyz.gz")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_generate(args: argparse.Namespace) -> int:
    """Run the generator from parsed arguments; returns the exit status."""
    from e3relax.datasets.generate import GenerateConfig, generate
    from e3relax.datasets.prototypes import PROTOTYPES

    cfg = GenerateConfig(
        n=args.n, seed=args.seed, strain=args.strain, rattle=args.rattle, fmax=args.fmax,
        max_steps=args.max_steps, relaxer=args.relaxer,
        prototypes=sorted(args.prototypes or PROTOTYPES), allowed_elements=args.elements,
    )
    summary = generate(cfg, args.out, workers=args.workers, compress=not args.no_compress,
                       progress=not args.no_progress)
    logger.info("%d pairs in %s/%s; mean relaxation %.2f s, %d failed, %d not converged",
                summary["pairs"], args.out, summary["file"], summary["relax_seconds_mean"],
                summary["failed"], summary["not_converged"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m e3relax.cli.generate --n 300 --seed 0 --out DIR``."""
    parser = add_generate_arguments(argparse.ArgumentParser(prog="e3relax data generate"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_generate(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
