"""Training of the toy text-to-image pipeline: VAE reconstruction, then UNet denoising with captions.

VAE (``train_vae``): renders in [-1, 1]; loss = MSE(reconstruction, image) + ``kl_weight`` * KL(posterior || N(0, I))
(Stable Diffusion's KL-autoencoder objective without the perceptual and GAN terms, which simple flat-colored shapes
do not need). The latent scaling factor is set afterwards to 1 / std of the training latents, as for SD's VAE.

UNet (``train_unet``): the standard epsilon objective ``|| eps - eps_theta(sqrt(a_t) z + sqrt(1 - a_t) eps, t, c) ||^2``
with ``t ~ U{0..999}`` under SD's scaled-linear schedule, on cached VAE latents (sampled from the posterior each
step) and cached embeddings of the frozen text encoder. Captions are dropped (empty prompt) with probability
``uncond_prob`` so classifier-free guidance works, and *corrupted* with probability ``caption_noise`` (one random
attribute replaced): the base model is deliberately imperfect at following captions, which leaves headroom for
preference training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .captions import ATTRIBUTES, all_captions, perturb_caption
from .render import render_batch


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))) * 0.9 + 0.1
    return f


def to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_renders(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` renders of uniformly drawn captions with distinct seeds (deterministic from ``seed``)."""
    rng = np.random.default_rng(seed)
    captions = all_captions()
    chosen = [captions[i] for i in rng.integers(len(captions), size=n)]
    seeds = rng.integers(0, 2**31 - 1, size=n)
    return chosen, render_batch(chosen, seeds)


def train_vae(vae, images: np.ndarray, *, steps: int, batch_size: int, lr: float, kl_weight: float, seed: int,
              log: Callable[[str], None] = print) -> dict[str, float]:
    """Train ``vae`` in place on ``images`` (uint8 ``(N, 64, 64, 3)``); returns final metrics."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = to_model_space(images)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(100, steps // 10 + 1), steps))
    vae.train()
    ema_mse = None
    for step in (bar := tqdm(range(steps), desc="toy VAE", mininterval=5)):
        x = data[torch.randint(len(data), (batch_size,), generator=g)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        ema_mse = descend(mse + kl_weight * kl, vae, opt, sched, ema_mse, tracked=mse, decay=0.95)
        if step % 50 == 0:
            bar.set_postfix(mse=f"{ema_mse:.4f}")
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(data[i:i + 256]).latent_dist.mean for i in range(0, len(data), 256)])
        offset = center_latents(vae, latents.mean(dim=(0, 2, 3)))
        latents = latents - offset.view(1, -1, 1, 1)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"VAE: {steps} steps, final recon MSE (EMA) {ema_mse:.5f}, latent channel means {offset.numpy().round(2)} "
        f"folded into quant convs, centred latent std {latents.std():.3f} -> scaling_factor {scaling:.4f}")
    return {"vae_mse": float(ema_mse), "vae_scaling_factor": scaling}


@torch.no_grad()
def center_latents(vae, mu: torch.Tensor) -> torch.Tensor:
    """Make the VAE's latent means zero per channel without changing what it computes.

    The pipeline decodes ``latents / scaling_factor`` with no shift (``shift_factor`` is ignored by SD1.x
    pipelines), so a per-channel offset ``mu`` of the latents is folded into the 1x1 convolutions around the
    latent: ``quant_conv``'s mean outputs get bias ``- mu`` and ``post_quant_conv`` gets bias ``+ W mu``, hence
    ``decode(z - mu) == old_decode(z)``. Returns ``mu``.
    """
    c = mu.numel()
    vae.quant_conv.bias[:c] -= mu
    weight = vae.post_quant_conv.weight[:, :, 0, 0]
    vae.post_quant_conv.bias += weight @ mu
    return mu


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of the VAE latents (unscaled)."""
    means, stds = [], []
    data = to_model_space(images)
    for i in range(0, len(data), batch_size):
        post = vae.encode(data[i:i + batch_size]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """``last_hidden_state`` of the text encoder, as the Stable Diffusion pipeline computes it."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def draw_condition_ids(idx: torch.Tensor, captions: list[str], index: dict[str, int], uncond_id: int,
                       uncond_prob: float, caption_noise: float, rng: np.random.Generator) -> list[int]:
    """The caption id each drawn image is trained on: the empty prompt with ``uncond_prob``, a caption with one
    attribute changed with ``caption_noise`` (the toy world's label noise), else its own caption."""
    cond = []
    for i in idx.tolist():
        u = rng.random()
        if u < uncond_prob:
            cond.append(uncond_id)
        elif u < uncond_prob + caption_noise:
            attribute = ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
            cond.append(index[perturb_caption(captions[i], attribute, rng)])
        else:
            cond.append(index[captions[i]])
    return cond


def descend(loss: torch.Tensor, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, ema: float | None,
            *, tracked: torch.Tensor | None = None, decay: float = 0.98) -> float:
    """One optimizer step of the toy pre-training (gradient norm clipped at 1); returns the running mean of
    ``tracked`` (default: the loss) for the progress bar and the log."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    value = (loss if tracked is None else tracked).item()
    return value if ema is None else decay * ema + round(1 - decay, 12) * value  # 0.02, not 0.020000000000000018


def train_unet(unet, vae, text_encoder, tokenizer, noise_scheduler, captions: list[str], images: np.ndarray, *,
               steps: int, batch_size: int, lr: float, caption_noise: float, uncond_prob: float, seed: int,
               log: Callable[[str], None] = print) -> dict[str, float]:
    """Train ``unet`` in place on (caption, render) pairs; returns final metrics."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mean, std = encode_latents(vae, images)
    scale = vae.config.scaling_factor
    vocabulary = all_captions()
    index = {c: i for i, c in enumerate(vocabulary)}
    table = torch.cat([encode_prompts(text_encoder, tokenizer, vocabulary), encode_prompts(text_encoder, tokenizer, [""])])
    uncond_id = len(vocabulary)
    # caption ids per step are drawn up front so the run is a pure function of the seed
    alphas = noise_scheduler.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(200, steps // 10 + 1), steps))
    unet.train()
    ema = None
    for step in (bar := tqdm(range(steps), desc="toy UNet", mininterval=5)):
        idx = torch.randint(len(mean), (batch_size,), generator=g)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
        cond = draw_condition_ids(idx, captions, index, uncond_id, uncond_prob, caption_noise, rng)
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t, table[torch.tensor(cond)]).sample
        ema = descend(torch.nn.functional.mse_loss(pred, noise), unet, opt, sched, ema)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{ema:.4f}")
    unet.eval()
    log(f"UNet: {steps} steps x {batch_size}, final denoising loss (EMA) {ema:.4f}, caption noise {caption_noise}")
    return {"unet_loss": float(ema)}
