"""The offline CLIP tokenizer (``mmalign/clip_tokenizer.py``) equals open_clip's tokenizer.

Padding differs by design of the two libraries: transformers' ``CLIPTokenizer`` pads with
``<|endoftext|>`` (49407, its ``pad_token`` in the SD tokenizer files), open_clip pads with 0 (``!``).
Models only read up to the first EOS (CLIP pools at the EOS/argmax position), so ids are compared up to
and including the EOS, and the padding of each is checked separately.
"""

from __future__ import annotations

import open_clip
import pytest
from transformers import CLIPTokenizer

from mmalign.clip_tokenizer import MODEL_MAX_LENGTH, load_clip_tokenizer

SOT, EOT = 49406, 49407
CAPTIONS = [
    "a large red circle on the left",
    "A photo of a cat sitting on a mat.",
    "Astronaut riding a horse, 4k, trending on artstation!!",
    "don't   stop   believin'",
    "café crème brûlée",
    "  Mixed CASE, numbers 12345 and symbols #@$%^&*()",
    "emoji 🙂 and 日本語",
    "a very long caption that goes on " * 12,  # > 77 tokens: both truncate and end with EOS
]


@pytest.fixture(scope="module")
def hf_tokenizer(clip_tokenizer_dir):
    return CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))


def test_vocabulary_and_special_tokens(hf_tokenizer):
    assert len(hf_tokenizer) == 49408 and hf_tokenizer.vocab_size == 49408
    assert hf_tokenizer.bos_token_id == SOT and hf_tokenizer.eos_token_id == EOT
    assert hf_tokenizer.pad_token_id == EOT and hf_tokenizer.model_max_length == MODEL_MAX_LENGTH
    assert len(open_clip.tokenizer.SimpleTokenizer().encoder) == 49408


def test_token_ids_equal_open_clip_up_to_eos(hf_tokenizer):
    reference = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS)  # [N, 77], zero-padded
    assert reference.shape == (len(CAPTIONS), MODEL_MAX_LENGTH)
    batch = hf_tokenizer(CAPTIONS, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True)["input_ids"]
    for caption, ours, theirs in zip(CAPTIONS, batch, reference.tolist(), strict=True):
        n = theirs.index(EOT) + 1
        assert ours[:n] == theirs[:n], caption
        assert ours[0] == SOT and ours.index(EOT) == n - 1
        assert set(ours[n:]) <= {EOT} and set(theirs[n:]) <= {0}  # the documented padding difference
    long_ids = batch[-1]
    assert len(long_ids) == MODEL_MAX_LENGTH and long_ids[-1] == EOT and EOT not in long_ids[:-1]
    assert len(hf_tokenizer(CAPTIONS[0])["input_ids"]) == 9  # SOT + 7 words + EOT


def test_load_clip_tokenizer_builds_and_reuses_its_cache(tmp_path):
    tok = load_clip_tokenizer(tmp_path)
    assert (tmp_path / "merges.txt").is_file() and (tmp_path / "vocab.json").is_file()  # cache_dir itself
    again = load_clip_tokenizer(tmp_path)
    ids = tok("a small blue square at the top")["input_ids"]
    assert ids == again("a small blue square at the top")["input_ids"]
    assert ids == open_clip.get_tokenizer("ViT-B-32")(["a small blue square at the top"])[0, : len(ids)].tolist()
