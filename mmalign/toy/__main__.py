"""``python -m mmalign.toy build [--out assets/toy] [--quick] [--seed N]``: rebuild the toy assets."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .build import QUICK, BuildSettings, build
from .paths import DEFAULT_ASSETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmalign.toy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="deterministically rebuild every toy asset from seeds")
    p.add_argument("--out", default=str(DEFAULT_ASSETS), help="output folder (default: assets/toy)")
    p.add_argument("--quick", action="store_true", help="a few steps of everything (CI smoke build, same layout)")
    p.add_argument("--seed", type=int, default=0, help="master seed")
    p.add_argument("--reuse-pipeline", action="store_true",
                   help="keep an existing <out>/pipeline and rebuild only the samples, data, scorer and report")
    args = parser.parse_args(argv)
    settings = dataclasses.replace(QUICK if args.quick else BuildSettings(), seed=args.seed)
    build(args.out, settings, reuse_pipeline=args.reuse_pipeline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
