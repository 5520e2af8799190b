"""open_clip ``CLIP`` <-> transformers ``CLIPModel`` weight conversion (ViT image tower + text tower).

Mapping from shared/spec/scorers.md §9.6 (checked numerically there and in tests/scorers/test_convert.py):
open_clip's fused ``attn.in_proj_{weight,bias}`` is the dim-0 concatenation of HF's ``{q,k,v}_proj``; the
projections ``text_projection`` / ``visual.proj`` are stored (in, out) and used as ``x @ W`` in open_clip, and as
``nn.Linear`` weights (out, in) in HF, so they are transposed. The activation must match (GELU for LAION/HPS/
PickScore, QuickGELU for OpenAI weights); HF ``eos_token_id=2`` means argmax pooling like open_clip.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_BLOCK = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_DIRECT = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_RESBLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def is_open_clip_state_dict(sd: dict[str, Any]) -> bool:
    """Heuristic: open_clip CLIP keys (``visual.proj`` / ``text_projection`` without ``.weight``)."""
    return "visual.proj" in sd or "text_projection" in sd and "text_projection.weight" not in sd


def open_clip_to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip ``CLIP.state_dict()`` -> transformers ``CLIPModel`` keys. Unknown keys raise ``ValueError``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in _DIRECT:
            out[_DIRECT[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        elif (m := _RESBLOCK.match(key)) is not None:
            tower = "vision_model" if m.group(1) else "text_model"
            prefix, rest = f"{tower}.encoder.layers.{m.group(2)}.", m.group(3)
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight | bias
                q, k, v = value.chunk(3, dim=0)
                for name, part in zip(("q", "k", "v"), (q, k, v)):
                    out[f"{prefix}self_attn.{name}_proj.{kind}"] = part.contiguous()
                continue
            module, _, param = rest.rpartition(".")
            if module not in _BLOCK:
                raise ValueError(f"open_clip key {key!r} has no HF CLIP equivalent")
            out[f"{prefix}{_BLOCK[module]}.{param}"] = value
        elif key.endswith("attn_mask"):
            continue
        else:
            raise ValueError(f"open_clip key {key!r} has no HF CLIP equivalent (only ViT + text towers convert)")
    return out


def hf_to_open_clip_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPModel`` keys -> open_clip ``CLIP`` keys (inverse of :func:`open_clip_to_hf_state_dict`)."""
    inverse_direct = {v: k for k, v in _DIRECT.items()}
    inverse_transposed = {v: k for k, v in _TRANSPOSED.items()}
    inverse_block = {v: k for k, v in _BLOCK.items()}
    layer = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue
        if key in inverse_direct:
            out[inverse_direct[key]] = value
        elif key in inverse_transposed:
            out[inverse_transposed[key]] = value.t().contiguous()
        elif (m := layer.match(key)) is not None:
            prefix = ("visual." if m.group(1) == "vision_model" else "") + f"transformer.resblocks.{m.group(2)}."
            rest = m.group(3)
            if (q := re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)) is not None:
                qkv.setdefault(f"{prefix}attn.in_proj_{q.group(2)}", {})[q.group(1)] = value
                continue
            module, _, param = rest.rpartition(".")
            if module not in inverse_block:
                raise ValueError(f"HF CLIP key {key!r} has no open_clip equivalent")
            out[f"{prefix}{inverse_block[module]}.{param}"] = value
        else:
            raise ValueError(f"HF CLIP key {key!r} has no open_clip equivalent")
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"incomplete q/k/v projections for {key}: have {sorted(parts)}")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def hf_clip_config_from_open_clip(model_cfg: dict[str, Any], quick_gelu: bool = False):
    """A ``transformers.CLIPConfig`` with the same architecture as an open_clip ViT config dict."""
    from transformers import CLIPConfig

    vision, text = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
    act = "quick_gelu" if (quick_gelu or model_cfg.get("quick_gelu", False)) else "gelu"
    v_width, t_width = vision.get("width", 768), text.get("width", 512)
    v_heads = v_width // vision.get("head_width", 64)
    return CLIPConfig(
        projection_dim=model_cfg["embed_dim"],
        text_config=dict(
            vocab_size=text.get("vocab_size", 49408), hidden_size=t_width,
            intermediate_size=int(t_width * text.get("mlp_ratio", 4.0)), num_hidden_layers=text.get("layers", 12),
            num_attention_heads=text.get("heads", 8), max_position_embeddings=text.get("context_length", 77),
            hidden_act=act, layer_norm_eps=1e-5, eos_token_id=2, bos_token_id=49406, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=v_width, intermediate_size=int(v_width * vision.get("mlp_ratio", 4.0)),
            num_hidden_layers=vision.get("layers", 12), num_attention_heads=v_heads,
            image_size=vision.get("image_size", 224), patch_size=vision.get("patch_size", 16),
            hidden_act=act, layer_norm_eps=1e-5,
        ),
    )
