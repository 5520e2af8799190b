"""A toy-world SD3-architecture pipeline (flow matching), for the flow-model alignment check of issue 17.

``build_toy_sd3(out)`` assembles a ``StableDiffusion3Pipeline`` from the shipped toy world's frozen parts — its
VAE (``shift_factor`` 0) and its CLIP text encoder, loaded into both ``CLIPTextModelWithProjection`` slots with
identity projections (pooled = the two EOS features, 64) and no T5 (the pipeline feeds zeros in its place) — and
a new random ``SD3Transformer2DModel`` (patch 2, 4 joint blocks, width 64) pretrained here with the rectified-flow
objective (velocity ``eps - x0`` at a logit-normal sigma, as diffusers' SD3 scripts) on toy renders, with the same
deliberate imperfections as the UNet toy (caption noise 0.3, empty prompt 0.1; ``mmalign.toy.train_diffusion``).
The scheduler is ``FlowMatchEulerDiscreteScheduler(shift=1.0)``: SD3's resolution-dependent shift at 64 px.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import paths
from .captions import all_captions
from .train_diffusion import _lr_lambda, descend, draw_condition_ids, encode_latents, random_renders

TRANSFORMER = dict(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=4, attention_head_dim=16,
                   num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=64, pooled_projection_dim=64,
                   pos_embed_max_size=16)


def _clip_with_projection(text_encoder):
    from transformers import CLIPTextModelWithProjection

    model = CLIPTextModelWithProjection(text_encoder.config)
    model.text_model.load_state_dict(text_encoder.state_dict())
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(model.text_projection.weight.shape[0]))
    return model.eval().requires_grad_(False)


def toy_sd3_components(seed: int = 0):
    """The untrained toy SD3 pipeline (shipped toy VAE + text encoder, random transformer)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from .build import load_pipeline as load_toy

    toy = load_toy(paths.pipeline_dir())
    toy.vae.register_to_config(shift_factor=0.0)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**TRANSFORMER)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0),
        vae=toy.vae, text_encoder=_clip_with_projection(toy.text_encoder), tokenizer=toy.tokenizer,
        text_encoder_2=_clip_with_projection(toy.text_encoder), tokenizer_2=toy.tokenizer, text_encoder_3=None,
        tokenizer_3=None)


def train_transformer(pipe, *, images: int = 4096, steps: int = 1600, batch_size: int = 32, lr: float = 1.5e-3,
                      caption_noise: float = 0.3, uncond_prob: float = 0.1, seed: int = 0, log=print) -> dict:
    """Rectified-flow pretraining of ``pipe.transformer`` in place on toy renders (captions as the UNet toy)."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    captions, renders = random_renders(images, seed + 5)
    mean, std = encode_latents(pipe.vae, renders)
    scale = pipe.vae.config.scaling_factor
    vocabulary = all_captions()
    index = {c: i for i, c in enumerate(vocabulary)}
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(vocabulary + [""], None, None, device="cpu",
                                                  do_classifier_free_guidance=False)
    uncond = len(vocabulary)
    model = pipe.transformer
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(200, steps // 10 + 1), steps))
    timesteps = pipe.scheduler.timesteps.clone()
    model.train()
    ema, t0 = None, time.time()
    for step in (bar := tqdm(range(steps), desc="toy SD3 transformer", mininterval=5)):
        idx = torch.randint(len(mean), (batch_size,), generator=g)
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
        cond_t = torch.tensor(draw_condition_ids(idx, captions, index, uncond, uncond_prob, caption_noise, rng))
        noise = torch.randn(x0.shape, generator=g)
        u = torch.sigmoid(torch.randn(batch_size, generator=g))
        t = timesteps[(u * 1000).long().clamp(max=999)]
        sigma = (t / 1000).view(-1, 1, 1, 1)
        pred = model(hidden_states=(1 - sigma) * x0 + sigma * noise, timestep=t, encoder_hidden_states=embeds[cond_t],
                     pooled_projections=pooled[cond_t]).sample
        ema = descend(torch.nn.functional.mse_loss(pred, noise - x0), model, opt, sched, ema)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{ema:.4f}")
    model.eval()
    log(f"toy SD3 transformer: {steps} steps x {batch_size}, final velocity loss (EMA) {ema:.4f}")
    return {"velocity_loss": float(ema), "seconds": round(time.time() - t0, 1), "steps": steps,
            "batch_size": batch_size}


def build_toy_sd3(out: str | Path, seed: int = 0, **train_kwargs) -> dict:
    """Build, pretrain and ``save_pretrained`` the toy SD3 pipeline into ``out``; returns the training report."""
    pipe = toy_sd3_components(seed)
    report = train_transformer(pipe, seed=seed, **train_kwargs)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return report
