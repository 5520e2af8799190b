"""HPSv3 parity: ``scorers.load_scorer("hpsv3")`` equals a transcription of the official ``hpsv3`` 1.0.0 package on
a tiny random-weight Qwen2-VL saved in the official ``HPSv3.safetensors`` layout.

Reference (PyPI ``hpsv3`` 1.0.0 wheel, pins transformers 4.45.2), transcribed on today's transformers:

* ``hpsv3/train.py`` ``create_model_and_processor`` l.29-116: ``AutoProcessor.from_pretrained(base,
  padding_side="right")``, ``add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})``,
  ``resize_token_embeddings(len(tokenizer))``, ``rm_head`` in float32;
* ``hpsv3/model/qwen2vl_trainer.py`` ``Qwen2VLRewardModelBT``: ranknet head l.99-106, ``forward`` l.148-247
  (4.45 ``self.model.embed_tokens`` = today's ``model.language_model.embed_tokens``; 4.45 ``self.visual(...)``
  returned the merged features = today's ``.pooler_output``; 4.45 ``self.model(inputs_embeds, position_ids=None)``
  = today's ``Qwen2VLTextModel`` with ``position_ids=None``: ``arange(L)`` in all three sections);
* ``hpsv3/inference.py`` ``prepare_batch`` l.97-137, ``reward`` l.139-147;
* ``hpsv3/dataset/utils.py`` ``smart_resize`` l.55-81 and ``fetch_image`` l.84-176 (PIL path);
* ``hpsv3/dataset/data_collator_qwen.py`` ``INSTRUCTION`` l.11-32, ``prompt_with_special_token`` l.38-42
  (pinned below by the SHA-256 of the wheel's strings).

The checkpoint layout is the 4.45 ``Qwen2VLRewardModelBT.state_dict()``: ``model.*`` (text decoder), ``visual.*``,
``lm_head.weight``, ``rm_head.{0,3,5}.*``.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import scorers
from mmalign.testing.tiny_scorers import save_tiny_hpsv3
from mmalign.testing.tiny_vlm import write_tiny_vlm
from scorers.hpsv3_prompt import INSTRUCTION, REWARD_SUFFIX

PIXELS = 2 * 28 * 28  # tiny: smart resize to ~1568 pixels (the tiny processor accepts 784..3136)
INSTRUCTION_SHA256 = "0393599dad45a971903d1d62a3acf9bad3ccccdafa7f40f680523419e1f68b7a"  # hpsv3 1.0.0 wheel
SUFFIX_SHA256 = "2471faca094ae5bd6fe17b71dce20c3d7583625545e235889f7e74e7eeb69d0a"


def _smart_resize(height, width, factor=28, min_pixels=PIXELS, max_pixels=PIXELS):
    """dataset/utils.py l.55-81."""
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
    return h_bar, w_bar


def _fetch_image(ele):
    """dataset/utils.py fetch_image l.84-176 for a PIL image."""
    image = ele["image"].convert("RGB")
    width, height = image.size
    h, w = _smart_resize(height, width, min_pixels=ele["min_pixels"], max_pixels=ele["max_pixels"])
    return image.resize((w, h), Image.BICUBIC)


class OfficialHPSv3:
    """``create_model_and_processor`` + ``Qwen2VLRewardModelBT`` + ``HPSv3RewardInferencer.reward``."""

    def __init__(self, base, seed=0):
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(str(base), padding_side="right")
        self.processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})
        self.special_token_ids = self.processor.tokenizer.convert_tokens_to_ids(["<|Reward|>"])
        self.model = Qwen2VLForConditionalGeneration.from_pretrained(str(base)).eval()
        self.model.resize_token_embeddings(len(self.processor.tokenizer))
        torch.manual_seed(seed)
        hidden = self.model.config.text_config.hidden_size
        self.rm_head = nn.Sequential(nn.Linear(hidden, 1024), nn.ReLU(), nn.Dropout(0.05), nn.Linear(1024, 16),
                                     nn.ReLU(), nn.Linear(16, 2)).float().eval()
        with torch.no_grad():  # a wider spread than the default init, so (mu, sigma) differ visibly between images
            for layer in (self.rm_head[0], self.rm_head[3], self.rm_head[5]):
                layer.weight.mul_(4.0)
        # the reward reads the embedding of <|Reward|>: give the resized row a value
        with torch.no_grad():
            self.model.get_input_embeddings().weight[self.special_token_ids[0]].normal_(0, 0.5)

    def official_state_dict(self):
        """The 4.45 key layout of Qwen2VLRewardModelBT (model.* text decoder, visual.*, lm_head, rm_head)."""
        sd = {}
        for key, value in self.model.state_dict().items():
            if key.startswith("model.language_model."):
                key = "model." + key[len("model.language_model."):]
            elif key.startswith("model.visual."):
                key = key[len("model."):]
            sd[key] = value.contiguous().clone()
        sd.update({f"rm_head.{k}": v.clone() for k, v in self.rm_head.state_dict().items()})
        return sd

    def prepare_batch(self, images, prompts):
        message_list = [[{"role": "user", "content": [
            {"type": "image", "image": image, "min_pixels": PIXELS, "max_pixels": PIXELS},
            {"type": "text", "text": INSTRUCTION.format(text_prompt=text) + REWARD_SUFFIX}]}]
            for text, image in zip(prompts, images)]
        image_inputs = [_fetch_image(m[0]["content"][0]) for m in message_list]
        return self.processor(
            text=self.processor.apply_chat_template(message_list, tokenize=False, add_generation_prompt=True),
            images=image_inputs, padding=True, return_tensors="pt", videos_kwargs={"do_rescale": True})

    @torch.no_grad()
    def reward(self, images, prompts):
        batch = self.prepare_batch(images, prompts)
        input_ids = batch["input_ids"]
        inner = self.model.model
        inputs_embeds = inner.language_model.embed_tokens(input_ids)
        pixel_values = batch["pixel_values"].type(inner.visual.get_dtype())
        image_embeds = inner.visual(pixel_values, grid_thw=batch["image_grid_thw"]).pooler_output
        image_mask = (input_ids == self.model.config.image_token_id).unsqueeze(-1).expand_as(inputs_embeds)
        inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_embeds.to(inputs_embeds.dtype))
        outputs = inner.language_model(input_ids=None, position_ids=None, attention_mask=batch["attention_mask"],
                                       inputs_embeds=inputs_embeds)
        logits = self.rm_head(outputs[0].float())
        special_token_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for special_token_id in self.special_token_ids:
            special_token_mask = special_token_mask | (input_ids == special_token_id)
        return logits[special_token_mask, ...].view(input_ids.shape[0], 1, -1).view(input_ids.shape[0], -1)


@pytest.fixture(scope="module")
def tiny_hpsv3(tmp_path_factory):
    out = tmp_path_factory.mktemp("hpsv3")
    base = write_tiny_vlm("qwen2vl", out / "qwen2vl-base", seed=2)
    official = OfficialHPSv3(base, seed=5)
    save_file(official.official_state_dict(), str(out / "HPSv3.safetensors"))
    kwargs = {"checkpoint": str(out / "HPSv3.safetensors"), "backbone_checkpoint": str(base), "pixels": PIXELS}
    return kwargs, official


def _images():
    rng = np.random.default_rng(11)
    sizes = [(48, 40), (37, 61), (64, 64), (50, 70)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


PROMPTS = ["a red circle", "a large blue square at the top of the picture", "a cat", "the green triangle"]


def test_prompt_text_is_the_official_one():
    assert hashlib.sha256(INSTRUCTION.encode()).hexdigest() == INSTRUCTION_SHA256
    assert hashlib.sha256(REWARD_SUFFIX.encode()).hexdigest() == SUFFIX_SHA256


def test_mu_equals_official_transcription(tiny_hpsv3):
    kwargs, official = tiny_hpsv3
    scorer = scorers.load_scorer("hpsv3", **kwargs)
    images = _images()
    ref = official.reward(images, PROMPTS)  # one padded batch, as HPSv3RewardInferencer.reward
    ours = scorer.predict(images, PROMPTS, batch_size=3)  # batches of 3 and 1: padding differs, result must not
    assert ref.shape == ours.shape == (4, 2)
    # the tiny decoder reads ~1500 instruction tokens, so images and prompts move mu by ~1e-3; the match is 100x
    # tighter
    assert ref[:, 0].max() - ref[:, 0].min() > 5e-4
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(scorer.score(images, PROMPTS), ref[:, 0], atol=2e-5, rtol=0)


def test_errors_name_the_problem(tiny_hpsv3, tmp_path):
    kwargs, _ = tiny_hpsv3
    with pytest.raises(FileNotFoundError, match="backbone_checkpoint"):
        scorers.load_scorer("hpsv3", checkpoint=kwargs["checkpoint"])
    from safetensors.torch import load_file

    sd = load_file(kwargs["checkpoint"])
    del sd["rm_head.3.weight"]
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match="missing key.*rm_head.3.weight"):
        scorers.load_scorer("hpsv3", **{**kwargs, "checkpoint": str(tmp_path / "broken.safetensors")})


def test_tiny_builder_loads(tmp_path):
    kwargs = save_tiny_hpsv3(tmp_path, seed=1)
    s = scorers.load_scorer("hpsv3", dtype="bfloat16", **kwargs)
    mu = s.score(_images()[:2], "a red circle")
    assert mu.shape == (2,) and mu.dtype == torch.float32 and torch.isfinite(mu).all()


def test_score_tensor_matches_the_processor_path_and_has_gradients(tiny_hpsv3):
    """At the smart-resize size no resampling happens, so the torch patching must equal the Qwen2-VL processor's
    (up to the uint8 rounding of the PIL path); gradients reach the pixels."""
    kwargs, _ = tiny_hpsv3
    scorer = scorers.load_scorer("hpsv3", **kwargs)
    g = torch.Generator().manual_seed(0)
    pixels = (torch.randint(0, 256, (2, 3, 28, 56), generator=g).float() / 255).requires_grad_(True)  # 1568 px
    from scorers.images import to_pil_list

    processor_patches = scorer.batch(to_pil_list(pixels.detach()), ["a", "b"])["pixel_values"]
    torch.testing.assert_close(scorer._patches(pixels.detach(), 28, 56), processor_patches, atol=1e-5, rtol=0)
    mu = scorer.score_tensor(pixels, ["a red circle", "a cat"])
    ref = scorer.score(list(pixels.detach()), ["a red circle", "a cat"])
    torch.testing.assert_close(mu.detach().cpu(), ref, atol=2e-5, rtol=0)
    mu.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
