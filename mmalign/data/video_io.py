"""Video decoding with PyAV: frame sampling (uniform or fixed fps), frame and pixel caps, exact indices.

Sampling follows qwen-vl-utils' ``smart_nframes`` (the decoder TEMPLE and most Qwen-VL video recipes use):

* ``uniform``: ``n = min(num_frames, max_frames)`` frames at ``round(linspace(0, total - 1, n))``;
* ``fps``: ``n = round(duration * fps)`` clamped to ``[min_frames, max_frames]``, at the same linspace;

then ``n`` is rounded down to a multiple of ``frame_multiple`` (2 for Qwen-VL's temporal patch of 2 frames,
never below ``frame_multiple``). When a video has fewer frames than requested, indices repeat (as in
qwen-vl-utils) — the repetition is visible in :attr:`DecodedVideo.indices`, which always records exactly
which source frames were returned. ``max_pixels`` caps ``height * width`` per frame (aspect kept, both sides
rounded down to ``size_multiple``).

An unreadable file raises :class:`VideoDecodeError` naming the file; :func:`read_videos` can instead skip
and count such files, stopping when the skipped fraction exceeds a limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmalign.validate import OneOf, Range, register, register_check

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


class VideoDecodeError(ValueError):
    """A video file could not be opened or decoded; the message names the file."""


@dataclass
class VideoSampling:
    """How frames are chosen from a video (the ``video:`` block of the video recipe configs)."""

    mode: str = "uniform"
    """``uniform`` (``num_frames`` evenly spaced frames) or ``fps`` (``fps`` frames per second of video)."""
    num_frames: int = 16
    """Frames to sample in ``uniform`` mode."""
    fps: float = 1.0
    """Target frames per second in ``fps`` mode (TEMPLE/qwen-vl-utils default: 1)."""
    min_frames: int = 2
    """Lower bound on the number of frames in ``fps`` mode."""
    max_frames: int = 16
    """Upper bound on the number of frames in both modes."""
    frame_multiple: int = 2
    """Round the frame count down to a multiple of this (2 = Qwen-VL temporal patch size)."""
    max_pixels: int | None = None
    """Cap on ``height * width`` per frame (aspect ratio kept); ``None`` keeps the native size."""
    size_multiple: int = 1
    """Round resized height and width down to a multiple of this (e.g. 28 for Qwen-VL)."""


register(VideoSampling, mode=OneOf("uniform", "fps"), num_frames=Range(1), fps=Range(0, low_open=True),
         min_frames=Range(1), max_frames=Range(1), frame_multiple=Range(1), max_pixels=Range(1), size_multiple=Range(1))
register_check(VideoSampling, lambda v: None if v.min_frames <= v.max_frames else
               f"min_frames ({v.min_frames}) must be <= max_frames ({v.max_frames})")


@dataclass
class DecodedVideo:
    """Frames of one video and where they came from."""

    path: str
    frames: np.ndarray
    """uint8 array ``(T, H, W, 3)`` in RGB."""
    indices: list[int]
    """Source frame index of each returned frame (0-based, in decoding order)."""
    total_frames: int
    native_fps: float
    timestamps: list[float] = field(default_factory=list)
    """Seconds of each returned frame (``index / native_fps``)."""


def sample_indices(total_frames: int, native_fps: float, sampling: VideoSampling) -> list[int]:
    """Frame indices to keep for a video of ``total_frames`` frames at ``native_fps``."""
    if total_frames <= 0:
        raise ValueError("video has no frames")
    if sampling.mode == "uniform":
        n = min(sampling.num_frames, sampling.max_frames)
    elif sampling.mode == "fps":
        duration = total_frames / max(native_fps, 1e-6)
        n = round(duration * sampling.fps)
        n = min(max(n, sampling.min_frames), sampling.max_frames)
    else:
        raise ValueError(f"video.mode must be 'uniform' or 'fps', got '{sampling.mode}'")
    multiple = max(1, sampling.frame_multiple)
    n = max(multiple, (n // multiple) * multiple)
    return [int(round(x)) for x in np.linspace(0, total_frames - 1, n)]


def fit_pixels(height: int, width: int, max_pixels: int | None, multiple: int = 1) -> tuple[int, int]:
    """Largest ``(h, w)`` with the input aspect ratio, ``h * w <= max_pixels``, both multiples of ``multiple``."""
    h, w = height, width
    if max_pixels is not None and h * w > max_pixels:
        scale = math.sqrt(max_pixels / (h * w))
        h, w = h * scale, w * scale
    m = max(1, multiple)
    return max(m, int(h // m) * m), max(m, int(w // m) * m)


def _count_frames(path: str) -> tuple[int, float]:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0) or 1.0
        if stream.frames:
            return int(stream.frames), fps
        return sum(1 for _ in container.decode(stream)), fps


def _decode_selected(path: str, wanted: Sequence[int], size: tuple[int, int] | None) -> dict[int, np.ndarray]:
    import av

    keep = set(wanted)
    last = max(keep)
    out: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in keep:
                if size is not None and (frame.height, frame.width) != size:
                    frame = frame.reformat(width=size[1], height=size[0])
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return out


def read_video(path: str | os.PathLike, sampling: VideoSampling | None = None) -> DecodedVideo:
    """Decode the sampled frames of ``path``; raise :class:`VideoDecodeError` naming the file on failure."""
    import av

    sampling = sampling or VideoSampling()
    path = str(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: video file not found")
    try:
        total, fps = _count_frames(path)
        indices = sample_indices(total, fps, sampling)
        with av.open(path) as container:
            stream = container.streams.video[0]
            native = (stream.codec_context.height, stream.codec_context.width)
        size = fit_pixels(*native, sampling.max_pixels, sampling.size_multiple)
        frames = _decode_selected(path, indices, size)
        if len(frames) < len(set(indices)):  # container over-reported its frame count: resample on what exists
            total = max(frames) + 1 if frames else 0
            if total == 0:
                raise VideoDecodeError(f"{path}: no decodable frames")
            indices = sample_indices(total, fps, sampling)
            frames = _decode_selected(path, indices, size)
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration) as exc:
        raise VideoDecodeError(f"{path}: cannot decode video ({type(exc).__name__}: {exc})") from exc
    stacked = np.stack([frames[i] for i in indices])
    return DecodedVideo(path=path, frames=stacked, indices=list(indices), total_frames=total,
                        native_fps=fps, timestamps=[i / fps for i in indices])


@dataclass
class SkipReport:
    """Videos skipped by :func:`read_videos` and why."""

    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.skipped)


def read_videos(
    paths: Sequence[str | os.PathLike], sampling: VideoSampling | None = None, *,
    on_error: str = "raise", max_skip_fraction: float = 0.1,
) -> tuple[list[DecodedVideo | None], SkipReport]:
    """Decode many videos. ``on_error='skip'`` puts ``None`` for unreadable ones and counts them; more than
    ``max_skip_fraction`` of the inputs unreadable raises :class:`VideoDecodeError` listing a few."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got '{on_error}'")
    report = SkipReport()
    out: list[DecodedVideo | None] = []
    for p in paths:
        try:
            out.append(read_video(p, sampling))
        except VideoDecodeError as exc:
            if on_error == "raise":
                raise
            report.skipped[str(p)] = str(exc)
            out.append(None)
    if paths and report.count / len(paths) > max_skip_fraction:
        some = "; ".join(list(report.skipped.values())[:3])
        raise VideoDecodeError(
            f"{report.count}/{len(paths)} videos unreadable (more than max_skip_fraction={max_skip_fraction}): {some}"
        )
    return out, report


def list_videos(source: str | os.PathLike) -> list[Path]:
    """Videos named by ``source``: a folder (sorted files with a video suffix), a ``.jsonl`` file (the ``video``
    field of each row) or a text file, one path a line (relative paths resolved against the list's folder;
    ``#`` comments and blank lines ignored)."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if source.is_file() and source.suffix == ".jsonl":
        import json

        paths = []
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                video = json.loads(line).get("video")
                if not video:
                    raise ValueError(f"{source}:{n}: missing field 'video'")
                paths.append(Path(video) if Path(video).is_absolute() else source.parent / video)
        return paths
    if source.is_file():
        paths = []
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                paths.append(p if p.is_absolute() else source.parent / p)
        return paths
    raise FileNotFoundError(f"{source}: neither a folder of videos nor a list file")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8, crf: int = 18) -> Path:
    """Write uint8 RGB frames ``(T, H, W, 3)`` as an H.264 mp4, byte-identical across runs (yuv444p keeps small
    synthetic colours within a few levels; falls back to mpeg4 when libx264 is missing)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    # bitexact: no creation time or encoder version in the file, so rebuilding gives identical bytes
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": str(crf), "preset": "veryslow", "tune": "animation", "threads": "1"}
        except (av.error.FFmpegError, ValueError):  # pragma: no cover - depends on the FFmpeg build
            stream = container.add_stream("mpeg4", rate=fps)
            stream.pix_fmt = "yuv420p"
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
