"""``mmalign score --scorer <name> --checkpoint <path> --images <dir|files> --prompts <file|text>``.

Prints one JSON line per image: ``{"image", "prompt", "scorer", "score"[, "raw"][, "prob"]}`` with ``score`` on the
card's documented scale (``raw``: the cosine, for cosine scorers; ``prob``: with ``--probs``, the softmax over all
images of one shared prompt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "score"
HELP = "Score images against prompts with a preference scorer (HPSv2, PickScore, CLIPScore, aesthetic, ...)."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scorers.options import add_scorer_arguments

    add_scorer_arguments(parser)
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders (sorted by name)")
    parser.add_argument("--prompts", default=None,
                        help="a prompt text (used for every image) or a .txt file with one prompt per line "
                        "(one line: broadcast; else one per image, in image order)")
    parser.add_argument("--probs", action="store_true", help="add softmax preference probabilities over the images")


def collect_images(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"image not found: {p}")
    return paths


def read_prompts(value: str | None, n_images: int) -> list[str] | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix == ".txt" and not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        prompts = [line for line in lines if line]
        if len(prompts) == 1:
            return prompts * n_images
        if len(prompts) != n_images:
            raise ValueError(f"{path}: {len(prompts)} prompts for {n_images} images (give 1 or one per image)")
        return prompts
    return [value] * n_images


def run(args: argparse.Namespace) -> int:
    from scorers.options import load_scorers_from_args

    images = collect_images(args.images)
    prompts = read_prompts(args.prompts, len(images))
    (name, scorer), = load_scorers_from_args(args).items()
    if scorer.needs_text and prompts is None:
        raise ValueError(f"scorer {name} needs --prompts")
    scores = scorer.score(images, prompts, batch_size=args.batch_size)
    raw = scorer.score(images, prompts, raw=True, batch_size=args.batch_size) if scorer.needs_text else None
    probs = None
    if args.probs:
        if prompts is None or len(set(prompts)) != 1:
            raise ValueError("--probs compares the images of ONE prompt: give a single prompt")
        probs = scorer.probs(images, prompts[0])
    for i, path in enumerate(images):
        row = {"image": str(path), "prompt": prompts[i] if prompts else None, "scorer": name,
               "score": float(scores[i])}
        if raw is not None:
            row["raw"] = float(raw[i])
        if probs is not None:
            row["prob"] = float(probs[i])
        print(json.dumps(row, ensure_ascii=False))
    return 0
