"""Sampling with a user embedding, and linear interpolation between users (spec §5, PPD inference).

The user branch lives inside the pipeline's own UNet (installed in place by
:meth:`~mmalign.diffusion.ppd.model.UserConditionedUNet.build` / :func:`~mmalign.diffusion.ppd.export.load_user_adapter`),
so any diffusers Stable Diffusion / SDXL pipeline samples with it: the user tokens are passed as
``cross_attention_kwargs={"ip_hidden_states": tokens}``, repeated for every image and for both halves of the
classifier-free-guidance batch (the user conditions the unconditional prediction too, so guidance sharpens the text
while the user shift applies to both; ``user_embeds=None`` samples the base model exactly).

Interpolation: ``u(alpha) = (1 - alpha) u_a + alpha u_b`` — linear in the embedding (the paper interpolates between
reward "users"; whether it interpolates embeddings or weights is [unverified], spec §5), plus the per-branch
``scale`` (:func:`~mmalign.diffusion.ppd.attention.set_user_scale`). Endpoints reproduce ``u_a`` / ``u_b`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmalign.diffusion.sampling import generate as generate_images


def interpolate_users(u_a: torch.Tensor, u_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * u_a + alpha * u_b`` (in floating point exactly ``u_a`` at 0 and ``u_b`` at 1 for finite
    embeddings: ``1 * x + 0 * y == x``)."""
    if u_a.shape != u_b.shape:
        raise ValueError(f"user embeddings of different shapes {tuple(u_a.shape)} and {tuple(u_b.shape)}")
    return (1.0 - alpha) * u_a + alpha * u_b


@torch.no_grad()
def user_cross_attention_kwargs(model, user_embeds: torch.Tensor | None, batch: int,
                                guidance: bool) -> dict[str, torch.Tensor] | None:
    """``{"ip_hidden_states": tokens}`` for a pipeline call producing ``batch`` images (``None`` without a user)."""
    if user_embeds is None:
        return None
    u = user_embeds if user_embeds.dim() == 3 else user_embeds.unsqueeze(0)
    if u.shape[0] not in (1, batch):
        raise ValueError(f"{u.shape[0]} user embeddings for {batch} images")
    tokens = model.user_tokens(u).to(model.unet.dtype).expand(batch, -1, -1)
    if guidance:
        tokens = torch.cat([tokens, tokens])
    return {"ip_hidden_states": tokens}


@torch.no_grad()
def generate(pipe, model, prompts: Sequence[str], user_embeds: torch.Tensor | None = None, *,
             num_inference_steps: int = 25, guidance_scale: float = 7.5, seed: int = 0,
             num_images_per_prompt: int = 1, **pipe_kwargs):
    """Images of ``pipe`` (whose ``unet`` is ``model.unet``) for ``prompts``, conditioned on one user embedding
    ``(S, H)`` (or one per image, ``(N, S, H)``). Returns the images as ``output_type`` (in ``pipe_kwargs``, e.g.
    ``"pt"`` or ``"pil"``), components in explicit dtypes (:func:`mmalign.diffusion.sampling.generate`)."""
    if pipe.unet is not model.unet:
        raise ValueError("pipe.unet is not the user-conditioned UNet (build the adapter on pipe.unet)")
    prompts = list(prompts)
    batch = len(prompts) * num_images_per_prompt
    guidance = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    kwargs = user_cross_attention_kwargs(model, user_embeds, batch, guidance)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return generate_images(pipe, prompts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                           num_images_per_prompt=num_images_per_prompt, generator=generator,
                           cross_attention_kwargs=kwargs, **pipe_kwargs)
