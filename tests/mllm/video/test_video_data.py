"""Video rows: ms-swift / RRPO / plain formats, clear errors naming row and field, counted skips, VDPO items."""

import json

import numpy as np
import pytest

from mmalign.data.skipping import SkipCounter
from mmalign.data.video_io import VideoSampling
from mmalign.data.video_rows import read_records
from mmalign.mllm.video.dataset import VideoPreferenceDataset
from mmalign.testing.tiny_vlm import build_tokenizer
from tests.helpers import REPO

TOY = REPO / "assets" / "videos" / "toy"
S = VideoSampling(num_frames=4, max_frames=4)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_formats_are_normalised(tmp_path):
    path = _jsonl(tmp_path / "rows.jsonl", [
        {"messages": [{"role": "user", "content": "<video>Which way?"}, {"role": "assistant", "content": "left"}],
         "rejected_response": "right", "videos": [str(TOY / "left_000.mp4")]},
        {"media_path": str(TOY / "up_000.mp4"), "question": "<image>\nWhich way?", "answer": "up", "pred": "down",
         "answer_masked": "<MASK>up</MASK>", "pred_masked": "<MASK>down</MASK>"},
        {"video": "left_001.mp4", "prompt": "Which way?", "chosen": "left", "rejected": "up"},
    ])
    recs = read_records(path, video_root=str(TOY))
    assert [r.question for r in recs] == ["Which way?"] * 3
    assert [(r.chosen, r.rejected) for r in recs] == [("left", "right"), ("up", "down"), ("left", "up")]
    assert recs[1].chosen_masked == "<MASK>up</MASK>" and recs[2].video == str(TOY / "left_001.mp4")
    assert recs[0].row_id.endswith("rows.jsonl:1")


def test_errors_name_row_and_field(tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"video": "a.mp4", "question": "q", "answer": "x"}, {"video": "b.mp4"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'question'"):
        read_records(bad)
    (tmp_path / "broken.jsonl").write_text('{"video": "a.mp4"\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:1: invalid JSON"):
        read_records(tmp_path / "broken.jsonl")
    recs = read_records(_jsonl(tmp_path / "nopair.jsonl", [{"video": str(TOY / "left_000.mp4"), "question": "q",
                                                             "answer": "left"}]))
    with pytest.raises(ValueError, match=r"nopair.jsonl:1: missing field 'rejected'"):
        VideoPreferenceDataset(recs, "dpo", S)


def test_unreadable_video_raises_or_is_counted(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"junk")
    rows = [{"video": str(TOY / f"left_00{i}.mp4"), "question": "q", "answer": "left"} for i in range(4)]
    rows.append({"video": "broken.mp4", "question": "q", "answer": "left"})
    recs = read_records(_jsonl(tmp_path / "rows.jsonl", rows))
    with pytest.raises(ValueError, match=r"rows.jsonl:5: .*broken.mp4"):
        VideoPreferenceDataset(recs, "sft", S)
    ds = VideoPreferenceDataset(recs, "sft", S, skips=SkipCounter(5, 0.25, "skip", what="rows"))
    assert len(ds) == 4 and list(ds.report.dropped) == [f"{tmp_path / 'rows.jsonl'}:5"]
    report = ds.skips.as_dict()  # the one skip report (summary.json["data"]["skips"])
    assert report["bad_samples"] == 1 and report["bad_fraction"] == pytest.approx(0.2) and "broken.mp4" in report["last_bad"]
    with pytest.raises(ValueError, match=r"1 of 5 rows are unusable \(more than data.max_bad_fraction=10.00%\)"):
        VideoPreferenceDataset(recs, "sft", S, skips=SkipCounter(5, 0.1, "skip", what="rows"))


def test_rrpo_phrases_and_zero_phrase_filter(tmp_path):
    tok = build_tokenizer()
    v = str(TOY / "left_000.mp4")
    recs = read_records(_jsonl(tmp_path / "r.jsonl", [
        {"video": v, "question": "q", "answer": "It moves left.", "pred": "It moves right.",
         "answer_masked": "It moves <MASK>left</MASK>.", "pred_masked": "It moves <MASK>right</MASK>."},
        {"video": v, "question": "q", "answer": "It moves left.", "pred": "It moves up."},  # difflib path
        {"video": v, "question": "q", "answer": "left", "pred": "left and more"},  # insertion only -> no phrase
    ]))
    ds = VideoPreferenceDataset(recs, "rrpo", S, tokenizer=tok)
    assert len(ds) == 2 and list(ds.report.dropped.values()) == ["chosen response has no phrase token"]
    chosen, rejected = ds[0]
    ids = tok(chosen.response, add_special_tokens=False)["input_ids"]
    assert tok.decode([i for i, p in zip(ids, chosen.phrase_ids) if p]).strip() == "left"
    assert max(rejected.phrase_ids) == 1 and len(chosen.phrase_ids) == len(ids)


def test_vdpo_item_same_response_perturbed_video(tmp_path):
    recs = read_records(_jsonl(tmp_path / "v.jsonl", [{"video": str(TOY / "right_000.mp4"), "question": "q",
                                                       "response": "right"}]))
    ds = VideoPreferenceDataset(recs, "vdpo", VideoSampling(num_frames=8, max_frames=8),
                                perturbations=["reverse"], magnitude=16, frames_per_clip=2)
    clean, perturbed = ds[0]
    assert clean.response == perturbed.response == "right"
    assert np.array_equal(perturbed.frames, clean.frames[[6, 7, 4, 5, 2, 3, 0, 1]])
    def shuffled():
        return VideoPreferenceDataset(recs, "vdpo", VideoSampling(num_frames=8, max_frames=8),
                                      perturbations=["shuffle"], magnitude=4, seed=3)[0]

    (c1, p1), (_, p2) = shuffled(), shuffled()
    assert np.array_equal(p1.frames, p2.frames) and not np.array_equal(p1.frames, c1.frames)
