"""mmalign.toy.evaluate: compare() closed form, side-by-side grid, evaluate_pipeline on the shipped pipeline."""

import numpy as np
import pytest
from PIL import Image

from mmalign.toy.evaluate import compare, evaluate_pipeline, save_side_by_side_grid, score_images
from mmalign.toy.judge import judge
from mmalign.toy.render import render_batch


def _eval(scores, captions=("a", "b"), seeds=(0, 1)):
    return {"scores": list(scores), "captions": list(captions), "seeds": list(seeds)}


def test_compare_counts_ties_half_and_gain_is_difference_of_means():
    base = _eval([0.2, 0.5, 0.5, 0.9])
    aligned = _eval([0.4, 0.5, 0.1, 1.0])
    out = compare(base, aligned)
    assert (out["wins"], out["ties"], out["losses"]) == (2, 1, 1)
    assert out["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert out["mean_gain"] == pytest.approx(np.mean([0.4, 0.5, 0.1, 1.0]) - np.mean([0.2, 0.5, 0.5, 0.9]))
    diff = np.array([0.2, 0.0, -0.4, 0.1])  # paired standard error of the gain: std(ddof=1) / sqrt(n)
    assert out["gain_standard_error"] == pytest.approx(np.sqrt(np.sum((diff - diff.mean()) ** 2) / 3) / 2)
    with pytest.raises(ValueError, match="same captions and seeds"):
        compare(base, _eval([0, 0, 0, 0], seeds=(0, 2)))


def test_score_images_matches_judge():
    caps = ["a small red circle on the left", "a large blue square at the top"]
    images = render_batch(caps, [0, 1])
    out = score_images(images, caps)
    np.testing.assert_allclose(out["scores"], judge(images, caps).numpy(), rtol=1e-6)
    assert out["mean"] == pytest.approx(float(np.mean(out["scores"])))
    assert set(out["terms"]) == {"color", "shape", "position", "size"}


def test_side_by_side_grid(tmp_path):
    caps = ["a small red circle on the left"] * 5
    base, aligned = render_batch(caps, range(5)), render_batch(caps, range(5, 10))
    path = save_side_by_side_grid(base, aligned, tmp_path / "grid.png", captions=caps, columns=2)
    im = np.asarray(Image.open(path).convert("RGB"))
    assert im.shape[1] == 2 * (2 * 128 + 4 + 8) and im.shape[0] > 3 * 128
    # the first cell holds the base image (scaled x2) on the left and the aligned image on the right
    np.testing.assert_array_equal(im[14:14 + 128:2, 0:128:2], base[0])
    np.testing.assert_array_equal(im[14:14 + 128:2, 132:260:2], aligned[0])


@pytest.mark.slow
def test_evaluate_pipeline_is_deterministic_and_scores_its_images(toy_pipeline):
    caps = ["a large red circle on the left", "a small blue square at the top", "a large green triangle in the center"]
    a = evaluate_pipeline(toy_pipeline, caps, [0, 1], num_inference_steps=4, return_images=True)
    b = evaluate_pipeline(toy_pipeline, caps, [0, 1], num_inference_steps=4)
    assert a["num_images"] == 6 and a["images"].shape == (6, 64, 64, 3)
    assert a["scores"] == b["scores"]
    expected = judge(a["images"], [c for c in caps for _ in range(2)])
    np.testing.assert_allclose(a["scores"], expected.numpy(), rtol=1e-6)
    assert a["per_caption"][caps[0]] == pytest.approx(np.mean(a["scores"][:2]))
    assert len(a["per_seed"]) == 2 and a["std_over_seeds"] >= 0
    assert compare(a, b)["win_rate"] == 0.5
    # every (caption, seed) has its own initial noise: image (caption 2, seed 1) is sample_images with image_seed(1, 2)
    from mmalign.toy.evaluate import image_seed
    from mmalign.toy.sampling import sample_images

    assert len({image_seed(s, i) for s in (0, 1) for i in range(3)}) == 6
    again = sample_images(toy_pipeline, [caps[2]], [image_seed(1, 2)], num_inference_steps=4)
    diff = np.abs(again[0].astype(int) - a["images"][2 * 2 + 1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # batch of 1 vs 6: float rounding flips a pixel at most
    assert np.abs(a["images"][2 * 2 + 1].astype(int) - a["images"][2 * 2].astype(int)).mean() > 1  # other noise
