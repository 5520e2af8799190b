"""Video QA / preference rows: the jsonl readers of ``recipes/video.py`` (what one training item holds is
:class:`mmalign.mllm.video.dataset.VideoPreferenceDataset`).

Accepted jsonl row formats (one JSON object a line; the video path is resolved against ``video_root`` or, by
default, the jsonl file's folder):

* ms-swift / TEMPLE: ``{"messages": [{"role": "user", "content": "<video>Q"}, {"role": "assistant",
  "content": chosen}], "rejected_response": rejected, "videos": [path]}``;
* plain: ``{"video": path, "question": Q, "chosen": ..., "rejected": ...}`` (``prompt`` for ``question``);
* RRPO (``pritamqu/RRPO`` ``docs/DATA.md``): ``{"media_path" | "video": path, "question": "<image>\\nQ",
  "answer": chosen, "pred": rejected, "answer_masked": ..., "pred_masked": ...}`` — the code reads
  ``media_path`` while DATA.md shows ``video``; both are accepted;
* SFT / VDPO: ``{"video": path, "question": Q, "response" | "answer": ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
