"""The user branch: exact base behaviour without a user, a change with one, interpolation endpoints, export/reload."""

from __future__ import annotations

import copy

import pytest
import torch

from mmalign.diffusion.ppd import (
    UserConditionedUNet,
    generate,
    interpolate_users,
    load_user_adapter,
    save_user_adapter,
    set_user_scale,
)


def _inputs(batch=2, cross=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 16, 16, generator=g), torch.tensor([10, 700][:batch]),
            torch.randn(batch, 77, cross, generator=g))


def _randomise_user_branch(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("init", ["zero", "text"])
def test_no_user_equals_base_exactly_and_user_changes_output(sd15, init):
    base = copy.deepcopy(sd15.unet)
    model = UserConditionedUNet.build(sd15.unet, (3, 24), init=init)
    x, t, c = _inputs()
    u = torch.randn(2, 3, 24)
    with torch.no_grad():
        ref = base(x, t, c).sample
        assert torch.equal(model(x, t, c).sample, ref)  # no user embedding: bit-identical to the base UNet
        with_user = model(x, t, c, user_embeds=u).sample
        if init == "zero":  # W_v' = 0: the branch adds exactly 0 until trained
            assert torch.equal(with_user, ref)
            _randomise_user_branch(model)
            assert torch.equal(model(x, t, c).sample, ref)  # still exact with trained weights
            with_user = model(x, t, c, user_embeds=u).sample
        assert (with_user - ref).abs().max() > 1e-3
        other = model(x, t, c, user_embeds=torch.randn(2, 3, 24)).sample
        assert (other - with_user).abs().max() > 1e-4  # different users, different outputs
        set_user_scale(sd15.unet, 0.0)
        assert torch.equal(model(x, t, c, user_embeds=u).sample, ref)  # scale 0 switches the branch off


def test_only_new_parameters_require_grad(sd15):
    model = UserConditionedUNet.build(sd15.unet, (1, 16), num_tokens=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("to_k_ip" in n or "to_v_ip" in n or n.startswith("projection.")) for n in trainable)
    n_attn2 = sum(1 for n in sd15.unet.attn_processors if n.endswith("attn2.processor"))
    assert sum("to_k_ip" in n for n in trainable) == n_attn2
    assert model.user_tokens(torch.randn(5, 16)).shape == (5, 4, 32)  # a vector embedding -> num_tokens tokens


def test_sdxl_no_user_equals_base():
    from mmalign.testing.tiny_diffusion import tiny_pipeline

    pipe = tiny_pipeline("sdxl")
    base = copy.deepcopy(pipe.unet)
    model = UserConditionedUNet.build(pipe.unet, (2, 8))
    _randomise_user_branch(model)
    x, t, c = _inputs(cross=64)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]] * 2)}
    with torch.no_grad():
        ref = base(x, t, c, added_cond_kwargs=added).sample
        assert torch.equal(model(x, t, c, added_cond_kwargs=added).sample, ref)
        assert (model(x, t, c, user_embeds=torch.randn(2, 2, 8), added_cond_kwargs=added).sample - ref).abs().max() > 1e-4


def _images(pipe, model, u, steps=3):
    return generate(pipe, model, ["a red square", "a blue circle"], u, num_inference_steps=steps,
                    guidance_scale=3.0, seed=7, output_type="pt")


def test_generation_with_users_and_interpolation_endpoints(sd15):
    model = UserConditionedUNet.build(sd15.unet, (3, 24))
    _randomise_user_branch(model)
    g = torch.Generator().manual_seed(3)
    u_a, u_b = torch.randn(3, 24, generator=g), torch.randn(3, 24, generator=g)
    base = _images(sd15, model, None)
    img_a, img_b = _images(sd15, model, u_a), _images(sd15, model, u_b)
    assert (img_a - base).abs().max() > 1e-3 and (img_a - img_b).abs().max() > 1e-3
    assert torch.equal(_images(sd15, model, interpolate_users(u_a, u_b, 0.0)), img_a)
    assert torch.equal(_images(sd15, model, interpolate_users(u_a, u_b, 1.0)), img_b)
    mid = _images(sd15, model, interpolate_users(u_a, u_b, 0.5))
    assert (mid - img_a).abs().max() > 1e-4 and (mid - img_b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="different shapes"):
        interpolate_users(u_a, u_b[:2], 0.5)


def test_export_reload_reproduces_outputs(sd15, tmp_path):
    from mmalign.testing.tiny_diffusion import tiny_pipeline

    model = UserConditionedUNet.build(sd15.unet, (1, 16), num_tokens=3, scale=0.7)
    _randomise_user_branch(model, seed=5)
    u = torch.randn(1, 16)
    x, t, c = _inputs()
    with torch.no_grad():
        expected = model(x, t, c, user_embeds=u.expand(2, -1)).sample
    images = _images(sd15, model, u)
    out = save_user_adapter(model, tmp_path / "adapter", extra={"embedding": "clip"})
    assert {p.name for p in out.iterdir()} == {"user_adapter.safetensors", "user_adapter_config.json"}

    fresh = tiny_pipeline("sd15", seed=0)  # the same base weights, no adapter
    reloaded = load_user_adapter(fresh.unet, out)
    with torch.no_grad():
        assert torch.equal(reloaded(x, t, c, user_embeds=u.expand(2, -1)).sample, expected)
    assert torch.equal(_images(fresh, reloaded, u), images)

    other = tiny_pipeline("sdxl")  # cross-attention width 64: a clear error
    with pytest.raises(ValueError, match="cross_attention_dim"):
        load_user_adapter(other.unet, out)
