"""The user-conditioned UNet: a frozen diffusers UNet with user cross-attention (:mod:`.attention`) and the user
projection (:mod:`.projection`) — the module PPD trains (only the new parameters require grad).

``model(sample, t, encoder_hidden_states, user_embeds=u, ...)`` projects ``u`` to tokens and passes them to the
UNet as ``cross_attention_kwargs={"ip_hidden_states": tokens}``; ``user_embeds=None`` runs the base UNet exactly
(the PPD reference).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmalign.diffusion.ppd.attention import add_user_branch
from mmalign.diffusion.ppd.projection import UserProjection


class UserConditionedUNet(nn.Module):
    def __init__(self, unet, projection: UserProjection) -> None:
        super().__init__()
        self.unet, self.projection = unet, projection

    @classmethod
    def build(cls, unet, user_shape: tuple[int, int], num_tokens: int = 4, init: str = "zero", scale: float = 1.0,
              seed: int = 0) -> UserConditionedUNet:
        """Add the user branch to ``unet`` (in place, frozen base) for user embeddings of shape ``(S, H)``."""
        seq_len, user_dim = user_shape
        token_dim = int(unet.config.cross_attention_dim)
        torch.manual_seed(seed)
        projection = UserProjection(user_dim, seq_len, token_dim, num_tokens)
        add_user_branch(unet, token_dim, projection.num_tokens, init=init, scale=scale, seed=seed)
        weight = next(unet.parameters())
        return cls(unet, projection.to(weight.device, weight.dtype))

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def user_tokens(self, user_embeds: torch.Tensor) -> torch.Tensor:
        """User tokens in the projection's own dtype (float32 when trained next to a bf16/fp16 frozen UNet)."""
        weight = next(self.projection.parameters())
        return self.projection(user_embeds.to(weight.device, weight.dtype))

    @property
    def projection_device(self) -> torch.device:
        return next(self.projection.parameters()).device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                user_embeds: torch.Tensor | None = None, cross_attention_kwargs: dict[str, Any] | None = None,
                **kwargs: Any):
        kwargs_ = dict(cross_attention_kwargs or {})
        if user_embeds is not None:
            kwargs_["ip_hidden_states"] = self.user_tokens(user_embeds)
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         cross_attention_kwargs=kwargs_ or None, **kwargs)
