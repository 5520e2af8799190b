"""DDIM / ReNoise inversion on tiny real diffusers UNets: exact grids, exact implied noise, invert→denoise
round trips, batching (per-sample t) and the InPO stochastic term against an independent loop (the ``exact``
convention; the ``official`` one is compared with diffusers 0.20 + the official loops in test_official_inversion)."""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion.inversion.ddim import ddim_denoise, implied_noise, invert
from mmalign.diffusion.inversion.plan import inversion_grid
from mmalign.diffusion.noise_providers import inversion_noise

T = torch.tensor([400, 150, 37])


def _inputs(kind: str, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, 16, 16, generator=g)
    cond = {"prompt_embeds": torch.randn(n, 77, 64 if kind == "sdxl" else 32, generator=g)}
    if kind == "sdxl":
        cond["pooled"] = torch.randn(n, 32, generator=g)
        cond["time_ids"] = torch.tensor([[32.0, 32, 0, 0, 32, 32]] * n)
    return x0, cond


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def test_grid_ends_exactly_at_t():
    grids = inversion_grid(torch.tensor([999, 400, 37, 0]), 10, 1000)
    assert grids[0][-1] == 999 and len(grids[0]) == 10
    assert grids[1] == [100, 200, 300, 400]
    assert grids[2] == [37] and grids[3] == [0]
    assert all(b > a for g in grids for a, b in zip(g, g[1:]))
    with pytest.raises(ValueError, match="outside"):
        inversion_grid(torch.tensor([1000]), 10, 1000)


def test_constant_zero_prediction_inverts_in_closed_form(models):
    """A UNet whose output is 0 (real class, conv_out zeroed): DDIM inversion gives sqrt(abar_t) x0 exactly,
    the implied noise is 0 and denoising returns x0 — the two step formulas are exact inverses."""
    import copy

    unet, sched = models["sd15"]
    zero = copy.deepcopy(unet)
    with torch.no_grad():
        zero.conv_out.weight.zero_()
        zero.conv_out.bias.zero_()
    x0, cond = _inputs("sd15")
    x_t = invert(zero, sched, x0, T, cond, num_steps=10, renoise_iters=2, convention="exact")
    abar = sched.alphas_cumprod[T].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, abar.sqrt() * x0, rtol=0, atol=1e-5)
    assert implied_noise(x0, x_t, T, sched.alphas_cumprod).abs().max() < 1e-4
    back = ddim_denoise(zero, sched, x_t, T, cond, num_steps=10)
    torch.testing.assert_close(back, x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd15", "sd2v", "sdxl"])
def test_invert_then_denoise_returns_the_latent(models, kind):
    unet, sched = models[kind]
    x0, cond = _inputs(kind)
    pt = sched.config.prediction_type
    errors = {}
    for steps, renoise in [(10, 0), (40, 0), (10, 3)]:
        x_t = invert(unet, sched, x0, T, cond, num_steps=steps, renoise_iters=renoise, prediction_type=pt,
                     convention="exact")
        back = ddim_denoise(unet, sched, x_t, T, cond, num_steps=steps, prediction_type=pt)
        errors[(steps, renoise)] = _rel(back, x0)
    print(kind, {k: [round(v, 5) for v in e.tolist()] for k, e in errors.items()})
    # Relative L2 error ||x0' - x0|| / ||x0|| per sample (t = 400, 150, 37) on random weights.
    assert (errors[(10, 0)] < 0.08).all()
    assert (errors[(40, 0)] < errors[(10, 0)]).all()  # finer grid → closer
    assert (errors[(10, 3)] < errors[(10, 0)]).all()  # ReNoise iterations → closer
    assert (errors[(40, 0)] < 0.03).all()


@pytest.mark.parametrize("provider", ["ddim", "renoise", "ddim_eta"])
def test_implied_noise_reproduces_x_t_by_the_forward_formula(models, provider):
    unet, sched = models["sd15"]
    x0, cond = _inputs("sd15")
    kwargs = {"ddim": {}, "renoise": {"renoise_iters": 1}, "ddim_eta": {"eta": 0.1}}[provider]
    torch.manual_seed(0)
    x_inv = invert(unet, sched, x0, T, cond, num_steps=10, **kwargs)
    eps = implied_noise(x0, x_inv, T, sched.alphas_cumprod)
    abar = sched.alphas_cumprod[T].view(-1, 1, 1, 1)
    torch.testing.assert_close(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, x_inv, rtol=0, atol=1e-5)
    torch.testing.assert_close(sched.add_noise(x0, eps, T), x_inv, rtol=0, atol=1e-5)
    torch.manual_seed(0)
    eps2, x_t = inversion_noise(unet, sched, x0, T, cond, num_steps=10, **kwargs)
    torch.testing.assert_close(eps2, eps)
    torch.testing.assert_close(x_t, x_inv, rtol=0, atol=1e-5)


@pytest.mark.parametrize("convention", ["official", "exact"])
def test_batch_with_different_timesteps_equals_one_by_one(models, convention):
    unet, sched = models["sdxl"]
    x0, cond = _inputs("sdxl")
    batched = invert(unet, sched, x0, T, cond, num_steps=10, renoise_iters=1, convention=convention)
    for i in range(3):
        one = invert(unet, sched, x0[i : i + 1], T[i : i + 1], {k: v[i : i + 1] for k, v in cond.items()},
                     num_steps=10, renoise_iters=1, convention=convention)
        torch.testing.assert_close(batched[i : i + 1], one, rtol=1e-5, atol=1e-5)


def test_stochastic_ddim_inversion_matches_an_independent_loop(models):
    """InPO's inversion (eta = 0.1) for one sample, re-derived with diffusers' DDIMScheduler._get_variance."""
    from diffusers import DDIMScheduler

    unet, sched = models["sd15"]
    x0, cond = _inputs("sd15", n=1)
    t = torch.tensor([430])
    g = torch.Generator().manual_seed(5)
    ours = invert(unet, sched, x0, t, cond, num_steps=10, eta=0.1, generator=g, convention="exact")

    ddim = DDIMScheduler.from_config(sched.config)
    abar = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(5)
    z, prev = x0.clone(), None
    for tau in [86, 172, 258, 344, 430]:  # ceil(10 * 430 / 1000) = 5 steps ending at 430
        with torch.no_grad():
            eps = unet(z, torch.tensor([tau]), encoder_hidden_states=cond["prompt_embeds"]).sample
        a = 1.0 if prev is None else abar[prev]
        x0_hat = (z - (1 - a) ** 0.5 * eps) / a**0.5
        z = abar[tau] ** 0.5 * x0_hat + (1 - abar[tau]) ** 0.5 * eps
        var = 0.0 if prev is None else float(ddim._get_variance(torch.tensor(tau), torch.tensor(prev)))
        z = (z + 0.1 * var**0.5 * torch.randn(z.shape, generator=g)).float()
        prev = tau
    torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-5)
    plain = invert(unet, sched, x0, t, cond, num_steps=10, convention="exact")
    assert (ours - plain).abs().max() > 1e-4  # the stochastic term is there
