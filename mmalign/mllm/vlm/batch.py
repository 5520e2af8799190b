"""Vision preference batches: chat template, image placeholders, padding, completion masks, truncation.

Layout (the same as TRL 1.16 ``DataCollatorForVisionPreference``, so both produce identical tensors for the
same rows): prompts are rendered with the processor's chat template and processed *with* their images
(left padding, ``add_special_tokens=False``); completions are tokenised text-only (right padding); every row
is ``prompt ⊕ completion`` flushed left (no leading padding), rows ``[chosen_0..B-1 ; rejected_0..B-1]``.
``completion_mask`` is 1 only on completion tokens (so prompt text, the generation header and every visual
placeholder are excluded); ``mm_token_type_ids`` / ``token_type_ids`` from the processor are kept for the
prompt part and zero for completions.

Two differences from TRL, both deliberate:

* vision tensors (``pixel_values``, ``image_grid_thw``, ...) are produced **once per pair** (``vision``) and
  repeated (or their encoder features reused) at forward time, see :mod:`mmalign.mllm.forward`;
* truncation never cuts visual tokens: a row whose prompt (with its expanded image tokens) leaves no room
  for one completion token within ``max_length`` is an error naming the row id (``on_overlong="error"``), or
  is dropped and counted (``"drop"``); otherwise completions are cut at the end (TRL ``keep_start``).

mDPO / rDPO rows carry a second batch ``extra``: the chosen completion under a different image (the row's
``extra_image``, or an on-the-fly mDPO crop, :func:`mdpo_crop`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from mmalign.data.vlm_rows import VLMRow, split_bad
from mmalign.mllm.chat import assistant_turn, render, typed_messages

TYPE_ID_KEYS = ("mm_token_type_ids", "token_type_ids")


class OverlongPromptError(ValueError):
    """A prompt (with its visual tokens) does not fit ``max_length``; the message names the row id."""


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def render_row(processor: Any, row: VLMRow) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` texts ready for the processor.

    Conversational rows: the chat template renders ``prompt`` (with the generation header) and
    ``prompt + chosen`` / ``prompt + rejected``; the prompt is their common prefix and each completion the
    rest (TRL ``apply_chat_template``), so template suffixes such as ``<|im_end|>\\n`` belong to the completion.
    Plain rows: the prompt gets one ``processor.image_token`` per image unless it already contains them, and
    completions get the tokenizer's EOS appended (TRL adds EOS to plain completions).
    """
    n = len(row.images)
    if is_conversational(row.prompt):
        prompt_msgs = typed_messages(row.prompt, n)
        chosen_msgs, rejected_msgs = (typed_messages(c) if is_conversational(c) else [assistant_turn(c)]
                                      for c in (row.chosen, row.rejected))
        gen = prompt_msgs[-1]["role"] != "assistant"
        prompt = render(processor, prompt_msgs, generation_prompt=gen, continue_final=not gen)
        full_c = render(processor, prompt_msgs + chosen_msgs)
        full_r = render(processor, prompt_msgs + rejected_msgs)
        prompt = _common_prefix(_common_prefix(prompt, full_c), full_r)
        return prompt, full_c[len(prompt):], full_r[len(prompt):]
    image_token = getattr(processor, "image_token", "<image>")
    prompt = row.prompt if image_token in row.prompt else image_token * n + row.prompt
    eos = processor.tokenizer.eos_token or ""
    chosen, rejected = (c if c.endswith(eos) else c + eos for c in (row.chosen, row.rejected))
    return prompt, chosen, rejected


def flush_left(ids: torch.Tensor, attn: torch.Tensor, *others: torch.Tensor, pad_id: int) -> list[torch.Tensor]:
    """Move each row's attended tokens to the start and trim columns that are padding in every row."""
    lengths = attn.sum(1)
    width = int(lengths.max())
    outs = [torch.full((ids.shape[0], width), pad_id, dtype=ids.dtype), torch.zeros(ids.shape[0], width, dtype=attn.dtype)]
    outs += [torch.zeros(ids.shape[0], width, dtype=o.dtype) for o in others]
    for i in range(ids.shape[0]):
        keep = attn[i].bool()
        n = int(lengths[i])
        for src, dst in zip((ids, attn, *others), outs):
            dst[i, :n] = src[i][keep]
    return outs


@dataclass
class VisionPreferenceCollator:
    """Turns a list of :class:`VLMRow` into one model-ready preference batch (see module docstring).

    Output keys: ``pair`` (text tensors of the ``2B`` rows), ``vision`` (vision tensors of the ``B`` pairs),
    optionally ``extra`` / ``extra_vision`` (chosen under the corrupted/retrieved image), ``row_ids``,
    ``rewards`` (``{name: [B] float tensor}``, NaN where a row has none), ``skipped`` (the
    :class:`~mmalign.data.errors.BadSample` of unreadable rows, for :class:`~mmalign.data.skipping.SkipCounter`),
    ``n_bad``, ``n_overlong`` (rows dropped by ``on_overlong="drop"``). A batch whose rows all had unreadable
    images has ``row_ids == []`` and nothing else to score.
    """

    processor: Any
    max_length: int | None = None
    on_overlong: str = "error"
    """``error``: raise :class:`OverlongPromptError` naming the row; ``drop``: drop the pair and count it."""
    extra: str = "none"
    """``none``; ``row`` (use each row's ``extra_image``); ``crop`` (mDPO crop of the first image, made here);
    ``row_or_crop`` (the row's image if it has one, else a crop)."""
    crop_scale: tuple[float, float] = (0.01, 0.2)
    seed: int = 0
    _calls: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.on_overlong not in ("error", "drop"):
            raise ValueError(f"on_overlong must be 'error' or 'drop', got {self.on_overlong!r}")
        if self.extra not in ("none", "row", "crop", "row_or_crop"):
            raise ValueError(f"extra must be none|row|crop|row_or_crop, got {self.extra!r}")
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def __call__(self, items: list[VLMRow | Any]) -> dict[str, Any]:
        self._calls += 1
        rows, bad = split_bad(items)
        rendered = [render_row(self.processor, r) for r in rows]
        extra_images = [self._extra_image(r) for r in rows] if self.extra != "none" else None
        batch, n_overlong = None, 0
        while rows:
            batch, lengths = self._build(rows, rendered, extra_images)
            over = [i for i, n in enumerate(lengths) if self.max_length is not None and n >= self.max_length]
            if not over:
                break
            if self.on_overlong == "error":
                i = over[0]
                raise OverlongPromptError(
                    f"row {rows[i].id}: prompt is {lengths[i]} tokens including its visual tokens, which leaves no "
                    f"room for the completion within max_length={self.max_length}; visual tokens are never "
                    f"truncated — raise data.max_length or set data.on_overlong=drop"
                )
            keep = [i for i in range(len(rows)) if i not in over]  # drop, count, and encode the rest again
            n_overlong += len(over)
            rows, rendered = [rows[i] for i in keep], [rendered[i] for i in keep]
            extra_images = None if extra_images is None else [extra_images[i] for i in keep]
        if not rows:
            if bad and not n_overlong:  # only unreadable images: an empty batch the step skips (counted)
                return {"row_ids": [], "skipped": bad, "n_bad": len(bad), "n_overlong": 0}
            raise ValueError(f"every row of this batch was dropped ({n_overlong} overlong, {len(bad)} unreadable); "
                             "raise data.max_length or fix the data")
        batch.update({"row_ids": [r.id for r in rows], "n_bad": len(bad), "n_overlong": n_overlong, "skipped": bad})
        names = sorted({k for r in rows for k in r.rewards})
        batch["rewards"] = {k: torch.tensor([r.rewards.get(k, float("nan")) for r in rows]) for k in names}
        return batch

    # -- pieces ----------------------------------------------------------------------------------------
    def _extra_image(self, row: VLMRow) -> Image.Image:
        if row.extra_image is not None and self.extra in ("row", "row_or_crop"):
            return row.extra_image
        if self.extra == "row":
            raise ValueError(f"row {row.id}: no corrupted/retrieved image (data.extra_image_field)")
        rng = random.Random(f"{self.seed}:{row.id}:{self._calls}")
        return mdpo_crop(row.images[0], self.crop_scale, rng)

    def _build(self, rows, rendered, extra_images) -> tuple[dict[str, Any], list[int]]:
        """The batch tensors and each row's longest prompt length (with visual tokens)."""
        prompts = [p for p, _, _ in rendered]
        pair, vision, lengths = self._encode(prompts, [r.images for r in rows],
                                             [[c for _, c, _ in rendered], [x for _, _, x in rendered]])
        batch: dict[str, Any] = {"pair": pair, "vision": vision}
        if extra_images is not None:
            batch["extra"], batch["extra_vision"], extra_lengths = self._encode(
                prompts, [[im] for im in extra_images], [[c for _, c, _ in rendered]])
            lengths = [max(a, b) for a, b in zip(lengths, extra_lengths)]
        return batch, lengths

    def _encode(self, prompts: list[str], images: list[list[Image.Image]], groups: list[list[str]]):
        """Rows ``group_0 ; group_1 ; ...`` each = prompt_i ⊕ completion; vision tensors for the B prompts only;
        and the B prompt lengths (the caller rejects rows whose prompt alone reaches ``max_length``)."""
        proc = self.processor(images=images, text=prompts, padding=True, padding_side="left",
                              return_tensors="pt", add_special_tokens=False)
        times = len(groups)
        completions = [c for g in groups for c in g]
        comp = self.processor.tokenizer(completions, padding=True, padding_side="right", return_tensors="pt",
                                        add_special_tokens=False)
        prompt_ids = proc["input_ids"].repeat(times, 1)
        prompt_mask = proc["attention_mask"].repeat(times, 1)
        ids = torch.cat([prompt_ids, comp["input_ids"]], 1)
        attn = torch.cat([prompt_mask, comp["attention_mask"]], 1)
        completion = torch.cat([torch.zeros_like(prompt_mask), comp["attention_mask"]], 1)
        type_keys = [k for k in TYPE_ID_KEYS if k in proc]
        types = [torch.cat([proc[k].repeat(times, 1), torch.zeros_like(comp["input_ids"])], 1) for k in type_keys]
        ids, attn, completion, *types = flush_left(ids, attn, completion, *types, pad_id=self.pad_id)
        if self.max_length is not None and ids.shape[1] > self.max_length:  # prompts fit: cut completions only
            ids, attn, completion = ids[:, : self.max_length], attn[:, : self.max_length], completion[:, : self.max_length]
            types = [t[:, : self.max_length] for t in types]
        text = {"input_ids": ids, "attention_mask": attn, "completion_mask": completion}
        text.update(dict(zip(type_keys, types)))
        vision = {k: v for k, v in proc.items() if k not in ("input_ids", "attention_mask", *TYPE_ID_KEYS)}
        return text, vision, proc["attention_mask"].sum(1).tolist()


def mdpo_crop(image: Image.Image, scale: tuple[float, float], rng: random.Random,
              ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """mDPO's corrupted image: ``RandomResizedCrop(size=original, scale=(0.01, 0.2))`` (luka-group/mDPO
    ``bunny/modeling_bunny_phi.py::crop_images``) — a random crop keeping 1–20 % of the area, resized back.

    Same sampling as torchvision's ``RandomResizedCrop.get_params`` (10 tries of area × log-uniform aspect
    ratio, then a centre crop), driven by ``rng`` so that a batch is reproducible. Code difference: the official
    trainer re-samples the crop in every forward (policy and reference see different crops); here the crop is
    made once per row per batch and shared by policy and reference.
    """
    import math

    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            box = (left, top, left + w, top + h)
            break
    if box is None:
        w, h = min(width, max(1, int(round(width * math.sqrt(scale[1]))))), min(height, max(1, int(round(height * math.sqrt(scale[1])))))
        left, top = (width - w) // 2, (height - h) // 2
        box = (left, top, left + w, top + h)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box)
