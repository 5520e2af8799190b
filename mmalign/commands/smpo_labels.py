"""``mmalign smpo-labels --config <yaml> [key=value ...]``: compute and store the SmPO soft labels of a data set.

Reads the same config as ``recipes/diffusion.py`` (``method.smpo``: scorer, checkpoint, card options; ``data``) and
writes the soft-label file the SmPO step reads (:mod:`mmalign.diffusion.soft_labels`): raw scorer rewards of both
images of every pair plus the data set's min/max. Training computes it on first use too; this command lets a
machine with the scorer do it ahead of time. Prints one JSON line (path, pairs, min/max, disagreements).
"""

from __future__ import annotations

import argparse
import json

from mmalign.commands._diffusion_config import add_config_arguments, load_recipe_config

NAME = "smpo-labels"
HELP = "Score every pair of a diffusion data set with the SmPO scorer and store the soft labels."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "diffusion recipe YAML (method.smpo, data)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmalign.diffusion.build import load_data
    from mmalign.diffusion.soft_labels import prepare_soft_labels
    from mmalign.testing.placeholders import resolve_placeholders

    cfg, device = load_recipe_config(args)
    resolve_placeholders(cfg, Path(cfg.output_dir) / "tiny_inputs")
    dataset = load_data(cfg, "pairs")
    path = prepare_soft_labels(cfg, dataset, device=device)
    doc = json.loads(path.read_text())
    print(json.dumps({"labels": str(path), **{k: v for k, v in doc.items() if k != "pairs"}}))
    return 0
