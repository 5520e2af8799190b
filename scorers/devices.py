"""``--device auto|cpu|cuda|cuda:N``: the one device option of the scorer and ``mmalign`` command lines."""

from __future__ import annotations

import argparse

AUTO_DEVICE = "auto"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=AUTO_DEVICE,
                        help="auto (cuda when available, else cpu) | cpu | cuda | cuda:1 ... (default: auto)")


def resolve_device(value: str | None) -> str:
    """``value`` as a torch device string; ``auto``/None -> cuda when available, else cpu. Unusable -> ValueError."""
    import torch

    if value in (None, "", AUTO_DEVICE):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {value!r}: not a device ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {value}: CUDA is not available on this machine (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {value}: only {torch.cuda.device_count()} CUDA device(s)")
    return str(device)
