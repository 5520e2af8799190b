"""Video batches for video LLMs: chat template, video placeholders, completion masks, phrase ids, forwards.

One *row* to score is ``(frames, question, response)``. Messages have typed content parts
(:mod:`mmalign.mllm.chat`), which both the Qwen-VL and the llava-hf (LLaVA-OneVision / LLaVA-Video,
LLaVA-NeXT-Video) templates render. The prompt is the chat template for a user turn
``[{"type": "video"}, {"type": "text", "text": question}]`` with the generation header (plus the template's
``lead``, e.g. LLaVA's space after ``ASSISTANT:``); the processor expands the video placeholder to the model's
number of visual tokens and returns the pixel tensors (``pixel_values_videos`` + ``video_grid_thw`` for Qwen-VL;
``pixel_values_videos`` ``[1, frames, 3, H, W]`` per row for LLaVA-OneVision). The completion is the response
followed by whatever the template appends after an assistant turn (Qwen ``<|im_end|>\\n``, OneVision
``<|im_end|>``), tokenised separately (``add_special_tokens=False``) so per-token phrase ids line up.

Sequences are ``prompt ⊕ completion``, right-padded; ``completion_mask`` is 1 only on completion tokens (never
prompt text, visual placeholders or padding); ``mm_token_type_ids`` marks video tokens (2) and image tokens (1)
when the processor returns one (Qwen-VL; LLaVA-OneVision takes none). Truncation only ever shortens the
completion; a prompt (with its visual tokens) that does not fit is an error naming the row. Log-probs use
:mod:`mmalign.mllm.logprobs` (shift by one).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmalign.mllm.chat import ResponseSlot, render, response_slot, user_turn
from mmalign.mllm.logprobs import token_logps

TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "completion_mask", "phrase_ids")


@dataclass
class VideoRow:
    """One (video, question, response) to score; ``phrase_ids`` are per response token (RRPO)."""

    frames: np.ndarray
    question: str
    response: str
    phrase_ids: Sequence[int] | None = None
    row_id: str = ""


def user_messages(question: str) -> list[dict[str, Any]]:
    """The prompt turn of a row: a typed video part, then the question (:mod:`mmalign.mllm.chat`)."""
    return user_turn(question, media="video")


def prompt_text(processor, question: str) -> str:
    """The chat-templated prompt with the generation header (what the model sees when it answers); it must
    contain the video placeholder."""
    text = render(processor, user_messages(question), generation_prompt=True)
    video_token = getattr(processor, "video_token", None)
    if video_token and video_token not in text:
        raise ValueError(
            f"the processor's chat template does not render {{'type': 'video'}} parts (no {video_token!r} in "
            f"the prompt {text!r}); use a video-capable chat template"
        )
    return text


def completion_slot(processor, question: str = "q") -> ResponseSlot:
    """Where the response sits after the prompt: the template's ``lead`` (scored as prompt) and ``suffix``
    (scored as completion), :func:`mmalign.mllm.chat.response_slot`."""
    return response_slot(processor, user_messages(question))


def completion_suffix(processor, question: str = "q") -> str:
    """What the chat template writes after an assistant response (Qwen ``<|im_end|>\\n``, OneVision
    ``<|im_end|>``)."""
    return completion_slot(processor, question).suffix


def _video_token_ids(processor) -> tuple[int | None, int | None]:
    tok = processor.tokenizer
    ids = []
    for name in ("image_token", "video_token"):
        t = getattr(processor, name, None)
        ids.append(tok.convert_tokens_to_ids(t) if t else None)
    return ids[0], ids[1]


def encode_prompt(processor, frames: np.ndarray, question: str, lead: str = "") -> dict:
    """The processor's output for the chat-templated prompt + ``lead`` with its video (visual tokens expanded)."""
    text = prompt_text(processor, question) + lead
    return dict(processor(text=[text], videos=[frames], return_tensors="pt", do_sample_frames=False))


def encode_row(processor, row: VideoRow, max_length: int | None = None, slot: ResponseSlot | None = None,
               prompt: dict | None = None) -> dict:
    """Token ids, masks, phrase ids and pixel tensors of one row (no batch dimension on the text tensors).

    ``slot`` is :func:`completion_slot` (computed when None); ``prompt`` is :func:`encode_prompt`'s output for
    this row with ``slot.lead``, when already computed."""
    tok = processor.tokenizer
    slot = completion_slot(processor) if slot is None else slot
    enc = prompt if prompt is not None else encode_prompt(processor, row.frames, row.question, slot.lead)
    prompt_ids = enc["input_ids"][0]
    response_ids = tok(row.response, add_special_tokens=False)["input_ids"]
    suffix = slot.suffix
    suffix_ids = tok(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    phrase = list(row.phrase_ids) if row.phrase_ids is not None else [0] * len(response_ids)
    if len(phrase) != len(response_ids):
        raise ValueError(f"row {row.row_id!r}: {len(phrase)} phrase ids for {len(response_ids)} response tokens")
    completion = list(response_ids) + list(suffix_ids)
    phrase = phrase + [0] * len(suffix_ids)
    if not response_ids:
        raise ValueError(f"row {row.row_id!r}: empty response")
    if max_length is not None:
        room = max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"row {row.row_id!r}: prompt with its visual tokens has {len(prompt_ids)} tokens, more than "
                f"max_length={max_length} (visual tokens are never truncated)"
            )
        completion, phrase = completion[:room], phrase[:room]
    n_prompt = len(prompt_ids)
    input_ids = torch.cat([prompt_ids, torch.tensor(completion, dtype=torch.long)])
    image_id, video_id = _video_token_ids(processor)
    mm = torch.zeros_like(input_ids)
    if image_id is not None:
        mm[input_ids == image_id] = 1
    if video_id is not None:
        mm[input_ids == video_id] = 2
    out = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": torch.cat([torch.zeros(n_prompt, dtype=torch.long), torch.ones(len(completion), dtype=torch.long)]),
        "phrase_ids": torch.cat([torch.zeros(n_prompt, dtype=torch.long), torch.tensor(phrase, dtype=torch.long)]),
    }
    if "mm_token_type_ids" in enc:  # Qwen-VL needs it (M-RoPE); other families do not take it
        out["mm_token_type_ids"] = mm
    for key, value in enc.items():
        if key not in ("input_ids", "attention_mask", "mm_token_type_ids") and torch.is_tensor(value):
            out[key] = value
    return out


def collate_encoded(encoded: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the text tensors to one length; concatenate the visual tensors along dim 0 in row order."""
    length = max(len(e["input_ids"]) for e in encoded)
    batch: dict[str, torch.Tensor] = {}
    for key in TEXT_KEYS:
        if key not in encoded[0]:
            continue
        fill = pad_token_id if key == "input_ids" else 0
        rows = [torch.nn.functional.pad(e[key], (0, length - len(e[key])), value=fill) for e in encoded]
        batch[key] = torch.stack(rows)
    for key in encoded[0]:
        if key not in TEXT_KEYS:
            shapes = {tuple(e[key].shape[1:]) for e in encoded}
            if len(shapes) > 1:  # e.g. LLaVA-OneVision's [1, frames, 3, H, W] per row
                raise ValueError(f"rows of one batch have {key} of different shapes {sorted(shapes)}: sample the "
                                 "same number of frames at the same size for every video (video.* settings)")
            batch[key] = torch.cat([e[key] for e in encoded], dim=0)
    return batch


def score_logits(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token completion log-probs ``[N, T-1]`` (zero off the completion) and the scored mask."""
    return token_logps(logits, batch["input_ids"], batch["completion_mask"])


def shifted(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """``batch[key][:, 1:]`` — aligned with the per-token log-probs."""
    return batch[key][:, 1:]


class VideoRowCollator:
    """``collate_fn`` turning lists of :class:`VideoRow` tuples into one batch.

    Each dataset item is a tuple of rows (e.g. ``(chosen, rejected)`` or ``(clean, perturbed)``); the batch holds
    all first rows, then all second rows, ... (``[B_w ; B_l]``) so ``chunk(len(item))`` splits it back.
    """

    def __init__(self, processor, max_length: int | None = None, cache_size: int = 2048) -> None:
        self.processor = processor
        self.max_length = max_length
        self.slot = completion_slot(processor)
        tok = processor.tokenizer
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.cache_size = cache_size
        self._prompts: OrderedDict[tuple[str, str], dict] = OrderedDict()

    def _prompt(self, row: VideoRow) -> dict:
        """Processor output for the row's (frames, question), memoised by content hash (LRU): chosen and
        rejected rows, the four answers of an evaluation and repeated epochs share one video encoding."""
        frames = np.ascontiguousarray(row.frames)
        key = (hashlib.sha1(frames.tobytes() + str(frames.shape).encode()).hexdigest(), row.question)
        hit = self._prompts.get(key)
        if hit is None:
            hit = encode_prompt(self.processor, frames, row.question, self.slot.lead)
            if self.cache_size > 0:
                self._prompts[key] = hit
                if len(self._prompts) > self.cache_size:
                    self._prompts.popitem(last=False)
        else:
            self._prompts.move_to_end(key)
        return hit

    def __call__(self, items: Sequence[Sequence[VideoRow]]) -> dict[str, torch.Tensor]:
        width = len(items[0])
        ordered = [item[k] for k in range(width) for item in items]
        encoded = [encode_row(self.processor, r, self.max_length, self.slot, self._prompt(r)) for r in ordered]
        batch = collate_encoded(encoded, self.pad_token_id)
        batch["group_size"] = torch.tensor(width)
        return batch
