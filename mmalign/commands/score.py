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
    from mmalign.commands._options import add_on_error_argument
    from scorers.options import add_scorer_arguments

    add_scorer_arguments(parser)
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders (sorted by name)")
    parser.add_argument("--prompts", "--prompt", dest="prompts", default=None,
                        help="a prompt text (used for every image) or a .txt file with one prompt per line "
                        "(one line: broadcast; else one per image, in image order)")
    parser.add_argument("--probs", action="store_true", help="add softmax preference probabilities over the images")
    add_on_error_argument(parser, "raise", "images")


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


def _read(path: Path, on_error: str, skipped: list[str]):
    """The RGB image at ``path``, or None (appended to ``skipped``) when unreadable and ``on_error == "skip"``."""
    from scorers.images import to_pil_list

    try:
        return to_pil_list(path)[0]
    except (OSError, ValueError) as exc:
        if on_error == "raise":
            raise ValueError(f"{exc} (--on-error skip scores the rest)") from None
        skipped.append(f"{path}: {exc}")
        return None


def _score_all(scorer, paths: list[Path], prompts: list[str] | None, args, skipped: list[str]):
    """``(kept indices, scores, raw)`` over the readable images, batch by batch, with a progress bar."""
    import torch
    from tqdm.auto import tqdm

    kept, scores, raw = [], [], []
    bar = tqdm(total=len(paths), desc="score", unit="img")
    for start in range(0, len(paths), args.batch_size):
        idx = range(start, min(start + args.batch_size, len(paths)))
        images = [(i, _read(paths[i], args.on_error, skipped)) for i in idx]
        images = [(i, im) for i, im in images if im is not None]
        bar.update(len(idx))
        if not images:
            continue
        chunk = [im for _, im in images]
        texts = [prompts[i] for i, _ in images] if prompts else None
        kept.extend(i for i, _ in images)
        scores.append(scorer.score(chunk, texts, batch_size=args.batch_size))
        if scorer.needs_text:
            raw.append(scorer.score(chunk, texts, raw=True, batch_size=args.batch_size))
    bar.close()
    return kept, torch.cat(scores) if scores else None, torch.cat(raw) if raw else None


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from scorers.options import load_scorers_from_args

    images = collect_images(args.images)
    prompts = read_prompts(args.prompts, len(images))
    (name, scorer), = load_scorers_from_args(args).items()
    if scorer.needs_text and prompts is None:
        raise ValueError(f"scorer {name} needs --prompts")
    if args.probs:
        if prompts is None or len(set(prompts)) != 1:
            raise ValueError("--probs compares the images of ONE prompt: give a single prompt")
        if not scorer.card.probs:
            raise ValueError(f"--probs: scorer {name} has no preference probabilities")
    skipped: list[str] = []
    kept, scores, raw = _score_all(scorer, images, prompts, args, skipped)
    if not kept:
        raise ValueError(f"no readable images among {len(images)} (first: {skipped[0]})")
    probs = torch.softmax(scorer.logit_scale * raw, dim=0) if args.probs else None
    for j, i in enumerate(kept):
        row = {"image": str(images[i]), "prompt": prompts[i] if prompts else None, "scorer": name,
               "score": float(scores[j])}
        if raw is not None:
            row["raw"] = float(raw[j])
        if probs is not None:
            row["prob"] = float(probs[j])
        print(json.dumps(row, ensure_ascii=False))
    closing = f"mmalign score: scored {len(kept)} of {len(images)} images with {name}"
    if skipped:
        closing += f"; skipped {len(skipped)} unreadable (first: {skipped[0]})"
    print(closing, file=sys.stderr)
    return 0
