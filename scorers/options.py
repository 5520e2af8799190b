"""Command-line scorer options: ``--scorer-arg [NAME.]KEY=VALUE`` -> ``load_scorer`` keyword arguments.

``VALUE`` is parsed as JSON when it is valid JSON (numbers, booleans, null, ``{...}`` config dicts), else kept as
a string, so ``--scorer-arg hpsv2.arch='{"embed_dim": 32, ...}'`` passes a tiny config and
``--scorer-arg aesthetic.backbone_checkpoint=/models/clip-l14`` a path. Without ``NAME.`` the argument applies to
every scorer. ``KEY`` is ``checkpoint``, ``device``, ``dtype``, ``autocast`` or a card field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scorers.cards import available_scorers
from scorers.devices import add_device_argument, resolve_device
from scorers.loading import load_scorer
from scorers.scorer import Scorer


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_scorer_args(names: Sequence[str], items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``{scorer name: {key: value}}`` from ``--scorer-arg`` strings (errors name the offending argument)."""
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--scorer-arg {item!r}: expected [NAME.]KEY=VALUE")
        key, value = item.split("=", 1)
        target = list(names)
        for name in sorted(names, key=len, reverse=True):  # 'hpsv2.1.checkpoint' belongs to 'hpsv2.1'
            if key.startswith(name + "."):
                target, key = [name], key[len(name) + 1 :]
                break
        if not key or "." in key:
            raise ValueError(f"--scorer-arg {item!r}: unknown scorer prefix (scorers: {list(names)})")
        for name in target:
            per[name][key] = parse_value(value)
    return per


def split_scorer_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--scorer: give at least one scorer name")
    if len(set(names)) != len(names):
        raise ValueError(f"--scorer: duplicate names in {text!r}")
    return names


def add_scorer_arguments(parser, multiple: bool = False) -> None:
    """The scorer options shared by ``mmalign score`` / ``eval-scorer`` / ``label``."""
    parser.add_argument("--scorer", required=True,
                        help=("comma-separated scorer names" if multiple else "scorer name") +
                        f" (cards: {', '.join(available_scorers())})")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint (local file/folder or hub id)" +
                        (" for a single scorer; use --scorer-arg NAME.checkpoint=... for several" if multiple else ""))
    parser.add_argument("--scorer-arg", action="append", default=[], metavar="[NAME.]KEY=VALUE",
                        help="scorer option or card override, value parsed as JSON when possible (repeatable), "
                        "e.g. arch=ViT-B-32, backbone_checkpoint=/models/clip-l14")
    add_device_argument(parser)
    parser.add_argument("--dtype", default="float32", help="weight dtype: float32 | bfloat16 | float16")
    parser.add_argument("--autocast", default=None, choices=["bf16", "fp16"], help="run forwards under autocast")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward")


def load_scorers_from_args(args) -> dict[str, Scorer]:
    names = split_scorer_names(args.scorer)
    per = parse_scorer_args(names, args.scorer_arg)
    if args.checkpoint is not None:
        if len(names) > 1:
            raise ValueError("--checkpoint is ambiguous with several scorers; use --scorer-arg NAME.checkpoint=PATH")
        per[names[0]].setdefault("checkpoint", args.checkpoint)
    loaded = {}
    for name in names:
        kwargs = {"device": resolve_device(args.device), "dtype": args.dtype, "autocast": args.autocast, **per[name]}
        loaded[name] = load_scorer(name, **kwargs)
    return loaded
