"""The video training set: :class:`~mmalign.data.video_rows.VideoRecord` rows → items of
:class:`~mmalign.mllm.video.batch.VideoRow` tuples, one shape per method.

Each method's entry (:data:`mmalign.mllm.video.methods.SPECS`) names its item builder here: ``sft`` →
:func:`response_item` ``(row,)``; ``dpo`` → :func:`pair_item` ``(chosen, rejected)`` on the same video; ``vdpo`` →
:func:`perturbed_item` ``(response | clean video, response | perturbed video)``; ``rrpo`` → :func:`pair_item` with
phrase ids (``phrases``: pairs without phrase tokens on either side are dropped and counted). Unreadable videos are skipped and counted (:class:`SkipCounter`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from mmalign.data.errors import TooManyBadSamplesError
from mmalign.data.skipping import SkipCounter
from mmalign.data.video_io import VideoDecodeError, VideoSampling, read_video
from mmalign.data.video_rows import VideoRecord
from mmalign.mllm.video.batch import VideoRow
from mmalign.mllm.video.methods import METHODS, SPECS
from mmalign.mllm.video.rrpo_phrases import filter_pairs, phrase_ids_from_diff, phrase_ids_from_tags
from mmalign.mllm.video.temporal import perturb_frames


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
        self.method, self.sampling, spec = method, sampling, SPECS[method]
        self._item = spec.hook("item")
        self.perturbations, self.magnitude, self.frames_per_clip, self.seed = perturbations, magnitude, frames_per_clip, seed
        self.report = DataReport(total=len(records))
        self.skips = skips if skips is not None else SkipCounter(len(records), 0.0, "error", what="rows")
        self._frames: dict[str, np.ndarray] = {}
        kept = []
        for rec in records:
            if spec.needs_rejected and not rec.rejected:
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
        if spec.phrases:
            if tokenizer is None:
                raise ValueError(f"method '{method}' needs the tokenizer to compute phrase ids")
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
        return self._item(self, i, rec, frames, row)


def response_item(ds: VideoPreferenceDataset, i: int, rec: VideoRecord, frames: np.ndarray,
                  row: VideoRow) -> tuple[VideoRow, ...]:
    """``(row,)``: the response on its video."""
    return (row,)


def perturbed_item(ds: VideoPreferenceDataset, i: int, rec: VideoRecord, frames: np.ndarray,
                   row: VideoRow) -> tuple[VideoRow, ...]:
    """``(response | clean video, response | perturbed video)``: one perturbation per item, seeded by the index."""
    rng = random.Random(ds.seed * 1_000_003 + i)
    kind = rng.choice(list(ds.perturbations))
    pert, _ = perturb_frames(frames, kind, ds.magnitude, rng, frames_per_clip=ds.frames_per_clip, avoid_identity=True)
    return row, VideoRow(pert, rec.question, rec.chosen, row_id=rec.row_id)


def pair_item(ds: VideoPreferenceDataset, i: int, rec: VideoRecord, frames: np.ndarray,
              row: VideoRow) -> tuple[VideoRow, ...]:
    """``(chosen, rejected)`` on the same video, with phrase ids where the dataset computed them (RRPO)."""
    rejected = VideoRow(frames, rec.question, rec.rejected or "", row_id=rec.row_id)
    if ds.phrases[i] is not None:
        row.phrase_ids, rejected.phrase_ids = ds.phrases[i]
    return row, rejected
