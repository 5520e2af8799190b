"""Inference with components in different dtypes, with and without autocast (issue 14 items 1-2).

Training leaves an SDXL pipeline with the UNet's frozen base and the text encoders in the compute dtype and the
VAE in float32 (``model.vae_dtype``). A plain ``pipe(...)`` only runs when autocast reconciles them, and under
autocast the float32 VAE's convolutions compute in bf16/fp16 — the SDXL VAE overflows there.
:func:`mmalign.diffusion.sampling.generate` must run with autocast on or off and decode in the VAE's dtype.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion.sampling import generate

KW = dict(num_inference_steps=2, guidance_scale=3.0, height=32, width=32)


def _pipe(kind: str, unet_dtype: torch.dtype, text_dtype: torch.dtype, vae_dtype: torch.dtype = torch.float32):
    from mmalign.testing.tiny_diffusion import tiny_pipeline

    pipe = tiny_pipeline(kind, seed=0)
    pipe.unet.to(unet_dtype)
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(text_dtype)
    pipe.vae.to(vae_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _decoder_output_dtypes(pipe) -> tuple[list, list]:
    seen: list[torch.dtype] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
               for m in pipe.vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    return seen, handles


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_lora_layout_without_autocast_runs_and_plain_pipeline_does_not(kind):
    pipe = _pipe(kind, torch.bfloat16, torch.bfloat16)  # LoRA run: base + text encoders bf16, VAE float32
    with pytest.raises(RuntimeError, match="type|dtype"):  # what the validation grid did before (no autocast)
        pipe("a red square", generator=torch.Generator().manual_seed(0), **KW)
    images = generate(pipe, ["a red square", "a blue circle"], output_type="pt",
                      generator=torch.Generator().manual_seed(0), **KW)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.std() > 0


def test_full_fine_tuning_layout_fp32_unet_fp16_text_encoders():
    pipe = _pipe("sd15", torch.float32, torch.float16)  # full FT: fp32 master UNet, fp16 text encoder
    images = generate(pipe, "a red square", output_type="np", generator=torch.Generator().manual_seed(0), **KW)
    assert images.shape == (1, 32, 32, 3) and (images.std() > 0)


def test_vae_decodes_in_its_own_dtype_under_autocast():
    """Issue 14 item 2: under autocast every decoder conv of the float32 VAE computed in bf16."""
    pipe = _pipe("sdxl", torch.bfloat16, torch.bfloat16)
    seen, handles = _decoder_output_dtypes(pipe)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pipe("a red square", generator=torch.Generator().manual_seed(0), **KW)
    assert set(seen) == {torch.bfloat16}  # the plain pipeline: the "float32" VAE ran in bf16
    seen.clear()
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    generate(pipe, "a red square", autocast=autocast, generator=torch.Generator().manual_seed(0), **KW)
    for h in handles:
        h.remove()
    assert seen and set(seen) == {torch.float32}


def test_autocast_is_only_a_speed_up():
    """The same images (to bf16 rounding) with autocast on and off."""
    pipe = _pipe("sd15", torch.bfloat16, torch.bfloat16)
    off = generate(pipe, "a red square", output_type="pt", generator=torch.Generator().manual_seed(0), **KW)
    on = generate(pipe, "a red square", output_type="pt", generator=torch.Generator().manual_seed(0),
                  autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16), **KW)
    assert (on - off).abs().max() < 0.05


def test_timestep_is_not_cast():
    """bf16 cannot hold every integer timestep (981 -> 980): the denoiser gets the scheduler's own timestep."""
    from diffusers import EulerDiscreteScheduler

    pipe = _pipe("sd15", torch.bfloat16, torch.bfloat16)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # float32 timesteps
    timesteps: list[torch.Tensor] = []
    handle = pipe.unet.time_proj.register_forward_pre_hook(lambda _m, args: timesteps.append(args[0]))
    try:
        generate(pipe, "a red square", generator=torch.Generator().manual_seed(0), **KW)
    finally:
        handle.remove()
    assert timesteps and all(t.dtype != torch.bfloat16 for t in timesteps)
