"""The embedded toy world: renderer, caption grammar, judge, asset builder and judge-based evaluation.

See ``shared/DESIGN.md`` ("The toy world"). Shipped assets live in ``assets/toy/`` (``mmalign.toy.paths``) and are
rebuilt by ``python -m mmalign.toy build``.
"""

from .captions import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Caption,
    all_captions,
    caption_split,
    heldout_captions,
    make_caption,
    parse_caption,
    perturb_caption,
    train_captions,
)
from .judge import best_caption, judge, judge_terms, weighted_score
from .render import render, render_batch, render_pil

__all__ = [
    "COLORS", "POSITIONS", "SHAPES", "SIZES", "Caption", "all_captions", "caption_split", "heldout_captions",
    "make_caption", "parse_caption", "perturb_caption", "train_captions", "best_caption", "judge", "judge_terms",
    "weighted_score", "render", "render_batch", "render_pil",
]
