"""Arguments and loading shared by the commands that read a diffusion recipe config (``cache``, ``smpo-labels``)."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str = "diffusion recipe YAML") -> None:
    """``--config``, ``--device`` and trailing ``key=value`` overrides, as ``recipes/diffusion.py`` takes them."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def load_recipe_config(args: argparse.Namespace):
    """``(cfg, device)``: the validated :class:`DiffusionRecipeConfig` and the device to run on."""
    import torch

    from mmalign.config import load_config
    from mmalign.diffusion.config import DiffusionRecipeConfig

    cfg = load_config(DiffusionRecipeConfig, args.config, args.overrides)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return cfg, device
