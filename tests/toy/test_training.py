"""Pieces of the toy build: latent centring is an exact reparametrisation of the VAE."""

import torch

from mmalign.toy import models
from mmalign.toy import train_diffusion as td


def test_center_latents_keeps_the_autoencoder_function():
    torch.manual_seed(0)
    vae = models.make_vae(0).eval()
    _, images = td.random_renders(4, 0)
    x = td.to_model_space(images)
    with torch.no_grad():
        before_mean = vae.encode(x).latent_dist.mean
        before = vae.decode(before_mean).sample
        mu = before_mean.mean(dim=(0, 2, 3))
        td.center_latents(vae, mu)
        after_mean = vae.encode(x).latent_dist.mean
        after = vae.decode(after_mean).sample
    torch.testing.assert_close(after_mean, before_mean - mu.view(1, -1, 1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)  # float32 rounding only
    assert after_mean.mean(dim=(0, 2, 3)).abs().max() < 1e-5
