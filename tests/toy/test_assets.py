"""The shipped toy assets: the pipeline loads with from_pretrained and generates; the base pipeline is imperfect
but far above chance; the toy scorer loads through scorers.load_scorer("toy") and orders held-out judge-labelled
pairs; the preference data sets load with mmalign.data."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmalign.toy import paths
from mmalign.toy.captions import all_captions, caption_split
from mmalign.toy.judge import judge
from mmalign.toy.render import render_batch
from mmalign.toy.sampling import sample_images

ROOT = paths.assets_dir()


def test_layout_and_caption_lists():
    for rel in ("pipeline/model_index.json", "pipeline/unet/diffusion_pytorch_model.safetensors",
                "pipeline/vae/diffusion_pytorch_model.safetensors", "pipeline/text_encoder/model.safetensors",
                "pipeline/tokenizer/tokenizer_config.json", "pipeline/scheduler/scheduler_config.json", paths.SCORER_CHECKPOINT,
                "data/pairs.parquet", "data/dual_captions.parquet", "data/per_user.parquet", "data/ranked.jsonl",
                "data/unpaired.jsonl", "data/heldout_pairs.parquet", paths.BUILD_REPORT):
        assert (ROOT / rel).is_file(), rel
    train, heldout = caption_split()
    assert paths.read_captions(ROOT / paths.TRAIN_CAPTIONS) == train
    assert paths.read_captions(ROOT / paths.HELDOUT_CAPTIONS) == heldout
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total < 30e6


@pytest.mark.slow
def test_pipeline_generates_and_is_imperfect_but_above_chance(toy_pipeline):
    _, heldout = caption_split()
    caps = heldout[::9][:12]  # spread over the 108 held-out captions (each property is far from its bound)
    images = sample_images(toy_pipeline, caps, list(range(len(caps))))
    assert images.shape == (len(caps), 64, 64, 3) and images.dtype == np.uint8
    base = float(judge(images, caps).mean())
    renders = float(judge(render_batch(caps, range(len(caps))), caps).mean())
    rng = np.random.default_rng(0)
    mismatched = float(judge(images, [all_captions()[i] for i in rng.integers(180, size=len(caps))]).mean())
    # the shipped base is under-trained (see build_report.json): far below renders, never degenerate
    assert base < renders - 0.5 and renders > 0.9, (mismatched, base, renders)
    assert len({im.tobytes() for im in images}) == len(caps)


def test_vae_reconstructions_keep_what_the_judge_measures(toy_pipeline):
    """The VAE is the ceiling of every model decoding through it: reconstructions of fresh renders must score
    near the renders themselves (a 400-step VAE scored 0.66, colour 0.40, and capped the whole toy world)."""
    from mmalign.toy.build import vae_reconstruction_judge

    result = vae_reconstruction_judge(toy_pipeline.vae, seed=12345, n=64)
    assert result["judge_vae_reconstruction"] > 0.9, result
    assert min(result["judge_vae_reconstruction_terms"].values()) > 0.85, result


def _pairs(name):
    t = pq.read_table(ROOT / "data" / name).to_pydict()
    decode = lambda col: [Image.open(io.BytesIO(b)).convert("RGB") for b in t[col]]  # noqa: E731
    return t, decode("jpg_0"), decode("jpg_1")


def test_pairs_labels_agree_with_the_judge():
    t, im0, im1 = _pairs("pairs.parquet")
    s0, s1 = judge(im0, t["caption"]), judge(im1, t["caption"])
    decided = [i for i, lab in enumerate(t["label_0"]) if lab != 0.5 and abs(float(s0[i] - s1[i])) > 0.05]
    agree = [(float(s0[i]) > float(s1[i])) == (t["label_0"][i] == 1.0) for i in decided]
    assert len(decided) > 10 and np.mean(agree) > 0.9  # JPEG re-encoding may flip near-ties only
    assert set(t["caption"]) <= set(caption_split()[0])


def test_toy_scorer_loads_and_orders_heldout_pairs():
    scorers = pytest.importorskip("scorers")
    from scorers.accuracy import pickapic_accuracy

    scorer = scorers.load_scorer("toy", checkpoint=paths.scorer_checkpoint())
    t, im0, im1 = _pairs("heldout_pairs.parquet")
    assert set(t["caption"]) <= set(caption_split()[1])
    s0, s1 = scorer.score(im0, t["caption"], raw=True), scorer.score(im1, t["caption"], raw=True)
    p = torch.softmax(torch.stack([s0, s1], 1).double() * float(scorer.logit_scale), 1)
    acc = pickapic_accuracy(p[:, 0], p[:, 1], t["label_0"], threshold=0.0)
    report = json.loads((ROOT / paths.BUILD_REPORT).read_text())
    assert acc == pytest.approx(report["scorer_heldout_pairwise_accuracy"], abs=1e-6)
    assert acc >= 0.75  # the goal; 0.79 on the shipped build (72 held-out pairs)


def test_preference_data_sets_load_with_mmalign_data():
    from mmalign.data.dataset import load_preference_data

    data = paths.data_dir()
    pairs = load_preference_data(data / "pairs.parquet", "pairs")
    assert len(pairs) > 100
    dual = load_preference_data(data / "dual_captions.parquet", "pairs")
    assert len(dual) == len(pairs)
    ranked = load_preference_data(data / "ranked.jsonl", "ranked")
    assert len(ranked) == len(caption_split()[0])
    unpaired = load_preference_data(data / "unpaired.jsonl", "unpaired")
    assert len(unpaired) > 100
    users = load_preference_data(data / "per_user.parquet", "pairs", extra_columns=("user_id",))
    assert len(users) > 100
