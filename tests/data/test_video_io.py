"""PyAV video IO: sampling modes, caps, exact indices, unreadable files, toy clips round trip."""

import numpy as np
import pytest

from mmalign.data.video_io import (
    VideoDecodeError,
    VideoSampling,
    fit_pixels,
    list_videos,
    read_video,
    read_videos,
    sample_indices,
    write_video,
)
from mmalign.toy.videos import build_toy_videos, load_manifest, render_clip


def _ramp(t=12, h=32, w=48):
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i] = i * 20  # frame i has brightness 20 i: decoded frames reveal their source index
    return frames


def test_sample_indices_modes():
    assert sample_indices(12, 8.0, VideoSampling(num_frames=4, max_frames=16)) == [0, 4, 7, 11]
    # fps: 12 frames at 8 fps = 1.5 s -> 3 frames at 2 fps, rounded down to an even count
    assert sample_indices(12, 8.0, VideoSampling(mode="fps", fps=2.0, frame_multiple=2)) == [0, 11]
    assert len(sample_indices(1000, 25.0, VideoSampling(mode="fps", fps=1.0, max_frames=16))) == 16
    # fewer frames than requested: indices repeat (and say so)
    assert sample_indices(3, 8.0, VideoSampling(num_frames=4)) == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="mode"):
        sample_indices(10, 8.0, VideoSampling(mode="random"))


def test_fit_pixels():
    assert fit_pixels(64, 64, None) == (64, 64)
    h, w = fit_pixels(480, 640, 28 * 28 * 4, multiple=28)
    assert h * w <= 28 * 28 * 4 and h % 28 == 0 and w % 28 == 0


def test_read_video_exact_indices_and_caps(tmp_path):
    path = write_video(tmp_path / "ramp.mp4", _ramp(), fps=8)
    v = read_video(path, VideoSampling(num_frames=4, max_frames=16))
    assert v.indices == [0, 4, 7, 11] and v.total_frames == 12 and v.native_fps == 8.0
    assert v.frames.shape == (4, 32, 48, 3) and v.frames.dtype == np.uint8
    assert np.allclose(v.frames.reshape(4, -1).mean(1), [20 * i for i in v.indices], atol=3)
    assert v.timestamps == [i / 8.0 for i in v.indices]
    small = read_video(path, VideoSampling(num_frames=6, max_frames=4, max_pixels=16 * 24, size_multiple=4))
    assert small.frames.shape[0] == 4 and small.frames.shape[1] * small.frames.shape[2] <= 16 * 24


def test_unreadable_video_error_and_skip(tmp_path):
    good = write_video(tmp_path / "good.mp4", _ramp(4), fps=4)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        read_video(bad)
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    videos, report = read_videos([good, bad], VideoSampling(num_frames=2), on_error="skip", max_skip_fraction=0.5)
    assert videos[0] is not None and videos[1] is None and report.count == 1 and str(bad) in report.skipped
    with pytest.raises(VideoDecodeError, match="1/2 videos unreadable"):
        read_videos([good, bad], on_error="skip", max_skip_fraction=0.2)


def test_list_videos_folder_and_list(tmp_path):
    write_video(tmp_path / "b.mp4", _ramp(2), fps=2)
    write_video(tmp_path / "a.mp4", _ramp(2), fps=2)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_videos(tmp_path)] == ["a.mp4", "b.mp4"]
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nb.mp4\n\n")
    assert list_videos(lst) == [tmp_path / "b.mp4"]


def test_toy_videos_shipped_and_reproducible(tmp_path):
    rows = load_manifest("assets/videos/toy/manifest.jsonl")
    assert len(rows) == 96 and {r["split"] for r in rows} == {"train", "test"}
    assert sum(r["split"] == "test" for r in rows) == 24
    # the generator rebuilds the shipped files byte for byte
    build_toy_videos(tmp_path, count=96, seed=0)
    for name in ("left_000.mp4", "up_017.mp4", "manifest.jsonl"):
        assert (tmp_path / name).read_bytes() == open(f"assets/videos/toy/{name}", "rb").read()
    r = rows[0]
    v = read_video(r["video"], VideoSampling(num_frames=8, max_frames=8))
    ref = render_clip(r["direction"], r["color"], r["shape"], r["seed"])
    assert np.abs(v.frames.astype(int) - ref).mean() < 1.0


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_toy_clip_moves_and_reverse_flips(direction):
    frames = render_clip(direction, "red", "circle", seed=1)
    def centre(f):
        ys, xs = np.nonzero((f != f[0, 0]).any(-1))
        return xs.mean(), ys.mean()
    (x0, y0), (x1, y1) = centre(frames[0]), centre(frames[-1])
    moved = {"left": x1 < x0, "right": x1 > x0, "up": y1 < y0, "down": y1 > y0}
    assert moved[direction]
    reversed_clip = frames[::-1]
    (rx0, ry0), (rx1, ry1) = centre(reversed_clip[0]), centre(reversed_clip[-1])
    flipped = {"left": rx1 > rx0, "right": rx1 < rx0, "up": ry1 > ry0, "down": ry1 < ry0}
    assert flipped[direction]
