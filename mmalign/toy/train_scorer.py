"""Training of the toy scorer: a tiny open_clip ``CLIP``, HPS-style.

Stage 1, contrastive (CLIP): on renders with their captions, the symmetric InfoNCE loss of CLIP over the batch, with
targets spread uniformly over columns that hold the same caption, plus *hard negatives* for the image -> text
direction: for every image, one caption per attribute with that attribute changed (``perturb_caption``).
Renders are lightly blurred and noised so the scorer transfers to generated samples.

Stage 2, preference fine-tuning (HPSv2's objective, spec scorers.md §2 "Training"): on judge-labelled pairs of
base-pipeline samples for the *training* captions, cross-entropy over the two images' ``logit_scale * cos``
(``logit_scale`` clamped to log 100). Accuracy is then measured on pairs for the held-out captions.

Inputs are preprocessed as the ``toy`` scorer card does at inference (64x64 images need no resize or pad;
OpenAI mean/std normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .captions import ATTRIBUTES, perturb_caption

OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
MAX_LOGIT_SCALE = math.log(100.0)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, 64, 64, 3)`` -> normalised float ``(N, 3, 64, 64)`` (the card's preprocessing at 64 px)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - OPENAI_MEAN) / OPENAI_STD


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random Gaussian blur (sigma in [0, 1.2]) and pixel noise (std up to 0.1 in normalised units)."""
    n = x.shape[0]
    sigma = torch.rand(n, generator=g) * 1.2
    k = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(k[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (n, 5)
    out = []
    for i in range(n):  # separable blur per image (n is a training batch; cheap)
        w = kernel[i]
        xi = F.conv2d(F.pad(x[i:i + 1], (2, 2, 0, 0), mode="replicate"), w.view(1, 1, 1, 5).expand(3, 1, 1, 5), groups=3)
        xi = F.conv2d(F.pad(xi, (0, 0, 2, 2), mode="replicate"), w.view(1, 1, 5, 1).expand(3, 1, 5, 1), groups=3)
        out.append(xi)
    x = torch.cat(out)
    return x + torch.randn(x.shape, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) * 0.1)


def _tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts)


def train_contrastive(model, tokenizer, captions: list[str], images: np.ndarray, *, steps: int, batch_size: int,
                      lr: float, seed: int, log: Callable[[str], None] = print) -> dict[str, float]:
    """Stage 1 (see module docstring). ``tokenizer``: open_clip tokenizer (texts -> ids [B, 77])."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = preprocess(images)
    vocabulary = sorted(set(captions))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    ema = None
    for step in (bar := tqdm(range(steps), desc="toy scorer (contrastive)", mininterval=5)):
        idx = torch.randint(len(data), (batch_size,), generator=g)
        caps = [captions[i] for i in idx.tolist()]
        hard = [perturb_caption(c, a, rng) for c in caps for a in ATTRIBUTES]
        texts = list(dict.fromkeys(caps))  # unique captions of the batch, in order
        col = {c: j for j, c in enumerate(texts)}
        img = F.normalize(model.encode_image(_augment(data[idx], g)), dim=-1)
        txt = F.normalize(model.encode_text(_tokenize(tokenizer, texts + hard)), dim=-1)
        scale = model.logit_scale.exp()
        n_txt = len(texts)
        pos = torch.tensor([col[c] for c in caps])
        # image -> text: own caption among the batch's unique captions and this image's 4 hard negatives
        logits_all = scale * img @ txt.T  # (B, n_txt + 4B)
        own_hard = logits_all[:, n_txt:].view(batch_size, batch_size, len(ATTRIBUTES))[
            torch.arange(batch_size), torch.arange(batch_size)]
        i2t = torch.cat([logits_all[:, :n_txt], own_hard], dim=1)
        loss_i2t = F.cross_entropy(i2t, pos)
        # text -> image: soft targets over the images holding that caption
        t2i = logits_all[:, :n_txt].T  # (n_txt, B)
        target = (pos[None, :] == torch.arange(n_txt)[:, None]).float()
        loss_t2i = -(target / target.sum(1, keepdim=True) * t2i.log_softmax(dim=1)).sum(1).mean()
        loss = (loss_i2t + loss_t2i) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    log(f"scorer contrastive: {steps} steps x {batch_size} ({len(vocabulary)} captions), loss (EMA) {ema:.3f}")
    return {"scorer_contrastive_loss": float(ema)}


def train_preference(model, tokenizer, captions: list[str], images_0: np.ndarray, images_1: np.ndarray,
                     label_0: np.ndarray, *, steps: int, batch_size: int, lr: float, seed: int,
                     log: Callable[[str], None] = print) -> dict[str, float]:
    """Stage 2: HPS / PickScore pair loss ``CE(softmax(logit_scale * [cos_0, cos_1]), [label_0, 1 - label_0])``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x0, x1 = preprocess(images_0), preprocess(images_1)
    y = torch.as_tensor(label_0, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    ema, acc = None, None
    for step in (bar := tqdm(range(steps), desc="toy scorer (pairs)", mininterval=5)):
        idx = torch.randint(len(y), (batch_size,), generator=g)
        img = F.normalize(model.encode_image(_augment(torch.cat([x0[idx], x1[idx]]), g)), dim=-1)
        txt = F.normalize(model.encode_text(_tokenize(tokenizer, [captions[i] for i in idx.tolist()])), dim=-1)
        cos = torch.stack([(img[:batch_size] * txt).sum(-1), (img[batch_size:] * txt).sum(-1)], dim=1)
        logits = model.logit_scale.exp() * cos
        target = torch.stack([y[idx], 1 - y[idx]], dim=1)
        loss = -(target * logits.log_softmax(dim=1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            hit = ((logits[:, 0] > logits[:, 1]).float() == y[idx]).float().mean().item()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        acc = hit if acc is None else 0.95 * acc + 0.05 * hit
        if step % 50 == 0:
            bar.set_postfix(loss=f"{ema:.3f}", acc=f"{acc:.2f}")
    model.eval()
    log(f"scorer preference: {steps} steps x {batch_size} pairs, loss (EMA) {ema:.3f}, train acc (EMA) {acc:.3f}")
    return {"scorer_pair_loss": float(ema), "scorer_pair_train_acc": float(acc)}


def save_hps_checkpoint(model, path) -> None:
    """Save in the official HPSv2 layout: ``torch.save({'state_dict': fp16 open_clip CLIP keys}, path)``."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"epoch": 0, "name": "toy", "state_dict": sd}, tmp)
    tmp.replace(path)
