"""Flow-matching training settings (SD3 / SD3.5, FLUX.1), in a module that imports nothing heavy.

:class:`FlowOptions` is both the ``model.*`` keys of :class:`mmalign.diffusion.config.ModelConfig` (which
extends it) and what :class:`mmalign.diffusion.adapter.DiffusionParts` carries into the flow-matching score.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOW_FAMILIES = ("sd3", "flux")
FLOW_DEFAULT_MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}
"""T5 tokens when ``model.max_sequence_length`` is null: the pipelines' own ``__call__`` defaults, so that validation
grids, toy evaluation and ``mmalign label`` (which call the pipeline) condition as training did (diffusers'
``train_dreambooth_lora_sd3.py`` trains with 77 and validates with 256; FLUX: 512 both)."""


@dataclass
class FlowOptions:
    """Flow-matching training settings (``model.*`` of the config; diffusers SD3 / FLUX training-script names)."""

    weighting_scheme: str = "logit_normal"
    """Timestep density (``compute_density_for_timestep_sampling``) and loss weight (``compute_loss_weighting_for_sd3``)
    as diffusers' SD3 / FLUX scripts: logit_normal | mode | uniform | sigma_sqrt | cosmap (the density of the last
    two is uniform; their loss weight is not 1)."""
    logit_mean: float = 0.0
    """logit_normal mean."""
    logit_std: float = 1.0
    """logit_normal std."""
    mode_scale: float = 1.29
    """``mode`` scheme scale."""
    guidance: float = 3.5
    """FLUX guidance-embedding value in training (only for ``guidance_embeds`` checkpoints: FLUX.1-dev)."""
    max_sequence_length: int | None = None
    """T5 tokens (null: :data:`FLOW_DEFAULT_MAX_SEQUENCE_LENGTH`, 256 SD3 / 512 FLUX, what validation sampling uses)."""
