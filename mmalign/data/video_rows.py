"""Video QA / preference rows → datasets of :class:`~mmalign.mllm.video_batch.VideoRow` tuples.

Accepted jsonl row formats (one JSON object a line; the video path is resolved against ``video_root`` or, by
default, the jsonl file's folder):

* ms-swift / TEMPLE: ``{"messages": [{"role": "user", "content": "<video>Q"}, {"role": "assistant",
  "content": chosen}], "rejected_response": rejected, "videos": [path]}``;
* plain: ``{"video": path, "question": Q, "chosen": ..., "rejected": ...}`` (``prompt`` for ``question``);
* RRPO (``pritamqu/RRPO`` ``docs/DATA.md``): ``{"media_path" | "video": path, "question": "<image>\\nQ",
  "answer": chosen, "pred": rejected, "answer_masked": ..., "pred_masked": ...}`` — the code reads
  ``media_path`` while DATA.md shows ``video``; both are accepted;
* SFT / VDPO: ``{"video": path, "question": Q, "response" | "answer": ...}``.

What one item holds depends on the method: ``sft`` → ``(row,)``; ``dpo`` → ``(chosen, rejected)`` on the same
video; ``vdpo`` → ``(response | clean video, response | perturbed video)``; ``rrpo`` → ``(chosen, rejected)``
with phrase ids (pairs without phrase tokens on either side are dropped and counted).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mmalign.data.errors import TooManyBadSamplesError
from mmalign.data.skipping import SkipCounter
from mmalign.mllm.rrpo_phrases import filter_pairs, phrase_ids_from_diff, phrase_ids_from_tags
from mmalign.mllm.temporal import perturb_frames
from mmalign.mllm.video_batch import VideoRow
from mmalign.mllm.video_io import VideoDecodeError, VideoSampling, read_video

METHODS = ("sft", "dpo", "vdpo", "rrpo")
_PLACEHOLDERS = ("<video>", "<image>")


@dataclass
class VideoRecord:
    """A normalised row."""

    video: str
    question: str
    chosen: str
    rejected: str | None = None
    chosen_masked: str | None = None
    rejected_masked: str | None = None
    row_id: str = ""


def _strip_placeholders(text: str) -> str:
    for p in _PLACEHOLDERS:
        text = text.replace(p + "\n", "").replace(p, "")
    return text.strip()


def parse_row(row: dict, where: str, root: Path) -> VideoRecord:
    """Normalise one jsonl row; errors name ``where`` (``file:line``) and the missing field."""
    def need(key: str, src: dict = row):
        if key not in src or src[key] in (None, ""):
            raise ValueError(f"{where}: missing field '{key}'")
        return src[key]

    if "messages" in row:
        msgs = row["messages"]
        user = next((m for m in msgs if m.get("role") == "user"), None)
        asst = next((m for m in msgs if m.get("role") == "assistant"), None)
        if user is None or asst is None:
            raise ValueError(f"{where}: 'messages' needs a user and an assistant turn")
        videos = need("videos")
        rec = VideoRecord(video=videos[0], question=_strip_placeholders(need("content", user)),
                          chosen=need("content", asst), rejected=row.get("rejected_response"))
    else:
        video = row.get("video") or row.get("media_path")
        if not video:
            raise ValueError(f"{where}: missing field 'video' (or 'media_path')")
        question = row.get("question") or row.get("prompt")
        if not question:
            raise ValueError(f"{where}: missing field 'question'")
        chosen = row.get("chosen") or row.get("answer") or row.get("response")
        if not chosen:
            raise ValueError(f"{where}: missing field 'chosen' (or 'answer' / 'response')")
        rec = VideoRecord(video=video, question=_strip_placeholders(question), chosen=chosen,
                          rejected=row.get("rejected") or row.get("pred"),
                          chosen_masked=row.get("answer_masked"), rejected_masked=row.get("pred_masked"))
    path = Path(rec.video)
    rec.video = str(path if path.is_absolute() else root / path)
    rec.row_id = where
    return rec


def jsonl_rows(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, row)`` of a jsonl file, blank lines skipped; bad JSON names the file and line."""
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
    return rows


def read_records(path: str | Path, video_root: str | None = None) -> list[VideoRecord]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    root = Path(video_root) if video_root else path.parent
    return [parse_row(row, f"{path}:{n}", root) for n, row in jsonl_rows(path)]


@dataclass
class DataReport:
    """Rows dropped while building a dataset (``row id`` → reason)."""

    total: int = 0
    dropped: dict[str, str] = field(default_factory=dict)


class VideoPreferenceDataset(Dataset):
    """Items of :class:`VideoRow` tuples for one method (see module docstring). Decoded frames are cached."""

    def __init__(self, records: Sequence[VideoRecord], method: str, sampling: VideoSampling, *,
                 tokenizer=None, perturbations: Sequence[str] = ("reverse", "shuffle"), magnitude: int = 16,
                 frames_per_clip: int = 2, seed: int = 0, skips: SkipCounter | None = None) -> None:
        """``skips`` counts rows whose video does not decode (:class:`mmalign.data.skipping.SkipCounter`: its
        ``on_bad_row`` and ``max_bad_fraction``); default: the first one is an error."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got '{method}'")
        self.method, self.sampling = method, sampling
        self.perturbations, self.magnitude, self.frames_per_clip, self.seed = perturbations, magnitude, frames_per_clip, seed
        self.report = DataReport(total=len(records))
        self.skips = skips if skips is not None else SkipCounter(len(records), 0.0, "error", what="rows")
        self._frames: dict[str, np.ndarray] = {}
        kept = []
        for rec in records:
            if method in ("dpo", "rrpo") and not rec.rejected:
                raise ValueError(f"{rec.row_id}: missing field 'rejected' (or 'rejected_response' / 'pred')")
            try:
                self._frames[rec.video] = read_video(rec.video, sampling).frames
            except VideoDecodeError as exc:
                try:
                    self.skips.skip(rec.row_id, f"{rec.row_id}: {exc}")
                except TooManyBadSamplesError as stop:
                    raise ValueError(str(stop)) from exc
                self.report.dropped[rec.row_id] = str(exc)
                continue
            kept.append(rec)
        self.phrases: list[tuple[list[int], list[int]] | None] = [None] * len(kept)
        if method == "rrpo":
            if tokenizer is None:
                raise ValueError("method 'rrpo' needs the tokenizer to compute phrase ids")
            kept = self._attach_phrases(kept, tokenizer)
        self.skips.note_dropped([f"{k}: {v}" for k, v in self.report.dropped.items() if k not in self.skips.bad_ids])
        if not kept:
            raise ValueError(f"no usable rows ({len(self.report.dropped)} dropped: {list(self.report.dropped.items())[:3]})")
        self.records = kept

    def _attach_phrases(self, records: list[VideoRecord], tokenizer) -> list[VideoRecord]:
        pairs = []
        for rec in records:
            if rec.chosen_masked and rec.rejected_masked:
                _, c = phrase_ids_from_tags(tokenizer, rec.chosen_masked, rec.chosen)
                _, r = phrase_ids_from_tags(tokenizer, rec.rejected_masked, rec.rejected)
            else:
                c, r = phrase_ids_from_diff(tokenizer(rec.chosen, add_special_tokens=False)["input_ids"],
                                            tokenizer(rec.rejected, add_special_tokens=False)["input_ids"])
            pairs.append((c, r))
        keep, report = filter_pairs(pairs)
        for i, why in report.dropped.items():
            self.report.dropped[records[i].row_id] = why
        self.phrases = [pairs[i] for i in keep]
        return [records[i] for i in keep]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[VideoRow, ...]:
        rec = self.records[i]
        frames = self._frames[rec.video]
        row = VideoRow(frames, rec.question, rec.chosen, row_id=rec.row_id)
        if self.method == "sft":
            return (row,)
        if self.method == "vdpo":
            rng = random.Random(self.seed * 1_000_003 + i)
            kind = rng.choice(list(self.perturbations))
            pert, _ = perturb_frames(frames, kind, self.magnitude, rng, frames_per_clip=self.frames_per_clip,
                                     avoid_identity=True)
            return row, VideoRow(pert, rec.question, rec.chosen, row_id=rec.row_id)
        rejected = VideoRow(frames, rec.question, rec.rejected or "", row_id=rec.row_id)
        if self.method == "rrpo":
            c, r = self.phrases[i]
            row.phrase_ids, rejected.phrase_ids = c, r
        return row, rejected
