"""`mmalign temple make-pairs` on toy clips with a tiny random video LLM: files, counts, row format, skips."""

import json
from pathlib import Path

from mmalign.cli import main
from tests.helpers import REPO

TOY = REPO / "assets" / "videos" / "toy"


def test_make_pairs(tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    videos = tmp_path / "videos.txt"
    videos.write_text(f"{TOY / 'left_000.mp4'}\n{TOY / 'up_000.mp4'}\n{broken}\n")
    out = tmp_path / "pairs"
    rc = main(["temple", "make-pairs", "--model", "tiny:qwen2vl", "--videos", str(videos), "--out", str(out),
               "--kinds", "reverse,shuffle", "--magnitudes", "4,2", "--frames", "8", "--max-new-tokens", "3",
               "--max-length-ratio", "0"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["unreadable"] == 1 and printed["videos"] == 2
    report = json.loads((out / "report.json").read_text())
    assert report["generated"] == 2 * 2 * 2  # videos x kinds x magnitudes (the broken one skipped)
    assert report["kept"] + sum(report["dropped"].values()) == report["generated"]
    rows = [json.loads(x) for m in (4, 2) for x in (out / f"pairs_r{m}.jsonl").read_text().splitlines()]
    assert len(rows) == report["kept"]
    for row in rows:
        assert row["messages"][0]["content"].startswith("<video>") and row["messages"][1]["role"] == "assistant"
        assert row["rejected_response"] and row["messages"][1]["content"] not in row["rejected_response"]
        if row["perturbation"] == "reverse":
            expected = {4: [6, 7, 4, 5, 2, 3, 0, 1], 2: [4, 5, 6, 7, 0, 1, 2, 3]}[row["magnitude"]]
            assert row["frame_indices"] == expected


def test_make_pairs_with_reference_answers_is_deterministic(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"video": n, "question": "Which direction does it move?",
                                             "answer": n.split("_")[0]}) + "\n" for n in ("left_000.mp4", "down_000.mp4")))
    videos = tmp_path / "videos.txt"
    videos.write_text(f"{TOY / 'left_000.mp4'}\n{TOY / 'down_000.mp4'}\n")
    outs = []
    for k in range(2):
        out = tmp_path / f"p{k}"
        assert main(["temple", "make-pairs", "--model", "tiny:qwen2vl", "--videos", str(videos), "--out", str(out),
                     "--questions", str(questions), "--chosen", "answer", "--kinds", "shuffle", "--magnitudes", "2",
                     "--frames", "8", "--max-new-tokens", "3", "--max-length-ratio", "0"]) == 0
        outs.append((out / "pairs_r2.jsonl").read_text())
    assert outs[0] == outs[1]
    for line in outs[0].splitlines():
        row = json.loads(line)
        assert row["messages"][1]["content"] == Path(row["videos"][0]).name.split("_")[0]
