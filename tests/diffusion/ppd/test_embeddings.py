"""User embeddings: a tiny random VLM with a real processor (final-step hidden states across layers), the CLIP
alternative against its closed form, the disk cache, and the leakage-free shot split."""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion.ppd.config import PpdConfig
from mmalign.diffusion.ppd.data import read_shots, split_shots
from mmalign.diffusion.ppd.embeddings import (
    Shot,
    UserEmbeddingCache,
    user_profile_messages,
    vlm_user_embedding,
)
from mmalign.diffusion.ppd.users import embed_users
from mmalign.mllm.model import load_vlm
from mmalign.mllm.model_config import VLMModelConfig

from .conftest import square


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    from mmalign.testing.tiny_vlm import write_tiny_vlm

    return str(write_tiny_vlm("qwen2vl", tmp_path_factory.mktemp("vlm") / "qwen2vl"))


def _shots(offset=0):
    return [Shot(f"a square {i}", square("red", seed=offset + i), square("blue", seed=offset + 10 + i))
            for i in range(2)]


def test_vlm_embedding_is_last_step_hidden_states_across_layers(tiny_vlm_dir):
    model, processor = load_vlm(VLMModelConfig(pretrained=str(tiny_vlm_dir), attn_implementation=None), train_safe=False)
    shots = _shots()
    emb, text = vlm_user_embedding(model, processor, shots, max_new_tokens=3)
    n_layers, hidden = model.config.text_config.num_hidden_layers, model.config.text_config.hidden_size
    assert emb.shape == (n_layers + 1, hidden) and emb.dtype == torch.float32 and isinstance(text, str)

    # Independent computation: greedy generation, then one forward over prompt + generated tokens but the last;
    # the hidden states at the last position are those of the last generation step.
    text_in = processor.apply_chat_template(user_profile_messages(shots), add_generation_prompt=True, tokenize=False)
    assert text_in.count("<|image_pad|>") == 4 and "This is the preferred image." in text_in
    images = [im for s in shots for im in (s.chosen, s.rejected)]
    inputs = processor(text=[text_in], images=images, return_tensors="pt")
    with torch.no_grad():
        seq = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        ids = seq[:, :-1]
        full = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids))
        if "mm_token_type_ids" in inputs:  # text tokens after the prompt are type 0
            types = inputs["mm_token_type_ids"]
            full["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, ids.shape[1] - types.shape[1])], 1)
        out = model(**full, output_hidden_states=True)
    expected = torch.stack([h[0, -1] for h in out.hidden_states]).float()
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-4)
    # Other shots -> another embedding.
    other, _ = vlm_user_embedding(model, processor, _shots(offset=200), max_new_tokens=3)
    assert (other - emb).abs().max() > 1e-4


def test_cache_keyed_by_shots_and_source(tmp_path):
    calls = []

    def compute(shots):
        calls.append(len(shots))
        return torch.full((2, 3), float(len(calls))), "profile"

    cache = UserEmbeddingCache(tmp_path, "vlm:a")
    first, hit = cache.get_or_compute(_shots(), compute)
    again, hit2 = cache.get_or_compute(_shots(), compute)
    assert (hit, hit2) == (False, True) and torch.equal(first, again) and len(calls) == 1
    cache.get_or_compute(_shots(offset=5), compute)  # different pixels -> new key
    UserEmbeddingCache(tmp_path, "vlm:b").get_or_compute(_shots(), compute)  # different model -> new key
    assert len(calls) == 3 and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_split_has_no_leakage_and_embed_users_with_clip(per_user_pairs, tmp_path):
    from mmalign.data import load_preference_data
    from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints
    from scorers import load_scorer

    ds = load_preference_data(per_user_pairs, extra_columns=("user_id",))
    splits, stats = split_shots(ds, n_shots=4, seed=0)
    assert stats == {"users": 3, "users_too_few_pairs": 0, "shot_pairs": 12, "train_pairs": 6}
    for user, (shots, train) in splits.items():
        assert not set(shots) & set(train) and len(shots) == 4
        assert all(ds.records[i].extra["user_id"] == user for i in shots + train)
    few, few_stats = split_shots(ds, n_shots=6)
    assert few == {} and few_stats["users_too_few_pairs"] == 3

    ckpt = save_tiny_scorer_checkpoints(tmp_path / "scorers")["clipscore"]["checkpoint"]
    cfg = PpdConfig(embedding="clip", scorer="clipscore", scorer_checkpoint=ckpt, shots=4)
    embeddings, estats = embed_users(cfg, ds, splits, tmp_path / "users")
    assert estats["users_embedded"] == 3 and estats["embedding_shape"] == [1, 32]
    scorer = load_scorer("clipscore", ckpt)
    shots = read_shots(ds, splits[1][0])
    fc = scorer.image_embeddings([s.chosen for s in shots])
    fr = scorer.image_embeddings([s.rejected for s in shots])
    torch.testing.assert_close(embeddings[1], (fc.mean(0) - fr.mean(0))[None])  # mean(chosen) - mean(rejected)
    again, estats2 = embed_users(cfg, ds, splits, tmp_path / "users")
    assert estats2["users_from_cache"] == 3 and all(torch.equal(again[u], embeddings[u]) for u in embeddings)


def test_embed_users_with_vlm(per_user_pairs, tiny_vlm_dir, tmp_path):
    from mmalign.data import load_preference_data

    ds = load_preference_data(per_user_pairs, extra_columns=("user_id",))
    splits, _ = split_shots(ds, n_shots=2)
    cfg = PpdConfig(embedding="vlm", vlm=tiny_vlm_dir, vlm_dtype="float32", max_new_tokens=2, shots=2)
    embeddings, stats = embed_users(cfg, ds, {u: splits[u] for u in (0, 1)}, tmp_path)
    assert stats["embedding_shape"] == [3, 32] and stats["users_embedded"] == 2
    assert (embeddings[0] - embeddings[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="method.ppd.vlm"):
        embed_users(PpdConfig(embedding="vlm"), ds, splits, tmp_path)


def test_clip_margin_embedding_closed_form_and_its_own_cache_key(per_user_pairs, tmp_path):
    """``u = mean_i g(c_i) * (f(w_i) - f(l_i))``; its coordinates sum to the shots' mean CLIP-score margin; cached
    apart from the plain ``clip`` embedding of the same scorer and shots."""
    from mmalign.data import load_preference_data
    from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints
    from scorers import load_scorer

    ds = load_preference_data(per_user_pairs, extra_columns=("user_id",))
    splits, _ = split_shots(ds, n_shots=4, seed=0)
    ckpt = save_tiny_scorer_checkpoints(tmp_path / "scorers")["clipscore"]["checkpoint"]
    margin_cfg = PpdConfig(embedding="clip_margin", scorer="clipscore", scorer_checkpoint=ckpt, shots=4)
    margin, stats = embed_users(margin_cfg, ds, splits, tmp_path / "users")
    assert stats["embedding_shape"] == [1, 32] and stats["users_embedded"] == 3

    scorer = load_scorer("clipscore", ckpt)
    shots = read_shots(ds, splits[2][0])
    fw = scorer.image_embeddings([s.chosen for s in shots])
    fl = scorer.image_embeddings([s.rejected for s in shots])
    g = scorer.text_embeddings([s.caption for s in shots])
    expected = (g * (fw - fl)).mean(0, keepdim=True)
    torch.testing.assert_close(margin[2], expected)
    cosine_margin = ((g * fw).sum(1) - (g * fl).sum(1)).mean()
    torch.testing.assert_close(margin[2].sum(), cosine_margin, rtol=1e-5, atol=1e-6)

    plain, plain_stats = embed_users(PpdConfig(embedding="clip", scorer="clipscore", scorer_checkpoint=ckpt, shots=4),
                                     ds, splits, tmp_path / "users")
    assert plain_stats["users_from_cache"] == 0  # another source id: never the margin file
    assert not torch.allclose(plain[2], margin[2])
    with pytest.raises(ValueError, match="unknown 'clip_dot'"):
        embed_users(PpdConfig(embedding="clip_dot"), ds, splits, tmp_path / "users")
