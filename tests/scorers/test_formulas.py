"""Scores equal an independent computation of each official formula and preprocessing on the same weights."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

import scorers
from mmalign.testing.tiny_scorers import TINY_HF_CLIP, TINY_OPEN_CLIP, tiny_hf_clip

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["a red circle on the left", "a photo of a cat", "an astronaut riding a horse", "x", "a", "b", "c", "d"]


def _openai_transform(size: int):
    """OpenAI clip's preprocessing: torchvision Resize(bicubic) + CenterCrop on PIL, ToTensor, Normalize."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(MEAN, STD)])


def test_hpsv2_matches_open_clip_reference(hps_checkpoint, images):
    """HPSv2: upstream open_clip 'longest' preprocessing + encode_image/encode_text; 100 * cos; raw = cos."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    path, model = hps_checkpoint
    # resize_on=pil: the upstream open_clip PIL path (the HPSv2 cards default to the official tensor transform,
    # tested against its transcription in test_hps_official_preprocess.py)
    s = scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP, resize_on="pil")
    preprocess = image_transform_v2(PreprocessCfg(size=(32, 32), resize_mode="longest", mean=MEAN, std=STD,
                                                  interpolation="bicubic", fill_color=0), is_train=False)
    with torch.no_grad():
        px = torch.stack([preprocess(im.convert("RGB")) for im in images])
        img = F.normalize(model.encode_image(px), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.tokenize(PROMPTS)), dim=-1)
    cos = (img * txt).sum(-1)
    torch.testing.assert_close(s.score(images, PROMPTS, raw=True), cos, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.score(images, PROMPTS), 100 * cos, atol=1e-3, rtol=0)
    assert cos.std() > 1e-3  # the images really score differently
    # hpsv2.1 is the same machinery with another checkpoint
    s21 = scorers.load_scorer("hpsv2.1", checkpoint=path, arch=TINY_OPEN_CLIP, resize_on="pil")
    torch.testing.assert_close(s21.score(images, PROMPTS), 100 * cos, atol=1e-3, rtol=0)
    # probs: softmax(logit_scale.exp() * cos) over the candidates of one prompt
    cos0 = (img * txt[0]).sum(-1)
    torch.testing.assert_close(s.probs(images, PROMPTS[0]), torch.softmax(model.logit_scale.exp() * cos0, 0),
                               atol=1e-5, rtol=0)


def test_pickscore_matches_hf_processor_reference(hf_clip_folder, clip_tokenizer_dir, images):
    """PickScore: CLIPImageProcessor (PIL backend) + CLIPTokenizer(padding=True); logit_scale.exp() * cos."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder, model = hf_clip_folder
    s = scorers.load_scorer("pickscore", checkpoint=folder)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
    with torch.no_grad():
        px = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        tok = tokenizer(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = F.normalize(model.get_image_features(pixel_values=px).pooler_output, dim=-1)
        txt = F.normalize(model.get_text_features(**tok).pooler_output, dim=-1)
    cos = (img * txt).sum(-1)
    expected = model.logit_scale.exp() * cos
    torch.testing.assert_close(s.score(images, PROMPTS), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(s.score(images, PROMPTS, raw=True), cos, atol=1e-6, rtol=0)
    probs = s.probs(images[:4], PROMPTS[0])
    cos0 = (img[:4] * txt[0]).sum(-1)
    torch.testing.assert_close(probs, torch.softmax(model.logit_scale.exp() * cos0, 0), atol=1e-5, rtol=0)


def test_clipscore_matches_hessel_reference(tmp_path, images):
    """CLIPScore (Hessel): OpenAI preprocessing, prefix "A photo depicts ", 2.5 * max(cos, 0) per sample."""
    seen = []
    for sign in (1.0, -1.0):  # a checkpoint and its text-negated twin: both signs of cos get exercised
        model = tiny_hf_clip(seed=5)
        with torch.no_grad():
            model.text_projection.weight.mul_(sign)
        model.save_pretrained(tmp_path / str(sign))
        s = scorers.load_scorer("clipscore", checkpoint=tmp_path / str(sign))
        tf = _openai_transform(32)

        with torch.no_grad():
            px = torch.stack([tf(im.convert("RGB")) for im in images])
            img = F.normalize(model.get_image_features(pixel_values=px).pooler_output, dim=-1)
            ids = open_clip.tokenize(["A photo depicts " + p for p in PROMPTS])
            txt = F.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1)
        cos = (img * txt).sum(-1)
        expected = 2.5 * cos.clamp(min=0)
        got = s.score(images, PROMPTS)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(s.score(images, PROMPTS, raw=True), cos, atol=1e-6, rtol=0)
        seen.append(got)
    both = torch.cat(seen)
    assert (both == 0).any() and (both > 0).any()  # the per-sample clamp was exercised


def test_aesthetic_matches_laion_reference(hf_clip_folder, aesthetic_checkpoint, images):
    """Aesthetic: MLP(normalize(CLIP image embedding)) with OpenAI preprocessing; prompts are ignored."""
    folder, model = hf_clip_folder
    head_path, head = aesthetic_checkpoint
    s = scorers.load_scorer("aesthetic", checkpoint=head_path, backbone_checkpoint=str(folder))
    tf = _openai_transform(32)
    with torch.no_grad():
        px = torch.stack([tf(im.convert("RGB")) for im in images])
        emb = model.get_image_features(pixel_values=px).pooler_output
        expected = head(emb / emb.norm(dim=-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(s.score(images), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.score(images, "ignored"), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no preference probabilities"):
        s.probs(images, "x")


def test_embeddings_and_batching(hps_checkpoint, images):
    """image/text embeddings are unit vectors; batch size does not change scores; a string is broadcast."""
    path, _ = hps_checkpoint
    s = scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP)
    e_img, e_txt = s.image_embeddings(images), s.text_embeddings(PROMPTS)
    assert e_img.shape == (8, 32) and e_txt.shape == (8, 32)
    torch.testing.assert_close(e_img.norm(dim=-1), torch.ones(8))
    torch.testing.assert_close(s.score(images, PROMPTS, raw=True), (e_img * e_txt).sum(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.score(images, PROMPTS, batch_size=3), s.score(images, PROMPTS, batch_size=8))
    torch.testing.assert_close(s.score(images, "a cat"), s.score(images, ["a cat"] * 8))
    from scorers.preprocess import pil_to_pixels

    assert torch.equal(pil_to_pixels(images, s.card, workers=4), pil_to_pixels(images, s.card, workers=1))
    out = s.score(images, PROMPTS)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (8,)


def test_autocast_bf16_close_to_fp32(hps_checkpoint, images):
    path, _ = hps_checkpoint
    ref = scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP).score(images, PROMPTS, raw=True)
    amp = scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP, autocast="bf16")
    got = amp.score(images, PROMPTS, raw=True)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 3e-2  # bf16 has ~3 significant digits
    bf16 = scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP, dtype="bf16")
    assert (bf16.score(images, PROMPTS, raw=True) - ref).abs().max() < 5e-2
    assert bf16.logit_scale == pytest.approx(50.0, rel=1e-3)  # fp16 checkpoint value, not a bf16-rounded exp


def test_uint8_array_and_float_tensor_inputs_match_pil(hps_checkpoint, images):
    import numpy as np

    path, _ = hps_checkpoint
    s = scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP)
    img = images[0]
    arr = np.array(img)
    ten = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    ref = s.score([img], "a cat")
    torch.testing.assert_close(s.score([arr], "a cat"), ref)
    torch.testing.assert_close(s.score(ten, "a cat"), ref)
    torch.testing.assert_close(s.score(ten[None], "a cat"), ref)
    assert isinstance(Image.fromarray(arr), Image.Image)
    _ = TINY_HF_CLIP
