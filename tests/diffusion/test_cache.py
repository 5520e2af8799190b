"""The latent/text cache: reused by a second run (nothing re-encoded), invalidated by a resolution or model change;
corrupt samples are counted and skipped in the first pass."""

from __future__ import annotations

import pytest
import torch

from mmalign.data import SkipCounter, TooManyBadSamplesError, load_preference_data
from mmalign.diffusion.adapter import load_parts
from mmalign.diffusion.batches import CachedDataset, build_cache, collate_members
from mmalign.diffusion.cache import LatentTextCache


def _build(parts, data_path, root, resolution, **kw):
    dataset = load_preference_data(data_path, kind="pairs", bad_image="drop", max_bad_fraction=0.5)
    cache = LatentTextCache.for_model(parts, resolution, root)
    entries, stats = build_cache(dataset, "pairs", parts, cache, resolution, "cpu", progress=False, **kw)
    return cache, entries, stats


def test_cache_reused_and_invalidated(tiny_model_dirs, data_dirs, tmp_path):
    parts = load_parts(tiny_model_dirs["sd15"])
    cache, entries, stats = _build(parts, data_dirs["pairs"], tmp_path, 32)
    assert stats["images_encoded"] == 8 and stats["prompts_encoded"] == 4 and stats["skipped"] == 0

    _, entries2, stats2 = _build(parts, data_dirs["pairs"], tmp_path, 32)
    assert stats2["images_encoded"] == 0 and stats2["prompts_encoded"] == 0 and stats2["images_reused"] == 8
    assert stats2["decoded"] == 0  # fully cached items are recognised from their content keys, never decoded
    assert entries2 == entries

    other_res, _, stats3 = _build(parts, data_dirs["pairs"], tmp_path, 16)
    assert other_res.latent_dir != cache.latent_dir and stats3["images_encoded"] == 8
    assert stats3["prompts_encoded"] == 0  # text embeddings do not depend on the resolution
    assert other_res.get_image(entries[0]["image_keys"][0])["mean"].shape == (4, 8, 8)

    other_model = load_parts(tiny_model_dirs["sd2v"])  # same architecture, different weights (seeded the same)
    with torch.no_grad():
        next(other_model.vae.parameters()).add_(0.01)
    assert LatentTextCache.for_model(other_model, 32, tmp_path).latent_dir != cache.latent_dir

    # cached examples collate into the [w; l] layout
    batch = collate_members([CachedDataset(entries, cache)[i] for i in range(2)])
    assert batch["latent_mean"].shape == (4, 4, 16, 16) and batch["prompt_embeds"].shape == (4, 77, 32)
    assert batch["prompts"][:2] == batch["prompts"][2:] and batch["groups"] == 2


def _corrupt_copy(data_dirs, tmp_path):
    """The pairs data set with the first chosen image overwritten by garbage bytes."""
    import json
    import shutil
    from pathlib import Path

    data = tmp_path / "data"
    shutil.copytree(Path(data_dirs["pairs"]).parent, data)
    first = json.loads((data / "data.jsonl").read_text().splitlines()[0])
    (data / first["chosen"]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return data


def test_corrupt_image_is_counted_and_skipped(tiny_model_dirs, data_dirs, tmp_path):
    data = _corrupt_copy(data_dirs, tmp_path)
    parts = load_parts(tiny_model_dirs["sd15"])
    _, entries, stats = _build(parts, str(data / "data.jsonl"), tmp_path / "c", 32, max_bad_fraction=0.5)
    assert stats["skipped"] == 1 and len(entries) == 3
    assert stats["skips"]["bad_samples"] == 1 and "data.jsonl" in stats["skips"]["last_bad"]  # the one skip report
    with pytest.raises(TooManyBadSamplesError, match="data.jsonl"):
        _build(parts, str(data / "data.jsonl"), tmp_path / "c", 32, max_bad_fraction=0.1)
    with pytest.raises(TooManyBadSamplesError, match="data.on_bad_row=error.*data.jsonl"):  # the first one stops
        _build(parts, str(data / "data.jsonl"), tmp_path / "c", 32, counter=SkipCounter(4, 0.5, "error"))


@pytest.mark.slow
def test_corrupt_image_uncached_run_counts_skip(run_recipe, tiny_model_dirs, data_dirs, tmp_path):
    """Without the cache the readers replace the bad item and the step's SkipCounter counts it; the run finishes."""
    data = _corrupt_copy(data_dirs, tmp_path)
    summary = run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], str(data / "data.jsonl"), "data.cache=false",
                         "data.on_bad_row=skip", "data.max_bad_fraction=0.5")
    assert summary["steps"] == 2
    assert summary["data"]["skips"]["bad_samples"] == 1 and "data.jsonl" in summary["data"]["skips"]["last_bad"]


def test_damaged_entries_are_re_encoded_and_counted(tiny_model_dirs, data_dirs, tmp_path):
    """A truncated latent entry and an overwritten text entry (a full disk, a copy cut short) are found by the
    header check, re-encoded and counted; the data they give back equals a fresh encode (issue 18)."""
    parts = load_parts(tiny_model_dirs["sd15"])
    cache, entries, _ = _build(parts, data_dirs["pairs"], tmp_path, 32)
    key, prompt = entries[0]["image_keys"][0], entries[0]["prompts"][0]
    want_latent = {k: v.clone() for k, v in cache.get_image(key).items()}  # copies: the files are damaged below
    want_text = {k: v.clone() for k, v in cache.get_prompt(prompt).items()}
    latent_file = cache._path(cache.latent_dir, key)
    latent_file.write_bytes(latent_file.read_bytes()[:-7])
    from mmalign.diffusion.cache import prompt_key

    (cache._path(cache.text_dir, prompt_key(prompt))).write_bytes(b"\0" * 64)

    again, entries2, stats = _build(parts, data_dirs["pairs"], tmp_path, 32)
    assert stats["entries_damaged"] == 2 and stats["images_encoded"] == 1 and stats["prompts_encoded"] == 1
    assert entries2 == entries
    for got, want in ((again.get_image(key), want_latent), (again.get_prompt(prompt), want_text)):
        assert got.keys() == want.keys()
        for k in want:  # encoded alone instead of in a batch of 8: equal up to float rounding
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)
