"""One option vocabulary for every ``mmalign`` subcommand (issue 18).

Canonical spellings, with the older ones kept as aliases: ``--out`` (alias ``--output``), ``--prompts`` (alias
``--prompt``), ``--guidance-scale`` (alias ``--guidance``), ``--device`` (default ``auto``: cuda when available,
else cpu), ``--on-error raise|skip`` for unreadable inputs. ``--help`` shows every default (:class:`HelpFormatter`).
"""

from __future__ import annotations

import argparse
from typing import Any

from scorers.devices import AUTO_DEVICE, resolve_device

__all__ = ["AUTO_DEVICE", "HelpFormatter", "add_device_argument", "add_guidance_argument", "add_on_error_argument",
           "add_out_argument", "resolve_device"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help, except for unset (None / False) defaults or helps naming one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    from scorers.devices import add_device_argument as add

    add(parser)


def add_out_argument(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """``--out`` (alias ``--output``), stored as ``args.out``."""
    parser.add_argument("--out", "--output", dest="out", required=True, help=help, **kwargs)


def add_guidance_argument(parser: argparse.ArgumentParser, default: float = 7.5) -> None:
    parser.add_argument("--guidance-scale", "--guidance", dest="guidance_scale", type=float, default=default,
                        help="classifier-free guidance scale")


def add_on_error_argument(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    parser.add_argument("--on-error", choices=("raise", "skip"), default=default,
                        help=f"unreadable {what}: raise = stop with an error naming the file, skip = count and "
                        "report them")
