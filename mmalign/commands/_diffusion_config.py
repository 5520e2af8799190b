"""Arguments and loading shared by the commands that read a diffusion recipe config (``cache``, ``smpo-labels``)."""

from __future__ import annotations

import argparse

from mmalign.commands._options import add_device_argument, resolve_device


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str = "diffusion recipe YAML") -> None:
    """``--config``, ``--device`` and trailing ``key=value`` overrides, as ``recipes/diffusion.py`` takes them."""
    parser.add_argument("--config", required=True, help=config_help)
    add_device_argument(parser)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def load_recipe_config(args: argparse.Namespace):
    """``(cfg, device)``: the validated :class:`DiffusionRecipeConfig` and the device to run on."""
    from mmalign.config import load_config
    from mmalign.diffusion.build import normalize_config
    from mmalign.diffusion.config import DiffusionRecipeConfig

    cfg = load_config(DiffusionRecipeConfig, args.config, args.overrides)
    normalize_config(cfg)  # shipped relative paths (assets/...) resolve from any directory
    device = resolve_device(args.device)
    return cfg, device
