"""From a user embedding to user tokens for the decoupled cross-attention (spec §5, pitfall 2: the width and length
of the embedding depend on the VLM, so the adapter needs a projection).

Input ``u``: ``(B, S, H)`` — ``S`` = number of layers + 1 for VLM embeddings (final-step hidden states across
layers), ``S = 1`` for the CLIP embedding — or ``(B, H)`` (read as ``S = 1``). Each of the ``S`` vectors is first
normalised with a parameter-free LayerNorm (hidden-state norms grow by orders of magnitude across LLM layers). Then
diffusers' IP-Adapter projections, reused unchanged:

* ``S == 1``: :class:`~diffusers.models.embeddings.ImageProjection` (linear to ``num_tokens x D`` + LayerNorm,
  IP-Adapter's projection of a CLIP image embedding) → ``(B, num_tokens, D)``;
* ``S > 1``: :class:`~diffusers.models.embeddings.IPAdapterFullImageProjection` (per-vector MLP + LayerNorm,
  IP-Adapter-Full's projection of a sequence of CLIP hidden states) → ``(B, S, D)``, one token per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import ImageProjection, IPAdapterFullImageProjection
from torch import nn


class UserProjection(nn.Module):
    def __init__(self, user_dim: int, seq_len: int, token_dim: int, num_tokens: int = 4) -> None:
        super().__init__()
        self.user_dim, self.seq_len, self.token_dim = user_dim, seq_len, token_dim
        if seq_len == 1:
            self.proj: nn.Module = ImageProjection(user_dim, token_dim, num_tokens)
            self.num_tokens = num_tokens
        else:
            self.proj = IPAdapterFullImageProjection(user_dim, token_dim)
            self.num_tokens = seq_len

    def forward(self, user_embeds: torch.Tensor) -> torch.Tensor:
        u = user_embeds.unsqueeze(1) if user_embeds.dim() == 2 else user_embeds
        if u.shape[1:] != (self.seq_len, self.user_dim):
            raise ValueError(f"user embedding of shape {tuple(u.shape[1:])}; this adapter expects "
                             f"({self.seq_len}, {self.user_dim})")
        weight = next(self.proj.parameters())
        u = F.layer_norm(u.to(weight.dtype), (self.user_dim,))
        return self.proj(u[:, 0]) if self.seq_len == 1 else self.proj(u)
