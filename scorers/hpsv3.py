"""HPSv3 (Ma et al., ICCV 2025, arXiv 2508.03789): Qwen2-VL-7B-Instruct + a reward head read at ``<|Reward|>``.

Official code: PyPI ``hpsv3`` 1.0.0 (pins transformers 4.45.2; not a dependency), transcribed on today's
transformers:

* ``hpsv3/train.py`` ``create_model_and_processor`` l.29-116: the base processor with ``padding_side="right"``
  and the added special token ``<|Reward|>``; ``resize_token_embeddings(len(tokenizer))``; weights in bf16 and
  the head in float32;
* ``hpsv3/model/qwen2vl_trainer.py`` ``Qwen2VLRewardModelBT``: the ``ranknet`` head l.99-106 (Linear(hidden,
  1024), ReLU, Dropout(0.05), Linear(1024, 16), ReLU, Linear(16, 2)); ``forward`` l.148-247: token embeddings,
  the vision tower's merged features scattered into the image-pad positions, the **text decoder called without
  position ids** (transformers 4.45 ``Qwen2VLModel`` then uses ``arange(L)`` for all three M-RoPE sections: plain
  1-D positions, not the multimodal positions ``Qwen2VLForConditionalGeneration`` computes), the head in float32
  on the last hidden states, the row of the ``<|Reward|>`` token;
* ``hpsv3/inference.py`` ``prepare_batch`` l.97-137: one user turn ``[image, INSTRUCTION.format(prompt) +
  suffix]`` (:mod:`scorers.hpsv3_prompt`), ``apply_chat_template(add_generation_prompt=True)``, each image resized
  by ``dataset/utils.py`` ``fetch_image`` l.84-176 (Qwen2-VL ``smart_resize`` l.55-81, factor 28, min = max =
  256*28*28 pixels, PIL bicubic), ``padding=True``; ``reward`` l.139-147 returns ``[B, 2]`` = (mu, sigma).

Score = mu. Checkpoint ``HPSv3.safetensors`` (MizzenAI/HPSv3): the state dict of ``Qwen2VLRewardModelBT`` under
transformers 4.45 (``model.*`` = text decoder, ``visual.*``, ``lm_head.*``, ``rm_head.*``), renamed by
:func:`hpsv3_to_hf_state_dict` for transformers 5 ``Qwen2VLModel`` and loaded strictly (``lm_head`` is dropped:
the reward never reads the LM logits). The config and processor come from the base model folder
(``backbone_checkpoint``: Qwen2-VL-7B-Instruct).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from scorers.cards import ScorerCard
from scorers.checkpoints import load_strict, read_folder_state_dict, read_state_dict, resolve_checkpoint
from scorers.hpsv3_prompt import REWARD_TOKEN, reward_prompt
from scorers.images import broadcast_prompts, to_pil_list

FACTOR = 28
MAX_RATIO = 200


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL smart resize as ``hpsv3/dataset/utils.py`` l.55-81: sides multiples of ``factor``, area in range."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"hpsv3: aspect ratio must be at most {MAX_RATIO}, got {max(height, width) / min(height, width):.1f}"
                         f" for a {width}x{height} image")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar < factor or w_bar < factor:
        raise ValueError(f"hpsv3: a {width}x{height} image resizes to {w_bar}x{h_bar} at {max_pixels} pixels")
    return h_bar, w_bar


def hpsv3_to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 4.45 ``Qwen2VLRewardModelBT`` keys -> :class:`HPSv3Model` keys (a transformers 5 layout
    ``model.language_model.*`` / ``model.visual.*`` passes unchanged; ``lm_head`` is dropped)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("lm_head."):
            continue
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
            key = "model.language_model." + key[len("model."):]
        out[key] = value
    return out


class HPSv3Model(nn.Module):
    """transformers ``Qwen2VLModel`` (vision tower + text decoder) + the ``ranknet`` head (output (mu, sigma))."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import Qwen2VLModel

        self.model = Qwen2VLModel(config)
        hidden = config.text_config.hidden_size
        self.rm_head = nn.Sequential(nn.Linear(hidden, 1024), nn.ReLU(), nn.Dropout(0.05), nn.Linear(1024, 16),
                                     nn.ReLU(), nn.Linear(16, 2))
        self.image_token_id = int(config.image_token_id)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                image_grid_thw: torch.Tensor, reward_token_id: int) -> torch.Tensor:
        """``[B, 2]`` float32 (mu, sigma) at each row's ``<|Reward|>`` token."""
        inner = self.model
        embeds = inner.get_input_embeddings()(input_ids)
        visual = inner.visual
        image_embeds = visual(pixel_values.to(visual.get_dtype()), grid_thw=image_grid_thw).pooler_output
        mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, image_embeds.to(embeds.device, embeds.dtype))
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1)
        hidden = inner.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                      position_ids=positions).last_hidden_state
        at = input_ids == reward_token_id
        counts = at.sum(-1)
        if not bool((counts == 1).all()):
            raise ValueError(f"hpsv3: every sequence needs exactly one {REWARD_TOKEN} token, got counts "
                             f"{counts.tolist()} (was the prompt truncated?)")
        return self.rm_head(hidden[at].float())


class HPSv3Scorer:
    """``score(images, prompts) -> Tensor[B]``: HPSv3's mu (about 0-15 for generated images; higher is better)."""

    needs_text = True

    def __init__(self, card: ScorerCard, model: HPSv3Model, processor: Any, reward_token_id: int, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.card = card
        self.name = card.name
        self.processor = processor
        self.reward_token_id = reward_token_id
        self.device = torch.device(device)
        self.dtype = dtype
        self.pixels = int(card.pixels or 256 * 28 * 28)
        model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        model.rm_head.to(torch.float32)  # create_model_and_processor l.90: the head stays float32
        self.model = model

    def _resize(self, image: Image.Image) -> Image.Image:
        height, width = smart_resize(image.height, image.width, FACTOR, self.pixels, self.pixels)
        return image.resize((width, height), Image.BICUBIC)

    def batch(self, images: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Processor inputs of one batch (the official ``prepare_batch``)."""
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ValueError(f"prompt {i} is empty; {self.name} scores image-text agreement")
        texts = [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": reward_prompt(p)}]}],
            tokenize=False, add_generation_prompt=True) for p in prompts]
        enc = self.processor(text=texts, images=[self._resize(im) for im in images], padding=True,
                             return_tensors="pt")
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}

    @torch.no_grad()
    def predict(self, images: Any, prompts: str | Sequence[str] | None = None, *, batch_size: int = 8) -> torch.Tensor:
        """``[B, 2]`` (mu, sigma), float32 on CPU (what ``HPSv3RewardInferencer.reward`` returns)."""
        pil = to_pil_list(images)
        texts = broadcast_prompts(prompts, len(pil))
        out = [self.model(**self.batch(pil[s:s + batch_size], texts[s:s + batch_size]),
                          reward_token_id=self.reward_token_id).float().cpu()
               for s in range(0, len(pil), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 2)

    def score(self, images: Any, prompts: str | Sequence[str] | None = None, *, raw: bool = False,
              batch_size: int = 8) -> torch.Tensor:
        """mu ``[B]`` (float32, CPU); ``raw`` is accepted for API symmetry (mu is the raw output)."""
        return self.predict(images, prompts, batch_size=batch_size)[:, 0]

    def _patches(self, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Differentiable Qwen2-VL image processing of float ``[B, 3, H, W]`` in [0, 1]: bicubic (antialiased)
        resize to the smart-resize size, the processor's mean/std, the processor's patch layout (each image
        repeated over the temporal patch, ``(t, h/m, w/m, m, m)`` patch order) -> ``[B * grid, C * t * p * p]``."""
        import torch.nn.functional as F

        ip = self.processor.image_processor
        patch, merge, temporal = int(ip.patch_size), int(ip.merge_size), int(ip.temporal_patch_size)
        x = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(ip.image_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(ip.image_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        gh, gw = height // patch, width // patch
        out = []
        for image in x:
            t = image.unsqueeze(0).expand(temporal, -1, -1, -1)
            t = t.reshape(1, temporal, t.shape[1], gh // merge, merge, patch, gw // merge, merge, patch)
            out.append(t.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gh * gw, -1))
        return torch.cat(out)

    def score_tensor(self, pixels: torch.Tensor, prompts: str | Sequence[str] | None = None) -> torch.Tensor:
        """Differentiable mu ``[B]`` (float32, scorer device) from float pixels ``[B, 3, H, W]`` in [0, 1] (torch
        resize and patching instead of PIL + the processor; the official ``differentiable=True`` path resizes
        bilinearly without antialiasing, here bicubic with antialiasing to stay close to ``score()``)."""
        if not torch.is_tensor(pixels) or not torch.is_floating_point(pixels) or pixels.ndim != 4:
            raise ValueError(f"score_tensor expects float pixels [B, 3, H, W] in [0, 1], got "
                             f"{getattr(pixels, 'shape', pixels)}")
        texts = broadcast_prompts(prompts, pixels.shape[0])
        height, width = smart_resize(pixels.shape[-2], pixels.shape[-1], FACTOR, self.pixels, self.pixels)
        blank = [Image.new("RGB", (width, height)) for _ in texts]  # text ids, masks and grids of that size
        enc = self.batch(blank, texts)
        patches = self._patches(pixels.to(self.device).float(), height, width)
        return self.model(enc["input_ids"], enc["attention_mask"], patches, enc["image_grid_thw"],
                          self.reward_token_id)[:, 0]

    def __repr__(self) -> str:
        return f"HPSv3Scorer(name={self.name!r}, device={self.device}, dtype={self.dtype}, pixels={self.pixels})"


def load_hpsv3(card: ScorerCard, checkpoint: str | None, *, device: str | torch.device,
               dtype: torch.dtype) -> HPSv3Scorer:
    """Config + processor from ``backbone_checkpoint`` (the Qwen2-VL base folder), weights from ``checkpoint``.

    The model is built without allocating random weights (``accelerate.init_empty_weights``) and the checkpoint
    tensors are assigned, so the 8B model needs its weights in memory once."""
    from accelerate import init_empty_weights
    from transformers import AutoProcessor, Qwen2VLConfig

    if card.backbone_checkpoint is None:
        raise FileNotFoundError(f"scorer {card.name!r} needs backbone_checkpoint=<Qwen2-VL-7B-Instruct folder> (its "
                                "config.json and processor files; the base weights are not read)")
    base = resolve_checkpoint(card.backbone_checkpoint, f"{card.name} base model folder (backbone_checkpoint)")
    path = resolve_checkpoint(checkpoint or card.default_checkpoint, f"{card.name} checkpoint")
    sd, source = read_folder_state_dict(path) if path.is_dir() else (read_state_dict(Path(path)), path)
    sd = hpsv3_to_hf_state_dict(sd)
    processor = AutoProcessor.from_pretrained(str(base), padding_side="right")
    processor.tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
    reward_id = processor.tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
    config = Qwen2VLConfig.from_pretrained(str(base))
    embed = sd.get("model.language_model.embed_tokens.weight")
    if embed is None:
        raise ValueError(f"checkpoint {source} has no token embeddings (model.embed_tokens.weight); "
                         "is it an HPSv3 checkpoint?")
    if reward_id >= embed.shape[0]:
        raise ValueError(f"{REWARD_TOKEN} has id {reward_id} but {source} embeds only {embed.shape[0]} tokens: the "
                         f"processor of {base} is not the base model HPSv3 was trained from")
    config.text_config.vocab_size = int(embed.shape[0])  # resize_token_embeddings(len(tokenizer)) (train.py l.83)
    with init_empty_weights():
        model = HPSv3Model(config)
    load_strict(model, sd, source, assign=True)
    return HPSv3Scorer(card, model, processor, reward_id, device=device, dtype=dtype)
