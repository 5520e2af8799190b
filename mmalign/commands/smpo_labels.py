"""``mmalign smpo-labels --config <yaml> [key=value ...]``: compute and store the SmPO soft labels of a data set.

Reads the same config as ``recipes/diffusion.py`` (``method.smpo``: scorer, checkpoint, card options; ``data``) and
writes the soft-label file the SmPO step reads (:mod:`mmalign.diffusion.soft_labels`): raw scorer rewards of both
images of every pair plus the data set's min/max. Training computes it on first use too; this command lets a
machine with the scorer do it ahead of time. Prints one JSON line (path, pairs, min/max, disagreements).
"""

from __future__ import annotations

import argparse
import json

NAME = "smpo-labels"
HELP = "Score every pair of a diffusion data set with the SmPO scorer and store the soft labels."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="diffusion recipe YAML (method.smpo, data)")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from mmalign.config import load_config
    from mmalign.diffusion.build import load_data
    from mmalign.diffusion.config import DiffusionRecipeConfig
    from mmalign.diffusion.placeholders import resolve_placeholders
    from mmalign.diffusion.soft_labels import prepare_soft_labels

    cfg = load_config(DiffusionRecipeConfig, args.config, args.overrides)
    resolve_placeholders(cfg, Path(cfg.output_dir) / "tiny_inputs")
    dataset = load_data(cfg, "pairs")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = prepare_soft_labels(cfg, dataset, device=device)
    doc = json.loads(path.read_text())
    print(json.dumps({"labels": str(path), **{k: v for k, v in doc.items() if k != "pairs"}}))
    return 0
