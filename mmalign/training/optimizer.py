"""``train.optimizer``: the optimizer over the trainable parameters."""

from __future__ import annotations

import torch

from mmalign.train_config import TrainConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("no trainable parameters: check the LoRA / fine-tuning settings")
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer in ("adamw", "adamw_fused"):
        fused = cfg.optimizer == "adamw_fused" and all(p.is_cuda for p in params)
        return torch.optim.AdamW(
            params, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, fused=fused or None, **kw
        )
    if cfg.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ImportError("train.optimizer=adamw_8bit needs `pip install mmalign[bnb]`") from exc
        return bnb.optim.AdamW8bit(params, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, **kw)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, scale_parameter=False, relative_step=False, clip_threshold=1.0, **kw)
    raise ValueError(f"train.optimizer: unknown optimizer '{cfg.optimizer}' (adamw, adamw_fused, adamw_8bit, adafactor)")
