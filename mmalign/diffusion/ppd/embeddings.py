"""User embeddings from N few-shot preference pairs of a user (spec §5, PPD), cached on disk.

A *shot* is one labelled pair ``(caption, preferred image, dispreferred image)`` of the user.

* :func:`vlm_user_embedding` — the official recipe (``Asap7772/Personalized-Text-To-Image-Diffusion``,
  ``llava_embeddings/pick_a_pick_user_emb.py``) on any ``transformers.AutoModelForImageTextToText``: the shots are
  interleaved in one user turn (caption, ``<image>`` "This is the preferred image.", ``<image>`` "This is the
  dispreferred image.") followed by the chain-of-thought instruction to compare the pairs and summarise a "User
  Profile"; greedy decoding (``do_sample=False``) with ``output_hidden_states=True``; the embedding is the hidden
  state of the **last generation step across all layers** (embeddings + every decoder layer), shape
  ``(num_layers + 1, hidden)`` (29 x 3584 for the 7B Qwen2 LLaVA-OneVision of the paper). The generated profile
  text is stored next to it. Differences from the official script: the model's own chat template instead of
  LLaVA's ``qwen_1_5`` conversation object, and ``max_new_tokens`` configurable (official 1024).
* :func:`clip_user_embedding` — a light alternative, not from the paper: with a CLIP scorer's L2-normalised image
  embeddings ``f`` (:meth:`scorers.Scorer.image_embeddings`), ``u = mean_i f(chosen_i) - mean_i f(rejected_i)``,
  shape ``(1, D)``: the direction in CLIP space this user moves towards.
* :func:`clip_margin_user_embedding` — the caption-aware light alternative (ours, not from the paper): with the
  scorer's L2-normalised text embedding ``g(c_i)`` of each shot's caption,
  ``u = mean_i g(c_i) * (f(chosen_i) - f(rejected_i))`` (elementwise), shape ``(1, D)``. Its coordinates sum to the
  mean CLIP-score margin of the shots, split over the embedding dimensions: *which* part of caption agreement this
  user rewards, comparable across shots with different captions (a plain image difference points in a different
  direction for every caption). In the toy world, 4-shot user identification by nearest centroid rises from 0.31
  (plain difference) to 0.40 (chance 0.25) on the first toy build's per-user pairs.

:class:`UserEmbeddingCache` stores one safetensors file per (embedding source, shots): the key hashes the source's
identity (model path / scorer name + checkpoint, generation settings) and every shot's caption and image bytes, so
new shots or another model never reuse a stale embedding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

PREFERRED = "This is the preferred image."
DISPREFERRED = "This is the dispreferred image."
INSTRUCTION = (
    "You are given pairs of images generated from the captions above, each with the image this user preferred "
    "and the one they did not. For each pair, describe both images. Then explain the differences between the "
    "preferred and dispreferred images in terms of style, visual quality, aesthetics and content. Finally, "
    "summarise what this user likes as a short 'User Profile'."
)


@dataclass(frozen=True)
class Shot:
    """One labelled pair of a user."""

    caption: str
    chosen: Image.Image
    rejected: Image.Image


def shot_digest(shots: Sequence[Shot]) -> str:
    """Content hash of the shots (captions and pixel bytes)."""
    h = hashlib.sha256()
    for s in shots:
        h.update(s.caption.encode())
        for image in (s.chosen, s.rejected):
            image = image.convert("RGB")
            h.update(repr(image.size).encode())
            h.update(image.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------ VLM path
def user_profile_messages(shots: Sequence[Shot]) -> list[dict[str, Any]]:
    """One user turn: for each shot its caption, the preferred image, the dispreferred image; then the
    instruction (official order and wording of the labels)."""
    content: list[dict[str, Any]] = []
    for i, shot in enumerate(shots, 1):
        content.append({"type": "text", "text": f"Pair {i}. Caption: {shot.caption}\n"})
        content.append({"type": "image"})
        content.append({"type": "text", "text": f"{PREFERRED}\n"})
        content.append({"type": "image"})
        content.append({"type": "text", "text": f"{DISPREFERRED}\n"})
    content.append({"type": "text", "text": INSTRUCTION})
    return [{"role": "user", "content": content}]


@torch.no_grad()
def vlm_user_embedding(model, processor, shots: Sequence[Shot], max_new_tokens: int = 1024) -> tuple[torch.Tensor, str]:
    """``(embedding (num_layers + 1, hidden) float32 CPU, generated profile text)``; see the module docstring."""
    if not shots:
        raise ValueError("a user embedding needs at least one shot")
    prompt = processor.apply_chat_template(user_profile_messages(shots), add_generation_prompt=True, tokenize=False)
    images = [im.convert("RGB") for s in shots for im in (s.chosen, s.rejected)]
    inputs = processor(text=[prompt], images=images, return_tensors="pt").to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_hidden_states=True,
                         return_dict_in_generate=True)
    last_step = out.hidden_states[-1]  # tuple over (embeddings, layer 1..L), each (1, seq, hidden)
    embedding = torch.stack([h[0, -1] for h in last_step]).float().cpu()
    new_tokens = out.sequences[0, inputs["input_ids"].shape[1]:]
    text = processor.batch_decode(new_tokens[None], skip_special_tokens=True)[0]
    return embedding, text


# ----------------------------------------------------------------------------------------------------- CLIP path
@torch.no_grad()
def clip_user_embedding(scorer, shots: Sequence[Shot]) -> torch.Tensor:
    """``mean f(chosen) - mean f(rejected)`` over the shots, ``(1, D)`` float32 (unit-norm image embeddings)."""
    if not shots:
        raise ValueError("a user embedding needs at least one shot")
    chosen = scorer.image_embeddings([s.chosen for s in shots], normalize=True)
    rejected = scorer.image_embeddings([s.rejected for s in shots], normalize=True)
    return (chosen.mean(0) - rejected.mean(0)).float().unsqueeze(0)


@torch.no_grad()
def clip_margin_user_embedding(scorer, shots: Sequence[Shot]) -> torch.Tensor:
    """``mean_i g(c_i) * (f(chosen_i) - f(rejected_i))`` over the shots, ``(1, D)`` float32 (unit-norm text and
    image embeddings, elementwise product); see the module docstring."""
    if not shots:
        raise ValueError("a user embedding needs at least one shot")
    chosen = scorer.image_embeddings([s.chosen for s in shots], normalize=True)
    rejected = scorer.image_embeddings([s.rejected for s in shots], normalize=True)
    text = scorer.text_embeddings([s.caption for s in shots], normalize=True)
    return (text * (chosen - rejected)).mean(0).float().unsqueeze(0)


# --------------------------------------------------------------------------------------------------------- cache
class UserEmbeddingCache:
    """``<root>/<sha256(source id, shots)>.safetensors`` holding ``embedding`` (+ metadata: text, captions)."""

    def __init__(self, root: str | Path, source_id: str) -> None:
        self.root, self.source_id = Path(root), source_id

    def key(self, shots: Sequence[Shot]) -> str:
        return hashlib.sha256(f"{self.source_id}\n{shot_digest(shots)}".encode()).hexdigest()

    def path(self, shots: Sequence[Shot]) -> Path:
        return self.root / f"{self.key(shots)}.safetensors"

    def get_or_compute(self, shots: Sequence[Shot],
                       compute: Callable[[Sequence[Shot]], tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, bool]:
        """``(embedding, was_cached)``; computes and stores on a miss (atomic rename)."""
        from safetensors.torch import load_file, save_file

        path = self.path(shots)
        if path.exists():
            return load_file(str(path))["embedding"], True
        embedding, text = compute(shots)
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"source": self.source_id, "text": text, "captions": json.dumps([s.caption for s in shots])}
        tmp = path.with_suffix(".tmp")
        save_file({"embedding": embedding.contiguous()}, str(tmp), metadata=meta)
        tmp.replace(path)
        return embedding, False


def vlm_source_id(path: str, max_new_tokens: int) -> str:
    """Identity of a VLM embedding source: the model path plus its config file's hash when it is a folder."""
    config = Path(path) / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.exists() else "hub"
    return f"vlm:{path}:{digest}:max_new_tokens={max_new_tokens}:v1"


def clip_source_id(name: str, checkpoint: str | None) -> str:
    ckpt = Path(checkpoint) if checkpoint else None
    stamp = ""
    if ckpt is not None and ckpt.is_file():
        stat = ckpt.stat()
        stamp = f"{stat.st_size}:{int(stat.st_mtime)}"
    return f"clip:{name}:{checkpoint}:{stamp}:v1"

