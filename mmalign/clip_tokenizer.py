"""The real CLIP BPE tokenizer, offline: built from the vocabulary that open_clip ships.

open_clip's ``bpe_simple_vocab_16e6.txt.gz`` holds the merges of OpenAI's CLIP tokenizer. The
transformers ``CLIPTokenizer`` files (``vocab.json`` + ``merges.txt``) are derived from it exactly as
OpenAI's ``SimpleTokenizer`` builds its vocabulary: 256 byte symbols, the same with ``</w>``, the first
48,894 merges, then ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 tokens). No network is needed.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2  # as in OpenAI CLIP's SimpleTokenizer
MODEL_MAX_LENGTH = 77


def _bytes_to_unicode() -> list[str]:
    """OpenAI CLIP / GPT-2 byte → printable-unicode table, in vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_clip_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and tokenizer configs for ``CLIPTokenizer.from_pretrained``."""
    from open_clip.tokenizer import default_bpe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    symbols = _bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    (out / "tokenizer_config.json").write_text(json.dumps({
        **special, "model_max_length": MODEL_MAX_LENGTH, "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer", "clean_up_tokenization_spaces": False,
    }))
    return out


def load_clip_tokenizer(cache_dir: str | os.PathLike | None = None):
    """A ``transformers.CLIPTokenizer`` with OpenAI CLIP's vocabulary, built locally (cached on disk)."""
    from transformers import CLIPTokenizer

    cache = Path(cache_dir or Path(os.environ.get("MMALIGN_CACHE", Path.home() / ".cache" / "mmalign")) / "clip_tokenizer")
    if not (cache / "merges.txt").is_file():
        write_clip_tokenizer_files(cache)
    return CLIPTokenizer.from_pretrained(str(cache))
