"""``mmalign cache --config <yaml> [key=value ...]``: prebuild the latent / text-embedding cache of a diffusion run.

Reads the same config as ``recipes/diffusion.py`` and encodes every image (VAE posterior moments) and prompt (text
encoders) the cache lacks, so that training starts straight away; later runs with the same model and resolution
reuse the entries.
"""

from __future__ import annotations

import argparse
import json

from mmalign.commands._diffusion_config import add_config_arguments, load_recipe_config

NAME = "cache"
HELP = "Prebuild the VAE-latent and text-embedding cache for a diffusion training config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mmalign.diffusion.adapter import load_parts
    from mmalign.diffusion.build import check_config, load_data, prebuild_cache

    cfg, device = load_recipe_config(args)
    if not cfg.data.cache:
        raise ValueError("data.cache is false in this config; nothing to prebuild")
    kind = check_config(cfg)
    dataset = load_data(cfg, kind)
    parts = load_parts(cfg.model.pretrained, cfg.model.revision, cfg.model.prediction_type)
    _, stats, cache = prebuild_cache(cfg, kind, dataset, parts, device)
    print(json.dumps({"latents": str(cache.latent_dir), "text": str(cache.text_dir), **stats}))
    return 0
