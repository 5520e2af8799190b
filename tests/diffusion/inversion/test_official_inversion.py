"""The ``official`` inversion convention equals diffusers 0.20's ``DDIMInverseScheduler`` + the official SmPO / InPO
loops (transcribed in ``official_ddim020.py``) on tiny real UNets, and gives noise-like implied noise on the shipped
toy base (issue 16)."""

from __future__ import annotations

import io

import pytest
import torch

from mmalign.diffusion.inversion.ddim import invert
from mmalign.diffusion.inversion.plan import inversion_plan, official_timesteps
from mmalign.diffusion.noise_providers import NoiseConfig, checked, inversion_noise

from .official_ddim020 import (
    DDIMInverseScheduler020,
    batched_loop,
    inpo_loop,
    official_implied_noise,
    smpo_loop,
)

TS = [0, 1, 2, 37, 101, 102, 502, 801, 850, 901, 950, 999]


def _inputs(kind: str, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, 16, 16, generator=g) * 0.8
    cond = {"prompt_embeds": torch.randn(n, 77, 64 if kind == "sdxl" else 32, generator=g)}
    if kind == "sdxl":
        cond["pooled"] = torch.randn(n, 32, generator=g)
        cond["time_ids"] = torch.tensor([[32.0, 32, 0, 0, 32, 32]] * n)
    return x0, cond


def _official(config: dict, steps: int) -> DDIMInverseScheduler020:
    inv = DDIMInverseScheduler020(dict(config))
    inv.set_timesteps(steps)
    return inv


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("steps", [2, 5, 10, 25, 50])
def test_grid_equals_diffusers_020_set_timesteps(spacing, offset, steps):
    config = {"num_train_timesteps": 1000, "steps_offset": offset, "timestep_spacing": spacing}
    grid, stride = official_timesteps(steps, config)
    assert grid == _official(config, steps).timesteps.tolist() and stride == 1000 // steps


def test_stable_diffusion_grids_and_levels(models):
    _, sched = models["sd15"]
    assert official_timesteps(10, sched.config)[0] == [-99, 1, 101, 201, 301, 401, 501, 601, 701, 801]
    assert official_timesteps(5, sched.config)[0] == [-199, 1, 201, 401, 601]
    plan = inversion_plan(torch.tensor([0, 37, 101, 102, 950]), 10, sched, "official")
    # queried at the level of the input latent, ending at the next grid level >= t (capped at 901)
    assert [[s.query for s in p] for p in plan.steps][:4] == [[-99], [-99, 1], [-99, 1], [-99, 1, 101]]
    assert len(plan.steps[4]) == 10 and plan.steps[4][-1].query == 801
    abar = sched.alphas_cumprod.double()
    first = plan.steps[0][0]
    assert first.src == pytest.approx(float(abar[0])) and first.dst == pytest.approx(float(abar[1]))
    assert first.src == pytest.approx(0.99915, abs=1e-6)  # initial_alpha_cumprod (set_alpha_to_one: false)
    assert plan.steps[4][-1].dst == pytest.approx(float(abar[901])) and plan.clip is None
    with pytest.raises(ValueError, match="inversion_steps"):
        official_timesteps(1, sched.config)


@pytest.mark.parametrize("kind", ["sd15", "sd2v", "sdxl"])
def test_ddim_inversion_equals_the_official_loop_per_sample(models, kind):
    """InPO's loop (eta 0 here) on one sample at a time vs mmalign batched with a per-sample t (batch 12)."""
    unet, sched = models[kind]
    t = torch.tensor(TS)
    x0, cond = _inputs(kind, len(TS))
    ours = invert(unet, sched, x0, t, cond, num_steps=10, prediction_type=sched.config.prediction_type)
    inv = _official(sched.config, 10)
    for i, ti in enumerate(TS):
        one = inpo_loop(unet, inv, x0[i : i + 1], ti, {k: v[i : i + 1] for k, v in cond.items()}, 0.0)
        torch.testing.assert_close(ours[i : i + 1], one, rtol=1e-5, atol=1e-5)


def test_renoise_inversion_equals_the_official_smpo_loop(models):
    """SmPO SD1.5: 5 grid points, one re-prediction at the same (input-level) timestep."""
    unet, sched = models["sd15"]
    x0, cond = _inputs("sd15", len(TS))
    ours = invert(unet, sched, x0, torch.tensor(TS), cond, num_steps=5, renoise_iters=1)
    inv = _official(sched.config, 5)
    for i, ti in enumerate(TS):
        one = smpo_loop(unet, inv, x0[i : i + 1], ti, {k: v[i : i + 1] for k, v in cond.items()})
        torch.testing.assert_close(ours[i : i + 1], one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t0", [37, 430, 960])
def test_stochastic_inversion_and_implied_noise_equal_the_official_inpo_pair(models, t0):
    """One official batch (w and l of a pair share t): the eta = 0.1 draws, the steps and the implied noise."""
    unet, sched = models["sd15"]
    x0, cond = _inputs("sd15", 2, seed=3)
    t = torch.tensor([t0, t0])
    torch.manual_seed(11)
    eps, x_t = inversion_noise(unet, sched, x0, t, cond, num_steps=10, eta=0.1)
    torch.manual_seed(11)
    noisy = inpo_loop(unet, _official(sched.config, 10), x0, t0, cond, 0.1)
    expected = official_implied_noise(noisy, x0, sched.alphas_cumprod, t0)
    torch.testing.assert_close(eps, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_t, noisy, rtol=1e-5, atol=1e-5)
    torch.manual_seed(11)
    plain = invert(unet, sched, x0, t, cond, num_steps=10)
    assert (plain - noisy).abs().max() > 1e-4  # the stochastic term is there (even on the first step)


def test_batched_official_loop_with_eta_and_clip_sample(models):
    """Per-sample t with the eta draws of one batch, and a scheduler config with clip_sample: true (x0_hat clamp)."""
    from diffusers import DDPMScheduler

    unet, sched = models["sd15"]
    clipped = DDPMScheduler.from_config({**sched.config, "clip_sample": True, "clip_sample_range": 0.5})
    x0, cond = _inputs("sd15", len(TS), seed=4)
    t = torch.tensor(TS)
    ours = []
    for scheduler in (sched, clipped):
        torch.manual_seed(2)
        ours.append(invert(unet, scheduler, x0, t, cond, num_steps=10, eta=0.1))
        torch.manual_seed(2)
        theirs = batched_loop(unet, _official(scheduler.config, 10), x0, t, cond, renoise=False, inversion_eta=0.1)
        torch.testing.assert_close(ours[-1], theirs, rtol=1e-5, atol=1e-5)
    assert (ours[0] - ours[1]).abs().max() > 1e-3  # the clamp acted


def test_convention_is_a_validated_config_key():
    assert checked(NoiseConfig(), "inpo").convention == "official"
    with pytest.raises(ValueError, match="method.inpo.noise.convention"):
        checked(NoiseConfig(convention="diffusers022"), "inpo")


def test_official_implied_noise_of_the_toy_base_is_not_the_image():
    """Issue 16: on the shipped toy pipeline the exact grid's implied noise keeps a third of the clean latent
    (cosine ~ +0.33); the official convention's is about uncorrelated with it (|mean cosine| < 0.1)."""
    import pyarrow.parquet as pq
    from PIL import Image

    from mmalign.diffusion.adapter import encode_pixels, encode_text, load_parts, preprocess_image
    from mmalign.toy import paths

    parts = load_parts(str(paths.pipeline_dir()))
    rows = pq.read_table(paths.data_dir() / "pairs.parquet").slice(0, 6).to_pylist()
    images = [Image.open(io.BytesIO(r[k])) for r in rows for k in ("jpg_0", "jpg_1")]
    x0, _ = encode_pixels(parts, torch.stack([preprocess_image(im, 64)[0] for im in images]))
    cond = encode_text(parts, [r["caption"] for r in rows for _ in range(2)], "cpu")
    t = torch.randint(0, 1000, (len(images),), generator=torch.Generator().manual_seed(0))
    cosine = {}
    for convention in ("official", "exact"):
        for kwargs in ({"num_steps": 10, "eta": 0.1}, {"num_steps": 5, "renoise_iters": 1}):  # InPO, SmPO SD1.5
            torch.manual_seed(0)
            eps, _ = inversion_noise(parts.unet, parts.scheduler, x0, t, cond, convention=convention, **kwargs)
            c = torch.nn.functional.cosine_similarity(eps.flatten(1), x0.flatten(1), dim=1).mean()
            cosine[(convention, kwargs["num_steps"])] = float(c)
    print(cosine)
    assert abs(cosine[("official", 10)]) < 0.1 and abs(cosine[("official", 5)]) < 0.1
    assert cosine[("exact", 10)] > 0.25 and cosine[("exact", 5)] > 0.25
