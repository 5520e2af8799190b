"""``mmalign ppd-sample``: a user, an interpolation endpoint equal to that user, and the base without a user."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mmalign.cli import main
from mmalign.diffusion.ppd import UserConditionedUNet, save_user_adapter
from mmalign.diffusion.ppd.export import save_user_embeddings


def test_ppd_sample_users_and_interpolation(tmp_path):
    from mmalign.testing.tiny_diffusion import load_pipeline, save_tiny_pipeline

    model_dir = save_tiny_pipeline("sd15", tmp_path / "sd15")
    pipe = load_pipeline(model_dir)
    model = UserConditionedUNet.build(pipe.unet, (1, 16), init="text")
    adapter = save_user_adapter(model, tmp_path / "adapter")
    g = torch.Generator().manual_seed(0)
    save_user_embeddings({"alice": 3 * torch.randn(1, 16, generator=g), "bob": 3 * torch.randn(1, 16, generator=g)},
                         adapter / "user_embeddings.safetensors")

    def sample(name, *user_args):
        out = tmp_path / f"{name}.png"
        assert main(["ppd-sample", str(model_dir), str(adapter), *user_args, "--prompt", "a red square",
                     "--steps", "2", "--guidance", "3", "--out", str(out)]) == 0
        return np.asarray(Image.open(out))

    alice, bob, base = sample("a", "--user", "alice"), sample("b", "--user", "bob"), sample("n", "--user", "none")
    assert np.array_equal(sample("a0", "--user", "alice", "--user-b", "bob", "--alpha", "0"), alice)
    assert np.array_equal(sample("a1", "--user", "alice", "--user-b", "bob", "--alpha", "1"), bob)
    assert not np.array_equal(alice, bob) and not np.array_equal(alice, base)
    assert np.array_equal(sample("s0", "--user", "alice", "--scale", "0"), base)  # scale 0: the base model
