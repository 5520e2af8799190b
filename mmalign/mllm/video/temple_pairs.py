"""TEMPLE self-generated preference pairs: the model answers the clean video (chosen) and a temporally perturbed
one (rejected); pairs that cannot teach temporal order are filtered.

Source: TEMPLE (Li et al., arXiv 2503.16929), official code ``lscpku/TEMPLE``: ``generate_dpo_data.py`` (same
model answers clean and perturbed inputs; sampling T=0.7, repetition penalty 1.05) and ``convert_to_swift.py``
(filters and the ms-swift row format). The shipped TEMPLE config perturbs the *list of clip captions* and
generates from text; the generator also supports perturbing clips/frames directly, which is what this module
does (``frames_per_clip`` consecutive frames form one unit), so any video LLM can make pairs from raw videos.

Filters (``convert_to_swift.py``), each counted in :class:`PairReport`:

* a generation equal to ``N/A`` (or empty) → dropped;
* chosen is a substring of rejected (incl. identical answers) → dropped;
* ``drop``: ``len(chosen) <= len(rejected)`` (characters) → dropped (dropping clips should shorten the answer);
* ``shuffle`` / ``reverse``: length ratio above ``max_length_ratio`` (1.5) either way → dropped.

Output rows use the ms-swift format TEMPLE trains on, plus provenance::

    {"messages": [{"role": "user", "content": "<video>{question}"}, {"role": "assistant", "content": chosen}],
     "rejected_response": rejected, "videos": [path], "perturbation": "reverse", "magnitude": 16,
     "frame_indices": [...], "seed": 1234}
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmalign.mllm.video.batch import prompt_text
from mmalign.mllm.video.temporal import perturb_frames

CAPTION_PROMPTS = (
    "Describe the video in detail.",
    "Provide a detailed description of the video.",
    "Describe what happens in the video, in order.",
    "Give a chronological account of the video.",
    "What happens in this video? Describe it step by step.",
    "Write a detailed caption for the video.",
)
"""Caption instructions sampled per video when no question is given (TEMPLE samples one of six)."""


@dataclass
class PairFilter:
    """TEMPLE's pair filters (``convert_to_swift.py``)."""

    max_length_ratio: float | None = 1.5
    """Drop shuffle/reverse pairs whose character-length ratio exceeds this either way (None disables)."""
    drop_requires_shorter: bool = True
    """Drop ``drop`` pairs unless the rejected answer is strictly shorter than the chosen one."""
    na_strings: tuple[str, ...] = ("N/A", "")
    """Generations treated as failed."""


@dataclass
class PairReport:
    """Candidate (``generated``), kept and dropped pair counts (reason → count; a perturbation whose frame order
    repeats an earlier kind's at the same magnitude — ``shuffle`` of 2 clips is ``reverse`` — is dropped as
    ``"<kind>: same frame order as <other>"`` without generating an answer)."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)


def filter_reason(chosen: str, rejected: str, kind: str, flt: PairFilter) -> str | None:
    """Why the pair is dropped, or None to keep it."""
    c, r = chosen.strip(), rejected.strip()
    if c in flt.na_strings or r in flt.na_strings:
        return "n/a generation"
    if c in r:
        return "chosen is a substring of rejected"
    if kind == "drop":
        if flt.drop_requires_shorter and len(c) <= len(r):
            return "drop: rejected not shorter than chosen"
    elif flt.max_length_ratio is not None:
        ratio = max(len(c), len(r)) / max(1, min(len(c), len(r)))
        if ratio > flt.max_length_ratio:
            return f"{kind}: length ratio above {flt.max_length_ratio}"
    return None


@torch.no_grad()
def generate_answer(model: torch.nn.Module, processor, frames: np.ndarray, question: str,
                    max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 0.7,
                    repetition_penalty: float = 1.05, seed: int | None = None) -> str:
    """The model's answer to ``question`` about ``frames`` (decoded, special tokens skipped)."""
    text = prompt_text(processor, question)
    inputs = processor(text=[text], videos=[frames], return_tensors="pt", do_sample_frames=False)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, repetition_penalty=repetition_penalty)
    if do_sample:
        kwargs["temperature"] = temperature
    tok = processor.tokenizer
    out = model.generate(**inputs, **kwargs, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def make_pairs(
    model: torch.nn.Module, processor, videos: Sequence[tuple[str, np.ndarray]], *,
    kinds: Sequence[str] = ("drop", "shuffle", "reverse"), magnitudes: Sequence[int] = (16, 8, 4, 2),
    questions: Sequence[str] | None = None, frames_per_clip: int = 2, seed: int = 0,
    pair_filter: PairFilter | None = None, generation: dict | None = None,
    references: Sequence[str] | None = None,
) -> tuple[dict[int, list[dict]], PairReport]:
    """Pairs per magnitude for ``videos`` = ``[(path, frames), ...]``.

    ``questions`` gives one question per video (default: a caption instruction drawn per video). The clean
    answer is generated once per video; one perturbed answer per (kind, magnitude), each perturbation seeded
    from ``seed`` and the video's position so the whole run is reproducible. ``references`` (one per video), when
    given, are used as the chosen answers instead of the model's clean-video answers (labelled data; not in
    TEMPLE, which always self-generates).
    """
    flt = pair_filter or PairFilter()
    gen = dict(generation or {})
    rng = random.Random(seed)
    report = PairReport()
    by_magnitude: dict[int, list[dict]] = {m: [] for m in magnitudes}
    was_training = model.training
    model.eval()
    try:
        for vi, (path, frames) in enumerate(tqdm(videos, desc="temple make-pairs", unit="video")):
            question = questions[vi] if questions is not None else rng.choice(CAPTION_PROMPTS)
            chosen = references[vi] if references is not None else generate_answer(
                model, processor, frames, question, **gen)
            for m in magnitudes:
                seen: dict[tuple[int, ...], str] = {}  # frame order -> the kind that produced it
                for kind in kinds:
                    pseed = seed * 1_000_003 + vi * 101 + m * 7 + kinds.index(kind)
                    pert, idx = perturb_frames(frames, kind, m, pseed, frames_per_clip=frames_per_clip,
                                               avoid_identity=True)
                    report.generated += 1
                    if tuple(idx) in seen:
                        report.dropped[f"{kind}: same frame order as {seen[tuple(idx)]}"] += 1
                        continue
                    seen[tuple(idx)] = kind
                    rejected = generate_answer(model, processor, pert, question, **gen)
                    reason = filter_reason(chosen, rejected, kind, flt)
                    if reason:
                        report.dropped[reason] += 1
                        continue
                    report.kept += 1
                    by_magnitude[m].append({
                        "messages": [{"role": "user", "content": f"<video>{question}"},
                                     {"role": "assistant", "content": chosen}],
                        "rejected_response": rejected, "videos": [str(path)], "perturbation": kind,
                        "magnitude": m, "frame_indices": idx, "seed": pseed,
                    })
    finally:
        model.train(was_training)
    return by_magnitude, report


def write_pairs(out_dir: str | Path, by_magnitude: dict[int, list[dict]], report: PairReport) -> list[Path]:
    """``pairs_r{m}.jsonl`` per magnitude (the curriculum's stage files) and ``report.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for m, rows in by_magnitude.items():
        path = out_dir / f"pairs_r{m}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        written.append(path)
    (out_dir / "report.json").write_text(json.dumps(
        {"generated": report.generated, "kept": report.kept, "dropped": dict(report.dropped)}, indent=2))
    return written
