"""Where the shipped toy assets live (``assets/toy/`` at the repository root) and their file layout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ASSETS = REPO_ROOT / "assets" / "toy"

PIPELINE = "pipeline"                                  # StableDiffusionPipeline folder (save_pretrained)
SCORER_CHECKPOINT = "scorer/HPS_toy_compressed.pt"     # open_clip CLIP state dict, official HPSv2 layout
DATA = "data"                                          # preference data sets (see mmalign/toy/prefdata.py)
TRAIN_CAPTIONS = "captions/train.txt"
HELDOUT_CAPTIONS = "captions/heldout.txt"
BUILD_REPORT = "build_report.json"


def assets_dir() -> Path:
    """The toy assets folder: ``$MMALIGN_TOY_ASSETS`` if set, else ``<repo>/assets/toy``."""
    return Path(os.environ.get("MMALIGN_TOY_ASSETS", DEFAULT_ASSETS))


def pipeline_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root or assets_dir()) / PIPELINE


def scorer_checkpoint(root: str | os.PathLike | None = None) -> Path:
    return Path(root or assets_dir()) / SCORER_CHECKPOINT


def data_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root or assets_dir()) / DATA


def read_captions(path: str | os.PathLike) -> list[str]:
    """One caption per line (blank lines ignored)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
