"""The choice vocabularies config schemas check values against, in a module that imports nothing heavy.

The modules that implement the choices (torch code) import them from here, so a schema such as
:mod:`mmalign.mllm.video.config` validates ``method.loss_type`` without importing torch.
"""

from __future__ import annotations

REFERENCE_KINDS = ("sigmoid", "cdpo", "robust", "hinge", "ipo", "bco_pair")
"""Pairwise preference losses on policy-minus-reference log-ratios (:mod:`mmalign.objectives.pairwise`)."""
REFERENCE_FREE_KINDS = ("simpo", "orpo")
"""Pairwise preference losses on the policy's log-probs alone."""
PREFERENCE_KINDS = REFERENCE_KINDS + REFERENCE_FREE_KINDS


ON_BAD_ROW = ("skip", "error")
"""``data.on_bad_row`` of every recipe: skip and count the row (up to ``data.max_bad_fraction``) or stop on it
(:class:`mmalign.data.skipping.SkipCounter`)."""
