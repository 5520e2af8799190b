"""Tiny random-weight CLIP backbones (real open_clip / transformers classes) for tests, smoke runs and the bench.

``TINY_OPEN_CLIP`` is the open_clip config of spec §9.4 (1.7 M parameters, 32x32 input); ``TINY_HF_CLIP`` its
transformers mirror. :func:`save_tiny_scorer_checkpoints` writes checkpoints in every official layout so that
``load_scorer(name, checkpoint=..., **overrides)`` runs each scorer family without downloads.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_HF_CLIP = {
    "projection_dim": 32,
    "text_config": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "gelu",
                    "layer_norm_eps": 1e-5, "eos_token_id": 2},
    "vision_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
}


def tiny_open_clip(seed: int = 0, logit_scale: float = 50.0, config: dict | None = None):
    """A random-weight open_clip ``CLIP`` (eval mode) with ``exp(logit_scale) = logit_scale``."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**(config or TINY_OPEN_CLIP)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    return model


def tiny_hf_clip(seed: int = 0, logit_scale: float = 70.0, config: dict | None = None):
    """A random-weight transformers ``CLIPModel`` (eval mode)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**(config or TINY_HF_CLIP))).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    return model


def save_tiny_scorer_checkpoints(out_dir: str | Path, seed: int = 0) -> dict[str, dict]:
    """Write tiny checkpoints in the official layouts; returns ``load_scorer`` kwargs per scorer name.

    * ``hps.pt``: ``torch.save({'epoch','name','state_dict'})`` with fp16 open_clip keys (HPSv2 layout);
    * ``hf_clip/``: ``CLIPModel.save_pretrained`` folder (PickScore / CLIPScore layout);
    * ``aesthetic.pth``: plain state dict ``layers.{0,2,4,6,7}.*`` (LAION layout) on the 32-d tiny CLIP.
    """
    from scorers.heads import AestheticMLP

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    oc = tiny_open_clip(seed)
    torch.save({"epoch": 1, "name": "tiny", "state_dict": {k: v.half() for k, v in oc.state_dict().items()}},
               out / "hps.pt")
    tiny_hf_clip(seed).save_pretrained(out / "hf_clip")
    torch.manual_seed(seed + 1)
    torch.save(AestheticMLP(TINY_HF_CLIP["projection_dim"]).state_dict(), out / "aesthetic.pth")
    hps = {"checkpoint": str(out / "hps.pt"), "arch": TINY_OPEN_CLIP}
    return {
        "hpsv2": hps, "hpsv2.1": hps,
        "pickscore": {"checkpoint": str(out / "hf_clip")},
        "clipscore": {"checkpoint": str(out / "hf_clip")},
        "aesthetic": {"checkpoint": str(out / "aesthetic.pth"), "backbone_checkpoint": str(out / "hf_clip")},
    }
