"""The ``mmalign`` console script: discovers subcommands in :mod:`mmalign.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from mmalign import __version__, commands


def _subcommand_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return mods


def build_parser() -> argparse.ArgumentParser:
    from mmalign.commands._options import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="mmalign", formatter_class=HelpFormatter,
        description="Preference alignment for diffusion models, VLMs and video LLMs. "
        "Training runs through `accelerate launch recipes/<family>.py --config <yaml>`.",
    )
    parser.add_argument("--version", action="version", version=f"mmalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for mod in _subcommand_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP, formatter_class=HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from mmalign.recipe_entry import BAD_INPUT_EXIT, FAULT_EXIT, bad_input_errors, explained_faults

    try:
        return int(args._run(args) or 0)
    except explained_faults() as exc:  # first: DiskFullError is an OSError
        _one_line(args.command, exc)
        return FAULT_EXIT
    except (*bad_input_errors(), OSError, ValueError) as exc:  # bad input: a file, a value, an unreadable image
        _one_line(args.command, exc)
        return BAD_INPUT_EXIT


def _one_line(command: str, exc: BaseException) -> None:
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"mmalign {command}: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
