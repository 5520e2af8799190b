"""Turn a collated batch into model inputs on the device: latents ``x0`` and conditioning.

Cached batches carry the VAE posterior moments and text embeddings; uncached ones carry pixels and prompts, which
are encoded here. Options applied on the way (official Diffusion-DPO behaviour unless noted):

* ``latent_sample="sample"``: ``x0 = mean + std * eps`` (``latent_dist.sample()``); ``"mean"``: the mean;
* empty-prompt dropout: each *item* (all its members together) gets the empty prompt's embedding with probability
  ``empty_prompt_prob`` (official ``--proportion_empty_prompts``, 0.2 in the launchers);
* SDXL time ids: ``constant`` ``[res, res, 0, 0, res, res]`` (official DPO-SDXL) or ``original`` (the stored
  original size and crop offsets, diffusers-script convention), spec §9.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mmalign.diffusion.adapter import (
    DiffusionParts,
    constant_time_ids,
    encode_pixels,
    encode_text,
    sample_latents,
)


@dataclass
class InputBuilder:
    parts: DiffusionParts
    resolution: int
    latent_sample: str = "sample"
    empty_prompt_prob: float = 0.0
    sdxl_time_ids: str = "constant"
    _empty: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.latent_sample not in ("sample", "mean"):
            raise ValueError(f"data.latent_sample must be sample or mean, got '{self.latent_sample}'")
        if self.sdxl_time_ids not in ("constant", "original"):
            raise ValueError(f"method.sdxl_time_ids must be constant or original, got '{self.sdxl_time_ids}'")

    def empty_condition(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """Embedding of the empty prompt (computed once)."""
        if self._empty is None or self._empty["prompt_embeds"].device != torch.device(device):
            self._empty = {k: v[0] for k, v in encode_text(self.parts, [""], device).items()}
        return self._empty

    def __call__(self, batch: dict[str, Any], device: torch.device | str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(x0 (N, C, h, w), cond)`` for the N = groups × group_size members of the batch."""
        if "latent_mean" in batch:
            std = batch["latent_std"] if self.latent_sample == "sample" else None
            x0 = sample_latents(batch["latent_mean"].float(), None if std is None else std.float())
        else:
            mean, std = encode_pixels(self.parts, batch["pixels"])
            x0 = sample_latents(mean.float(), std.float() if self.latent_sample == "sample" else None)
        if "prompt_embeds" in batch:
            cond = {k: batch[k].float() for k in ("prompt_embeds", "pooled") if k in batch}
        else:
            cond = {k: v.float() for k, v in encode_text(self.parts, batch["prompts"], device).items()}
        if self.empty_prompt_prob > 0:
            cond = self._drop_prompts(cond, batch["groups"], batch["group_size"], device)
        if self.parts.family == "sdxl":
            if self.sdxl_time_ids == "constant":
                cond["time_ids"] = constant_time_ids(x0.shape[0], self.resolution, device)
            else:
                cond["time_ids"] = batch["time_ids"].float()
        # Contiguous: the VAE posterior's mean/std are channel-chunk views, and a strided x0 makes the bf16/fp16 CPU
        # kernels (GroupNorm) round differently in train mode (policy) than in eval mode (reference), so policy and
        # reference would disagree at init.
        return x0.to(device).contiguous(), cond

    def _drop_prompts(self, cond, groups: int, group_size: int, device) -> dict[str, torch.Tensor]:
        drop = (torch.rand(groups, device=device) < self.empty_prompt_prob).repeat(group_size)
        empty = self.empty_condition(device)
        out = {}
        for name, value in cond.items():
            mask = drop.view(-1, *[1] * (value.dim() - 1))
            out[name] = torch.where(mask, empty[name].to(value).expand_as(value), value)
        return out
