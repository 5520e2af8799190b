"""Toy videos: one coloured shape moving left, right, up or down, with direction and order questions.

Each clip is ``num_frames`` (default 8) frames of ``size``×``size`` (default 56, i.e. 4×4 Qwen-VL patches)
RGB pixels on a dark background; the shape moves linearly from one side of the frame to the opposite side,
at a random offset on the other axis. Everything is a deterministic function of the seed.

Temporal perturbations change the truth: reversing a clip flips its direction (left ↔ right, up ↔ down),
shuffling frames destroys it — which is what TEMPLE-style negatives exploit.

Build the shipped set (``assets/videos/toy``) with::

    python -m mmalign.toy.videos --out assets/videos/toy --count 96 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmalign.data.video_io import write_video

DIRECTIONS = ("left", "right", "up", "down")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40)}
SHAPES = ("square", "circle")
BACKGROUND = (16, 16, 16)
DIRECTION_QUESTION = "Which direction does the {color} {shape} move? Answer with one word."
START_QUESTION = "Where is the {color} {shape} at the start of the video? Answer with one word."
END_QUESTION = "Where is the {color} {shape} at the end of the video? Answer with one word."
# where a shape moving in a direction starts and ends
START_SIDE = {"left": "right", "right": "left", "up": "bottom", "down": "top"}
END_SIDE = {"left": "left", "right": "right", "up": "top", "down": "bottom"}


@dataclass
class ToyClip:
    """Ground truth of one toy clip."""

    video: str
    """File name of the clip, relative to the manifest's folder."""
    direction: str
    color: str
    shape: str
    seed: int
    split: str

    def questions(self) -> list[dict[str, str]]:
        """Direction and order questions with their one-word answers."""
        kw = {"color": self.color, "shape": self.shape}
        return [
            {"kind": "direction", "question": DIRECTION_QUESTION.format(**kw), "answer": self.direction},
            {"kind": "start", "question": START_QUESTION.format(**kw), "answer": START_SIDE[self.direction]},
            {"kind": "end", "question": END_QUESTION.format(**kw), "answer": END_SIDE[self.direction]},
        ]


def render_clip(direction: str, color: str, shape: str, seed: int, num_frames: int = 8, size: int = 56) -> np.ndarray:
    """uint8 frames ``(num_frames, size, size, 3)`` of ``shape`` moving in ``direction``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got '{direction}'")
    rng = random.Random(seed)
    radius = size // 7
    margin = radius + 1
    lo, hi = margin, size - 1 - margin
    other = rng.uniform(lo + size * 0.1, hi - size * 0.1)  # position on the axis the shape does not move on
    path = np.linspace(lo, hi, num_frames)
    if direction in ("left", "up"):
        path = path[::-1]
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    for t, p in enumerate(path):
        cx, cy = (p, other) if direction in ("left", "right") else (other, p)
        if shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        else:
            mask = (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)
        frames[t][mask] = COLORS[color]
    return frames


def make_clips(count: int, seed: int = 0, test_fraction: float = 0.25) -> list[ToyClip]:
    """``count`` clip descriptions, directions balanced, the last ``test_fraction`` of each direction held out."""
    rng = random.Random(seed)
    clips = []
    per_dir = count // len(DIRECTIONS)
    n_test = round(per_dir * test_fraction)
    for d in DIRECTIONS:
        for i in range(per_dir):
            clip_seed = rng.randrange(2**31)
            clips.append(ToyClip(
                video=f"{d}_{i:03d}.mp4", direction=d, color=rng.choice(sorted(COLORS)),
                shape=rng.choice(SHAPES), seed=clip_seed, split="test" if i >= per_dir - n_test else "train",
            ))
    return clips


def build_toy_videos(out_dir: str | Path, count: int = 96, seed: int = 0, num_frames: int = 8,
                     size: int = 56, fps: int = 8) -> Path:
    """Write the clips as mp4 files, ``manifest.jsonl`` (one :class:`ToyClip` + questions a line) and the
    direction-question rows (:func:`write_direction_rows`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as fh:
        for clip in make_clips(count, seed):
            frames = render_clip(clip.direction, clip.color, clip.shape, clip.seed, num_frames, size)
            write_video(out_dir / clip.video, frames, fps=fps)
            fh.write(json.dumps({**asdict(clip), "questions": clip.questions()}) + "\n")
    write_direction_rows(manifest)
    return manifest


def write_direction_rows(manifest: str | Path) -> list[Path]:
    """``direction_{train,test}.jsonl`` next to the manifest: ``{video, question, answer}`` rows (SFT / VDPO
    data for :mod:`recipes.video`) for the direction question of every clip."""
    manifest = Path(manifest)
    written = []
    for split in ("train", "test"):
        path = manifest.parent / f"direction_{split}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for row in load_manifest(manifest, split):
                q = row["questions"][0]
                fh.write(json.dumps({"video": Path(row["video"]).name, "question": q["question"],
                                     "answer": q["answer"]}) + "\n")
        written.append(path)
    return written


def load_manifest(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a toy manifest with ``video`` made absolute; optionally only one split."""
    from mmalign.data.video_rows import jsonl_rows

    path = Path(path)
    rows = []
    for _, row in jsonl_rows(path):
        row["video"] = str(path.parent / row["video"])
        if split is None or row["split"] == split:
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the toy direction videos.")
    parser.add_argument("--out", default="assets/videos/toy")
    parser.add_argument("--count", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    args = parser.parse_args(argv)
    manifest = build_toy_videos(args.out, args.count, args.seed, args.num_frames, args.size)
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
