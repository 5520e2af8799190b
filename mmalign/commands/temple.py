"""``mmalign temple make-pairs``: TEMPLE preference pairs from a video LLM answering clean vs perturbed videos.

    mmalign temple make-pairs --model <dir> --videos <dir|list> --out <dir>

Writes ``pairs_r{16,8,4,2}.jsonl`` (the curriculum's stage files, ms-swift rows) and ``report.json`` (kept and
filtered counts) into ``--out``. See :mod:`mmalign.mllm.video.temple_pairs` for the filters and the row format.
"""

from __future__ import annotations

import argparse
import json
import sys

from mmalign.commands._options import (
    add_device_argument,
    add_on_error_argument,
    add_out_argument,
    resolve_device,
)

NAME = "temple"
HELP = "TEMPLE data tools: make-pairs builds temporal preference pairs from videos with a video LLM."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="temple_command", metavar="<subcommand>", required=True)
    p = sub.add_parser("make-pairs", help="generate chosen (clean video) / rejected (perturbed video) pairs",
                       formatter_class=parser.formatter_class)
    p.add_argument("--model", required=True, help="model folder (or hub id; tiny:qwen2vl for a smoke test)")
    p.add_argument("--videos", required=True, help="folder of videos, or a text file with one path a line")
    add_out_argument(p, "output folder for pairs_r<m>.jsonl and report.json")
    p.add_argument("--questions", default=None,
                   help="optional jsonl of {video, question} rows (default: a caption instruction per video)")
    p.add_argument("--chosen", choices=("generate", "answer"), default="generate",
                   help="chosen = the model's answer on the clean video (TEMPLE) or the 'answer' field of --questions")
    p.add_argument("--kinds", default="drop,shuffle,reverse", help="comma-separated perturbations")
    p.add_argument("--magnitudes", default="16,8,4,2", help="comma-separated magnitudes (stage files)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly per video")
    p.add_argument("--fps", type=float, default=None, help="sample at this fps instead of --frames")
    p.add_argument("--max-pixels", type=int, default=None, help="cap on height x width per frame")
    p.add_argument("--frames-per-clip", type=int, default=2, help="frames per perturbation unit")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length cap")
    p.add_argument("--sample", action="store_true", help="sample (T=0.7, repetition penalty 1.05) instead of greedy")
    p.add_argument("--max-length-ratio", type=float, default=1.5,
                   help="shuffle/reverse length-ratio filter (<= 0 disables)")
    add_on_error_argument(p, "skip", "videos")
    p.add_argument("--seed", type=int, default=0, help="perturbation seed")
    add_device_argument(p)
    p.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmalign.data.video_io import VideoSampling, list_videos, read_videos
    from mmalign.mllm.video.temple_pairs import PairFilter, make_pairs, write_pairs

    paths = list_videos(args.videos)
    if not paths:
        raise FileNotFoundError(f"{args.videos}: no videos found")
    sampling = VideoSampling(
        mode="fps" if args.fps else "uniform", fps=args.fps or 1.0, num_frames=args.frames,
        max_frames=max(args.frames, 2), frame_multiple=args.frames_per_clip, max_pixels=args.max_pixels,
        size_multiple=28 if args.max_pixels else 1,
    )
    decoded, skipped = read_videos(paths, sampling, on_error=args.on_error, max_skip_fraction=0.5)
    videos = [(str(p), v.frames) for p, v in zip(paths, decoded) if v is not None]
    questions = references = None
    if args.questions:
        by_video = {}
        for n, line in enumerate(Path(args.questions).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                needed = ("video", "question", "answer") if args.chosen == "answer" else ("video", "question")
                for key in needed:
                    if key not in row:
                        raise ValueError(f"{args.questions}:{n}: missing field '{key}'")
                by_video[Path(row["video"]).name] = row
        missing = [p for p, _ in videos if Path(p).name not in by_video]
        if missing:
            raise ValueError(f"{args.questions}: no question for {missing[0]} (and {len(missing) - 1} more)")
        questions = [by_video[Path(p).name]["question"] for p, _ in videos]
        if args.chosen == "answer":
            references = [by_video[Path(p).name]["answer"] for p, _ in videos]
    elif args.chosen == "answer":
        raise ValueError("--chosen answer needs --questions with an 'answer' per video")

    model, processor = _load(args.model, args.trust_remote_code, args.out)
    model = model.to(resolve_device(args.device))
    by_m, report = make_pairs(
        model, processor, videos, kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
        magnitudes=[int(m) for m in args.magnitudes.split(",")], questions=questions,
        frames_per_clip=args.frames_per_clip, seed=args.seed,
        pair_filter=PairFilter(max_length_ratio=args.max_length_ratio if args.max_length_ratio > 0 else None),
        generation={"max_new_tokens": args.max_new_tokens, "do_sample": args.sample}, references=references,
    )
    written = write_pairs(args.out, by_m, report)
    print(json.dumps({"videos": len(videos), "unreadable": skipped.count, "unreadable_files": list(skipped.skipped), "generated": report.generated,
                      "kept": report.kept, "dropped": dict(report.dropped),
                      "files": [str(p) for p in written]}, indent=2))
    print(_closing(args.out, len(videos), skipped, report), file=sys.stderr)
    return 0


def _closing(out: str, n_videos: int, skipped, report) -> str:
    """One line: where the pairs are, how many were kept, what was dropped and which videos were unreadable."""
    text = f"mmalign temple make-pairs: kept {report.kept} of {report.generated} pairs from {n_videos} videos in {out}"
    if report.dropped:
        text += " (dropped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items())) + ")"
    if skipped.count:
        text += f"; skipped {skipped.count} unreadable video(s)"
        path, why = next(iter(skipped.skipped.items()))
        text += f" (first: {path}: {why})"
    return text


def _load(model: str, trust_remote_code: bool, out: str):
    """The one loader (:func:`mmalign.mllm.model.load_vlm`) in inference mode, the checkpoint's own dtype
    (``tiny:<family>``: saved under ``<out>/tiny_inputs`` first, as the recipes do)."""
    from pathlib import Path

    from mmalign.mllm.model import load_vlm
    from mmalign.mllm.model_config import VLMModelConfig
    from mmalign.testing.placeholders import PREFIX, tiny_model_folder

    if model.startswith(PREFIX):
        model = str(tiny_model_folder(model[len(PREFIX):], Path(out) / "tiny_inputs"))

    return load_vlm(VLMModelConfig(pretrained=model, dtype="auto", trust_remote_code=trust_remote_code,
                                   attn_implementation=None), train_safe=False)
