"""ImageReward parity: ``scorers.load_scorer("imagereward")`` (transformers BLIP classes + converter) equals a
transcription of the official package on random weights saved in the official ``ImageReward.pt`` layout.

Reference: PyPI ``image-reward`` 1.5 (wheel ``image_reward-1.5-py3-none-any.whl``; identical to THUDM/ImageReward @
c1392c6 except an ``isfile`` check), transcribed below without timm / fairscale:

* ``ImageReward/ImageReward.py``: ``_transform`` l.30-37 (Resize bicubic, CenterCrop, RGB, ToTensor, Normalize),
  ``MLP`` l.40-68, ``ImageReward.__init__`` l.72-81 (mean 0.16717362830052426, std 1.0333394966054072), ``score``
  l.103-137 (tokenise max_length 35, ViT, all-ones image mask, BERT cross-attention, ``[:, 0, :]``, MLP, standardise);
* ``ImageReward/models/BLIP/blip.py`` ``init_tokenizer`` l.16-21 ([DEC] bos, [ENC] additional);
* ``ImageReward/models/BLIP/vit.py``: ``Mlp`` l.19-37, ``Attention`` l.40-82, ``Block`` l.85-106,
  ``VisionTransformer.forward`` l.176-189 (timm ``PatchEmbed`` = Conv2d(patch, stride patch), flatten, transpose);
* ``ImageReward/models/BLIP/med.py``: ``BertEmbeddings`` l.44-86 (no token types), ``BertSelfAttention``
  l.89-217, ``BertSelfOutput`` l.220-231, ``BertLayer`` l.312-375 (cross-attention in ``mode='multimodal'``),
  ``get_extended_attention_mask`` l.601-660 (-10000 for padding), ``BertModel.forward`` l.662-801
  (``invert_attention_mask`` of transformers for the image mask).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import scorers
from mmalign.testing.tiny_scorers import TINY_IMAGEREWARD, save_tiny_imagereward

MEAN, STD = 0.16717362830052426, 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ------------------------------------------------------------------------------------------ vit.py transcription
class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, mlp_hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class OfficialViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.patch_embed = _PatchEmbed(cfg["patch_size"], d)
        n = (cfg["image_size"] // cfg["patch_size"]) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        self.blocks = nn.ModuleList([_Block(d, cfg["num_attention_heads"], cfg["intermediate_size"])
                                     for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[:, : x.size(1), :]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# ------------------------------------------------------------------------------------------ med.py transcription
class _Embeddings(nn.Module):
    def __init__(self, vocab, h, max_pos):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, h, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_pos, h)
        self.LayerNorm = nn.LayerNorm(h, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(max_pos).expand((1, -1)))

    def forward(self, input_ids):
        pos = self.position_ids[:, : input_ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(pos))


class _SelfAttention(nn.Module):
    def __init__(self, h, heads, kv_in):
        super().__init__()
        self.heads, self.head_size = heads, h // heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(kv_in, h), nn.Linear(kv_in, h)

    def _t(self, x):
        return x.view(*x.shape[:-1], self.heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, hidden, attention_mask, encoder_hidden_states=None, encoder_attention_mask=None):
        source = hidden if encoder_hidden_states is None else encoder_hidden_states
        mask = attention_mask if encoder_hidden_states is None else encoder_attention_mask
        q, k, v = self._t(self.query(hidden)), self._t(self.key(source)), self._t(self.value(source))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + mask
        ctx = torch.matmul(nn.Softmax(dim=-1)(scores), v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(*ctx.shape[:-2], self.heads * self.head_size)


class _DenseNorm(nn.Module):
    def __init__(self, n_in, h):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(n_in, h), nn.LayerNorm(h, eps=1e-12)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _Attn(nn.Module):
    def __init__(self, h, heads, kv_in):
        super().__init__()
        self.self = _SelfAttention(h, heads, kv_in)
        self.output = _DenseNorm(h, h)

    def forward(self, hidden, mask, enc=None, enc_mask=None):
        return self.output(self.self(hidden, mask, enc, enc_mask), hidden)


class _Intermediate(nn.Module):
    def __init__(self, h, inter):
        super().__init__()
        self.dense = nn.Linear(h, inter)

    def forward(self, x):
        return nn.functional.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, t):
        super().__init__()
        h, heads = t["hidden_size"], t["num_attention_heads"]
        self.attention = _Attn(h, heads, h)
        self.crossattention = _Attn(h, heads, t["encoder_hidden_size"])
        self.intermediate = _Intermediate(h, t["intermediate_size"])
        self.output = _DenseNorm(t["intermediate_size"], h)

    def forward(self, hidden, mask, enc, enc_mask):
        x = self.attention(hidden, mask)
        x = self.crossattention(x, mask, enc, enc_mask)  # mode == 'multimodal'
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.layer = nn.ModuleList([_Layer(t) for _ in range(t["num_hidden_layers"])])


class OfficialBert(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.embeddings = _Embeddings(t["vocab_size"], t["hidden_size"], t["max_position_embeddings"])
        self.encoder = _Encoder(t)

    def forward(self, input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask):
        ext = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0  # get_extended_attention_mask, encoder
        enc_ext = (1.0 - encoder_attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, ext, encoder_hidden_states, enc_ext)
        return x


class _Blip(nn.Module):
    def __init__(self, arch):
        super().__init__()
        self.visual_encoder = OfficialViT(arch["vision"])
        self.text_encoder = OfficialBert(arch["text"])
        self.vision_proj = nn.Linear(arch["vision"]["hidden_size"], 256)
        self.text_proj = nn.Linear(arch["text"]["hidden_size"], 256)


class _MLP(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


class OfficialImageReward(nn.Module):
    """``ImageReward.ImageReward`` (image-reward 1.5) with its ``score(prompt, image)``."""

    def __init__(self, arch, tokenizer_dir, image_size):
        super().__init__()
        from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
        from transformers import BertTokenizer

        self.blip = _Blip(arch)
        self.mlp = _MLP(arch["text"]["hidden_size"])
        tok = BertTokenizer.from_pretrained(str(tokenizer_dir))
        tok.add_special_tokens({"bos_token": "[DEC]"})
        tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self.tokenizer = tok
        self.preprocess = Compose([Resize(image_size, interpolation=InterpolationMode.BICUBIC), CenterCrop(image_size),
                                   lambda im: im.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])

    @torch.no_grad()
    def score(self, prompt, pil_image):
        text = self.tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        image = self.preprocess(pil_image).unsqueeze(0)
        image_embeds = self.blip.visual_encoder(image)
        image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
        out = self.blip.text_encoder(text.input_ids, text.attention_mask, image_embeds, image_atts)
        rewards = self.mlp(out[:, 0, :].float())
        return float((rewards - MEAN) / STD)


# ------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagereward")
    kwargs = save_tiny_imagereward(out, seed=3)
    arch = {"vision": {**TINY_IMAGEREWARD["vision"]}, "text": dict(kwargs["arch"]["text"])}
    official = OfficialImageReward(arch, kwargs["tokenizer"], TINY_IMAGEREWARD["vision"]["image_size"]).eval()
    official.load_state_dict(torch.load(kwargs["checkpoint"]), strict=True)  # the layout is exactly the official
    return kwargs, official


def _images():
    rng = np.random.default_rng(7)
    sizes = [(48, 40), (37, 61), (32, 32), (100, 45), (33, 35), (64, 64)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


PROMPTS = ["a photo of a cat", "a red car under the tree", "two dogs sitting on a mat", "a big house",
           "a painting of the sky over a small house and a tree with a blue car and two dogs and three cats in it "
           "and a red mat and a green tree and a big sky",  # longer than 35 tokens: truncated
           "portrait"]


def test_score_equals_official_transcription(tiny_ir):
    kwargs, official = tiny_ir
    scorer = scorers.load_scorer("imagereward", **kwargs)
    images = _images()
    ours = scorer.score(images, PROMPTS, batch_size=4)
    ref = torch.tensor([official.score(p, im) for p, im in zip(PROMPTS, images)])
    assert ours.shape == (6,) and ours.dtype == torch.float32
    assert ref.std() > 1e-3  # the tiny model discriminates, so the comparison is not vacuous
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    raw = scorer.score(images, PROMPTS, raw=True)
    torch.testing.assert_close(raw, ref * STD + MEAN, atol=1e-5, rtol=1e-5)


def test_score_tensor_is_differentiable_and_close_to_pil_path(tiny_ir):
    kwargs, _ = tiny_ir
    scorer = scorers.load_scorer("imagereward", **kwargs)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = scorer.score_tensor(pixels, "a photo of a cat")
    out.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    pil = scorer.score(list(pixels.detach()), "a photo of a cat")  # 32x32 needs no resize: only uint8 rounding
    torch.testing.assert_close(out.detach(), pil, atol=5e-3, rtol=0)


def test_bf16_weights_close_to_fp32(tiny_ir):
    kwargs, _ = tiny_ir
    images = _images()
    fp32 = scorers.load_scorer("imagereward", **kwargs).score(images, PROMPTS)
    bf16 = scorers.load_scorer("imagereward", dtype="bfloat16", **kwargs).score(images, PROMPTS)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0)


def test_bad_checkpoint_and_tokenizer_are_clear_errors(tiny_ir, tmp_path):
    kwargs, _ = tiny_ir
    sd = torch.load(kwargs["checkpoint"])
    del sd["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"]
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="missing key.*crossattention.self.key.weight"):
        scorers.load_scorer("imagereward", **{**kwargs, "checkpoint": str(tmp_path / "broken.pt")})
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        scorers.load_scorer("imagereward", **{**kwargs, "tokenizer": str(tmp_path / "no-such-tokenizer")})
    with pytest.raises(ValueError, match="autocast"):
        scorers.load_scorer("imagereward", autocast="bf16", **kwargs)


def test_weighted_reward_with_imagereward_and_hpsv2(tiny_ir, hps_checkpoint):
    """The reward object (scorers.reward) sums ImageReward with a CLIP scorer: total = sum_i w_i s_i."""
    from mmalign.testing.tiny_scorers import TINY_OPEN_CLIP
    from scorers.reward import load_reward

    kwargs, _ = tiny_ir
    reward = load_reward({"imagereward": 1.0, "hpsv2": 0.5}, checkpoints={"hpsv2": str(hps_checkpoint[0])},
                         scorer_args={"imagereward": kwargs, "hpsv2": {"arch": TINY_OPEN_CLIP}})
    images = _images()
    out = reward(images, PROMPTS)
    ir = scorers.load_scorer("imagereward", **kwargs).score(images, PROMPTS)
    hps = scorers.load_scorer("hpsv2", checkpoint=hps_checkpoint[0], arch=TINY_OPEN_CLIP).score(images, PROMPTS)
    torch.testing.assert_close(out.terms["imagereward"], ir)
    torch.testing.assert_close(out.total, ir + 0.5 * hps, atol=1e-5, rtol=1e-6)
