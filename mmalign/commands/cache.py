"""``mmalign cache --config <yaml> [key=value ...]``: prebuild the latent / text-embedding cache of a diffusion run.

Reads the same config as ``recipes/diffusion.py`` and encodes every image (VAE posterior moments) and prompt (text
encoders) the cache lacks, so that training starts straight away; later runs with the same model and resolution
reuse the entries.
"""

from __future__ import annotations

import argparse
import json

NAME = "cache"
HELP = "Prebuild the VAE-latent and text-embedding cache for a diffusion training config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="diffusion recipe YAML")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def run(args: argparse.Namespace) -> int:
    import torch

    from mmalign.config import load_config
    from mmalign.diffusion.adapter import load_parts
    from mmalign.diffusion.build import check_config, load_data, prebuild_cache
    from mmalign.diffusion.config import DiffusionRecipeConfig

    cfg = load_config(DiffusionRecipeConfig, args.config, args.overrides)
    if not cfg.data.cache:
        raise ValueError("data.cache is false in this config; nothing to prebuild")
    kind = check_config(cfg)
    dataset = load_data(cfg, kind)
    parts = load_parts(cfg.model.pretrained, cfg.model.revision, cfg.model.prediction_type)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _, stats, cache = prebuild_cache(cfg, kind, dataset, parts, device)
    print(json.dumps({"latents": str(cache.latent_dir), "text": str(cache.text_dir), **stats}))
    return 0
