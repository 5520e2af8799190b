"""PPD end to end through the real recipe (recipes/diffusion.py, method.name=ppd) on a tiny pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import REPO

SMALL_RUN = [
    "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1", "train.mixed_precision=no",
    "train.optimizer=adamw", "train.warmup_steps=0", "train.lr_scheduler=constant", "train.lr=1e-2",
    "train.checkpoint_every=0", "train.progress_bar=false", "model.attn_implementation=sdpa", "data.resolution=32",
    "validation.prompts=[]",
]


def _run(argv):
    from mmalign.recipe_entry import run_recipe_file

    return run_recipe_file(REPO / "recipes" / "diffusion.py", argv)


@pytest.mark.slow
def test_toy_ppd_config_runs_end_to_end_and_exports(per_user_pairs, tmp_path):
    from mmalign.diffusion.ppd import load_user_adapter
    from mmalign.diffusion.ppd.export import load_user_embeddings
    from mmalign.testing.tiny_diffusion import load_pipeline, save_tiny_pipeline
    from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints

    model_dir = str(save_tiny_pipeline("sd15", tmp_path / "sd15"))
    ckpt = save_tiny_scorer_checkpoints(tmp_path / "scorers")["clipscore"]["checkpoint"]
    out = tmp_path / "out"
    summary = _run(["--config", str(REPO / "recipes/configs/diffusion/toy_ppd.yaml"), *SMALL_RUN,
                    f"model.pretrained={model_dir}", f"data.path={per_user_pairs}", f"output_dir={out}",
                    f"data.cache_dir={tmp_path / 'cache'}", "method.ppd.scorer=clipscore",
                    f"method.ppd.scorer_checkpoint={ckpt}", f"method.ppd.cache_dir={tmp_path / 'users'}",
                    "method.ppd.init=text"])
    assert summary["method"] == "ppd" and summary["steps"] == 3
    assert summary["setup"]["mode"] == "ppd_user_adapter" and summary["setup"]["trainable_params"] > 0
    data = summary["data"]
    assert data["users"] == 3 and data["train_pairs"] == 6 and data["items"] == 6
    assert data["embedding_shape"] == [1, 32] and data["users_embedded"] == 3
    assert json.loads((out / "summary.json").read_text())["export"].endswith("user_adapter")

    # The exported adapter on a fresh copy of the base reproduces a forward of the trained model; base unchanged.
    pipe = load_pipeline(model_dir)
    model = load_user_adapter(pipe.unet, out / "user_adapter")
    untouched = load_pipeline(model_dir).unet
    x, t, c = torch.randn(2, 4, 16, 16), torch.tensor([5, 900]), torch.randn(2, 77, 32)
    u = torch.randn(2, 1, 32)
    with torch.no_grad():
        assert torch.equal(model(x, t, c).sample, untouched(x, t, c).sample)
        assert (model(x, t, c, user_embeds=u).sample - untouched(x, t, c).sample).abs().max() > 1e-4
    config = json.loads((out / "user_adapter" / "user_adapter_config.json").read_text())
    assert config["embedding"] == "clip_margin" and config["shots"] == 4  # toy_ppd.yaml's embedding
    users = load_user_embeddings(out / "user_adapter")  # the training users' embeddings travel with the adapter
    assert sorted(users) == ["0", "1", "2"] and all(u.shape == (1, 32) for u in users.values())
    with torch.no_grad():
        assert (model(x, t, c, user_embeds=users["0"].expand(2, -1, -1)).sample
                - model(x, t, c, user_embeds=users["1"].expand(2, -1, -1)).sample).abs().max() > 0
