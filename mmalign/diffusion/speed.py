"""Memory and speed options for the UNet: attention backend, gradient checkpointing, channels-last, compile.

Attention (spec/ecosystem.md §C.2): PyTorch SDPA is diffusers' default processor (``AttnProcessor2_0``) and is as
fast as xFormers on current GPUs; ``attention: xformers`` is honoured only when a *working* build is present — we
run one ``memory_efficient_attention`` forward and backward on the device first (a PyPI wheel can import yet lack
kernels for the installed torch) and otherwise warn and keep SDPA. ``auto`` picks xformers only when that check
passes on a CUDA device.
"""

from __future__ import annotations

import warnings

import torch


def xformers_works(device: torch.device | str) -> tuple[bool, str]:
    """``(ok, reason)``: can xformers run a tiny attention forward+backward on ``device``?"""
    device = torch.device(device)
    if device.type != "cuda":
        return False, "xformers needs a CUDA device"
    try:
        import xformers.ops as xops
    except Exception as exc:  # ImportError or a broken binary
        return False, f"xformers is not importable ({type(exc).__name__}: {exc})"
    try:
        q = torch.randn(1, 8, 1, 16, device=device, dtype=torch.float16, requires_grad=True)
        xops.memory_efficient_attention(q, q, q).sum().backward()
        return True, "ok"
    except Exception as exc:
        return False, f"xformers memory_efficient_attention failed ({type(exc).__name__}: {exc})"


def set_attention(unet, attention: str, device: torch.device | str) -> str:
    """Apply ``sdpa | xformers | auto``; returns the backend actually used."""
    if attention not in ("sdpa", "xformers", "auto"):
        raise ValueError(f"model.attn_implementation must be sdpa, xformers or auto, got '{attention}'")
    if attention == "sdpa":
        return "sdpa"
    ok, reason = xformers_works(device)
    if ok:
        unet.enable_xformers_memory_efficient_attention()
        return "xformers"
    if attention == "xformers":
        warnings.warn(f"model.attn_implementation=xformers requested but unavailable: {reason}; using PyTorch SDPA", stacklevel=2)
    return "sdpa"


def apply_speed_options(unet, *, attention: str, gradient_checkpointing: bool, channels_last: bool, compile: bool,
                        device: torch.device | str) -> dict[str, object]:
    """Configure the UNet in place; returns what was applied (for summary.json)."""
    used = set_attention(unet, attention, device)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile:
        unet.compile()
    return {"attention": used, "gradient_checkpointing": gradient_checkpointing, "channels_last": channels_last,
            "compile": compile}
