"""Random flips: per-image draws (the official trainers' per-image RandomHorizontalFlip) or one per pair, uncached and
cached (both orientations encoded, each example reading the drawn one)."""

from __future__ import annotations

import torch

from mmalign.data import load_preference_data
from mmalign.diffusion.adapter import encode_pixels, load_parts, preprocess_image
from mmalign.diffusion.batches import CachedDataset, PixelDataset, build_cache
from mmalign.diffusion.cache import LatentTextCache
from mmalign.diffusion.flips import draw_flips, flipped_key


def test_draws_per_image_and_per_pair():
    torch.manual_seed(0)
    per_image = [draw_flips(2, True, "per_image") for _ in range(400)]
    torch.manual_seed(0)
    pair = [draw_flips(2, True, "pair") for _ in range(400)]
    differ = sum(a != b for a, b in per_image) / 400
    assert 0.4 < differ < 0.6  # independent p = 0.5 draws: the two images differ half of the time
    assert 0.4 < sum(a for a, _ in per_image) / 400 < 0.6
    assert all(a == b for a, b in pair) and 0.4 < sum(a for a, _ in pair) / 400 < 0.6
    assert draw_flips(2, False, "per_image") == [False, False]


def _dataset(data_dirs):
    return load_preference_data(data_dirs["pairs"], kind="pairs", bad_image="drop")


def test_uncached_per_image_flips_each_image_with_its_own_draw(data_dirs):
    dataset = _dataset(data_dirs)
    pixels = PixelDataset(dataset, "pairs", 32, random_flip=True, flip_mode="per_image")
    item = dataset[0]
    plain = [preprocess_image(item[k], 32)[0] for k in ("chosen", "rejected")]
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        expected = draw_flips(2, True, "per_image")
        torch.manual_seed(seed)
        example = pixels[0]
        for m in range(2):
            target = plain[m].flip(-1) if expected[m] else plain[m]
            torch.testing.assert_close(example["pixels"][m], target)
        seen.add(tuple(expected))
    assert (True, False) in seen or (False, True) in seen  # the pair is not flipped together


def test_cache_stores_both_orientations_and_reads_the_drawn_one(tiny_model_dirs, data_dirs, tmp_path):
    parts = load_parts(tiny_model_dirs["sd15"])
    dataset = _dataset(data_dirs)

    def build(flips: bool):
        cache = LatentTextCache.for_model(parts, 32, tmp_path)
        return (cache, *build_cache(dataset, "pairs", parts, cache, 32, "cpu", progress=False, flips=flips))

    assert build(False)[2]["images_encoded"] == 8
    assert build(True)[2]["images_encoded"] == 8  # only the flipped orientations were missing
    cache, entries, again = build(True)
    assert again["images_encoded"] == 0 and again["decoded"] == 0

    item, key = dataset[0], entries[0]["image_keys"][0]
    mean, _ = encode_pixels(parts, preprocess_image(item["chosen"], 32, flip=True)[0][None])
    torch.testing.assert_close(cache.get_image(flipped_key(key))["mean"], mean[0])  # the flipped image's latent
    assert (cache.get_image(flipped_key(key))["mean"] - cache.get_image(key)["mean"].flip(-1)).abs().max() > 1e-4

    cached = CachedDataset(entries, cache, random_flip=True, flip_mode="per_image")
    for seed in range(6):
        torch.manual_seed(seed)
        expected = draw_flips(2, True, "per_image")
        torch.manual_seed(seed)
        example = cached[0]
        for m, k in enumerate(entries[0]["image_keys"]):
            stored = cache.get_image(flipped_key(k) if expected[m] else k)
            torch.testing.assert_close(example["latent_mean"][m], stored["mean"])
        assert example["image_keys"] == entries[0]["image_keys"]  # soft labels are looked up by the original key
    plain = CachedDataset(entries, cache)[0]
    torch.testing.assert_close(plain["latent_mean"][0], cache.get_image(key)["mean"])
