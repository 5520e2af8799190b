"""Decoupled (IP-Adapter style) user cross-attention for PPD, on diffusers' attention-processor mechanism.

Every text cross-attention ``attn2`` of the UNet gets a :class:`UserAttnProcessor` (``unet.set_attn_processor``)
that adds a second attention over *user tokens* ``c_u`` with its own key/value projections (spec §5, PPD):

    Z = softmax(Q K_txt^T / sqrt(d)) V_txt + scale * softmax(Q (c_u W_k')^T / sqrt(d)) (c_u W_v')

The user branch is computed by diffusers' own :class:`~diffusers.models.attention_processor.IPAdapterAttnProcessor2_0`
(its ``to_k_ip`` / ``to_v_ip`` are ``W_k'`` / ``W_v'``, its ``scale`` the per-branch scale), reused unchanged. Only
``W_k'``, ``W_v'`` (and the user projection, :mod:`.projection`) train; the UNet stays frozen.

User tokens reach the processors as ``cross_attention_kwargs={"ip_hidden_states": tokens}`` — the name diffusers'
``Attention`` already passes quietly to processors that do not take it (self-attention ``attn1``), as for SD3's
IP-Adapter. Without ``ip_hidden_states`` (``None``) the processor calls the layer's *original* processor with the
original arguments, so the adapted UNet's output is **exactly** the base UNet's (same kernels, same order): that
is the PPD reference "base model without the user branch" — no copy of the UNet is needed.

Initialisation (``init``): ``zero`` (default) — ``W_v' = 0`` and ``W_k'`` small random, so the user branch adds
exactly 0 at the start and the policy equals the reference (DPO loss ``log 2`` at step 0); ``text`` — copy the
layer's text ``to_k`` / ``to_v`` weights (the original IP-Adapter initialisation).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from torch import nn

INITS = ("zero", "text")


class MixedLinear(nn.Linear):
    """A linear layer that computes in its own weight dtype and answers in its input's dtype, so a float32
    trainable branch meets a bf16/fp16 frozen UNet without autocast (as a peft LoRA layer does); under autocast
    the matmul runs in the autocast dtype as before. Parameter names are those of ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype)).to(x.dtype)

    @classmethod
    def of(cls, linear: nn.Linear) -> MixedLinear:
        mixed = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        mixed.load_state_dict(linear.state_dict())
        return mixed


class UserAttnProcessor(nn.Module):
    """``base`` processor for the text attention; ``user`` (an ``IPAdapterAttnProcessor2_0``) when user tokens
    are given. ``user.to_k_ip[0]`` / ``user.to_v_ip[0]`` are the trainable ``W_k'`` / ``W_v'``."""

    def __init__(self, base: Any, hidden_size: int, token_dim: int, num_tokens: int, scale: float = 1.0) -> None:
        super().__init__()
        self.base = base
        self.user = IPAdapterAttnProcessor2_0(hidden_size, cross_attention_dim=token_dim, num_tokens=(num_tokens,),
                                              scale=scale)
        for layers in (self.user.to_k_ip, self.user.to_v_ip):
            layers[0] = MixedLinear.of(layers[0])

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 ip_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        if ip_hidden_states is None:
            return self.base(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                             attention_mask=attention_mask, temb=temb)
        if ip_hidden_states.shape[0] != hidden_states.shape[0]:
            raise ValueError(f"user tokens have batch {ip_hidden_states.shape[0]}, the UNet input "
                             f"{hidden_states.shape[0]}; repeat them per row (e.g. for classifier-free guidance)")
        tokens = ip_hidden_states.to(hidden_states.dtype)  # W_k' / W_v' (MixedLinear) answer in this dtype
        return self.user(attn, hidden_states, encoder_hidden_states=(encoder_hidden_states, [tokens]),
                         attention_mask=attention_mask, temb=temb)


def _is_cross_attention(name: str) -> bool:
    return name.endswith("attn2.processor")


def add_user_branch(unet, token_dim: int, num_tokens: int, init: str = "zero", scale: float = 1.0,
                    seed: int = 0) -> list[str]:
    """Install a :class:`UserAttnProcessor` on every text cross-attention of ``unet`` (its current processors kept
    as the ``base`` path); freeze the UNet; return the names of the adapted layers.

    The new weights take the UNet's dtype and device (for training, cast them to float32 and run under autocast,
    as :func:`mmalign.diffusion.ppd.setup.prepare_user_unet` does). Call *after* any attention-backend switch
    (``set_attn_processor`` replaces all processors)."""
    if init not in INITS:
        raise ValueError(f"ppd.init: unknown '{init}' ({', '.join(INITS)})")
    unet.requires_grad_(False)
    processors = dict(unet.attn_processors)
    adapted = []
    generator = torch.Generator().manual_seed(seed)
    for name, base in processors.items():
        if not _is_cross_attention(name):
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        hidden = attn.to_q.out_features
        proc = UserAttnProcessor(base, hidden, token_dim, num_tokens, scale)
        k, v = proc.user.to_k_ip[0], proc.user.to_v_ip[0]
        with torch.no_grad():
            if init == "text":
                if attn.to_k.in_features != token_dim:
                    raise ValueError(f"ppd.init=text needs token_dim == cross_attention_dim ({attn.to_k.in_features})")
                k.weight.copy_(attn.to_k.weight.float())
                v.weight.copy_(attn.to_v.weight.float())
            else:
                k.weight.copy_(torch.randn(k.weight.shape, generator=generator) * token_dim ** -0.5)
                v.weight.zero_()
        processors[name] = proc.to(attn.to_q.weight.device, attn.to_q.weight.dtype)
        adapted.append(name)
    if not adapted:
        raise ValueError("the UNet has no text cross-attention layers (attn2) to add a user branch to")
    unet.set_attn_processor(processors)
    return adapted


def user_processors(unet) -> dict[str, UserAttnProcessor]:
    """The installed user processors by layer name."""
    return {n: p for n, p in unet.attn_processors.items() if isinstance(p, UserAttnProcessor)}


def user_branch_state_dict(unet) -> dict[str, torch.Tensor]:
    """``{"<layer>.to_k_ip.weight": ..., "<layer>.to_v_ip.weight": ...}`` of every user processor."""
    out = {}
    for name, proc in user_processors(unet).items():
        layer = name.removesuffix(".processor")
        out[f"{layer}.to_k_ip.weight"] = proc.user.to_k_ip[0].weight
        out[f"{layer}.to_v_ip.weight"] = proc.user.to_v_ip[0].weight
    return out


def set_user_scale(unet, scale: float) -> None:
    """The per-branch scale of the user attention (0 switches the user branch off, as IP-Adapter's scale)."""
    for proc in user_processors(unet).values():
        proc.user.scale = [float(scale)]
