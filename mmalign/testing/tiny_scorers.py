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


# ---------------------------------------------------------------------------------------------- ImageReward
TINY_IMAGEREWARD = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8},
    "text": {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 40, "encoder_hidden_size": 32},
}
_BERT_WORDS = ("a photo of the cat dog red blue green car tree sitting on in with an image mat big small house "
               "sky over under and painting portrait two three").split()


def write_tiny_bert_vocab(folder: str | Path) -> Path:
    """A small uncased WordPiece ``vocab.txt`` (BERT special tokens first, as bert-base-uncased: [PAD]=0)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,!?'-") + [str(d) for d in range(10)]
              + letters + ["##" + c for c in letters] + _BERT_WORDS)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    return folder


def tiny_bert_vocab_size(folder: str | Path) -> int:
    """Tokens of the vocab plus BLIP's two added tokens ([DEC], [ENC])."""
    return len((Path(folder) / "vocab.txt").read_text().split()) + 2


def imagereward_official_state_dict(arch: dict, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official ``ImageReward.pt`` keys and shapes (``ImageReward`` module of image-reward
    1.5: ``blip.visual_encoder`` = BLIP ``vit.VisionTransformer``, ``blip.text_encoder`` = ``med.BertModel``
    without pooler, ``blip.{vision,text}_proj`` (embed_dim 256), ``mlp.layers``), for ``arch`` = sizes as in
    :data:`TINY_IMAGEREWARD`."""
    g = torch.Generator().manual_seed(seed)
    v, t = arch["vision"], arch["text"]
    d, h = v["hidden_size"], t["hidden_size"]
    shapes: dict[str, tuple[int, ...]] = {}
    ve = "blip.visual_encoder."
    n_pos = (v["image_size"] // v["patch_size"]) ** 2 + 1
    shapes.update({ve + "cls_token": (1, 1, d), ve + "pos_embed": (1, n_pos, d),
                   ve + "patch_embed.proj.weight": (d, 3, v["patch_size"], v["patch_size"]),
                   ve + "patch_embed.proj.bias": (d,), ve + "norm.weight": (d,), ve + "norm.bias": (d,)})
    for i in range(v["num_hidden_layers"]):
        b = f"{ve}blocks.{i}."
        shapes.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                       b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                       b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                       b + "mlp.fc1.weight": (v["intermediate_size"], d), b + "mlp.fc1.bias": (v["intermediate_size"],),
                       b + "mlp.fc2.weight": (d, v["intermediate_size"]), b + "mlp.fc2.bias": (d,)})
    te = "blip.text_encoder."
    shapes.update({te + "embeddings.word_embeddings.weight": (vocab_size, h),
                   te + "embeddings.position_embeddings.weight": (t["max_position_embeddings"], h),
                   te + "embeddings.LayerNorm.weight": (h,), te + "embeddings.LayerNorm.bias": (h,)})
    for i in range(t["num_hidden_layers"]):
        b = f"{te}encoder.layer.{i}."
        for part, kv_in in (("attention", h), ("crossattention", t["encoder_hidden_size"])):
            shapes.update({f"{b}{part}.self.query.weight": (h, h), f"{b}{part}.self.query.bias": (h,),
                           f"{b}{part}.self.key.weight": (h, kv_in), f"{b}{part}.self.key.bias": (h,),
                           f"{b}{part}.self.value.weight": (h, kv_in), f"{b}{part}.self.value.bias": (h,),
                           f"{b}{part}.output.dense.weight": (h, h), f"{b}{part}.output.dense.bias": (h,),
                           f"{b}{part}.output.LayerNorm.weight": (h,), f"{b}{part}.output.LayerNorm.bias": (h,)})
        shapes.update({b + "intermediate.dense.weight": (t["intermediate_size"], h),
                       b + "intermediate.dense.bias": (t["intermediate_size"],),
                       b + "output.dense.weight": (h, t["intermediate_size"]), b + "output.dense.bias": (h,),
                       b + "output.LayerNorm.weight": (h,), b + "output.LayerNorm.bias": (h,)})
    shapes.update({"blip.vision_proj.weight": (256, d), "blip.vision_proj.bias": (256,),
                   "blip.text_proj.weight": (256, h), "blip.text_proj.bias": (256,)})
    for idx, (n_out, n_in) in zip((0, 2, 4, 6, 7), ((1024, h), (128, 1024), (64, 128), (16, 64), (1, 16))):
        shapes.update({f"mlp.layers.{idx}.weight": (n_out, n_in), f"mlp.layers.{idx}.bias": (n_out,)})
    sd = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if "LayerNorm.weight" in key or key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            sd[key] = 1.0 + 0.1 * x
        elif key.startswith("mlp."):
            sd[key] = x / (shape[-1] ** 0.5)
        else:
            sd[key] = 0.2 * x if key.endswith(("embeddings.weight", "cls_token", "pos_embed")) else 0.05 * x
    sd[te + "embeddings.position_ids"] = torch.arange(t["max_position_embeddings"]).expand((1, -1)).clone()
    return sd


def save_tiny_imagereward(out_dir: str | Path, seed: int = 0) -> dict:
    """Write ``ImageReward.pt`` (official layout, random weights) and a tiny BERT vocab; returns the
    ``load_scorer("imagereward", **kwargs)`` keyword arguments."""
    out = Path(out_dir)
    vocab = write_tiny_bert_vocab(out / "bert-tiny")
    sd = imagereward_official_state_dict(TINY_IMAGEREWARD, tiny_bert_vocab_size(vocab), seed)
    torch.save(sd, out / "ImageReward.pt")
    return {"checkpoint": str(out / "ImageReward.pt"), "tokenizer": str(vocab),
            "arch": {"vision": TINY_IMAGEREWARD["vision"],
                     "text": {**TINY_IMAGEREWARD["text"], "vocab_size": tiny_bert_vocab_size(vocab),
                              "bos_token_id": tiny_bert_vocab_size(vocab) - 2, "sep_token_id": 3}}}


# ---------------------------------------------------------------------------------------------- HPSv3
def save_tiny_hpsv3(out_dir: str | Path, seed: int = 0, pixels: int = 2 * 28 * 28) -> dict:
    """A tiny Qwen2-VL base folder (:mod:`mmalign.testing.tiny_vlm`) and ``HPSv3.safetensors`` in the official
    layout (transformers 4.45 ``Qwen2VLRewardModelBT`` keys: ``model.*`` decoder, ``visual.*``, ``lm_head``,
    ``rm_head.{0,3,5}``; embeddings resized to the tokenizer with ``<|Reward|>``); returns the
    ``load_scorer("hpsv3", **kwargs)`` keyword arguments (``pixels`` within the tiny processor's 784..3136)."""
    from safetensors.torch import save_file
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from mmalign.testing.tiny_vlm import write_tiny_vlm

    out = Path(out_dir)
    base = write_tiny_vlm("qwen2vl", out / "qwen2vl-base", seed=seed)
    processor = AutoProcessor.from_pretrained(str(base))
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(base))
    model.resize_token_embeddings(len(processor.tokenizer))
    torch.manual_seed(seed + 1)
    hidden = model.config.text_config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(hidden, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.05),
                               torch.nn.Linear(1024, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    sd = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model."):]
        elif key.startswith("model.visual."):
            key = key[len("model."):]
        sd[key] = value.contiguous().clone()
    sd.update({f"rm_head.{k}": v for k, v in head.state_dict().items()})
    save_file(sd, str(out / "HPSv3.safetensors"))
    return {"checkpoint": str(out / "HPSv3.safetensors"), "backbone_checkpoint": str(base), "pixels": pixels}
