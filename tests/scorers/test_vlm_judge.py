"""VLM judge: the batched scores equal a hand computation from the tiny model's logits, one image and one answer at
a time (context = chat template + generation prompt + the template's answer lead; answer ids appended; log-softmax
of the logits at the positions that predict each answer token)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import scorers
from mmalign.testing.tiny_vlm import write_tiny_vlm

LEAD = {"qwen2vl": "", "llava": " "}  # LLaVA-1.5 renders "ASSISTANT: <answer> "; Qwen-VL "assistant\n<answer>"


@pytest.fixture(scope="module", params=["qwen2vl", "llava"])
def judge_folder(request, tmp_path_factory):
    return request.param, write_tiny_vlm(request.param, tmp_path_factory.mktemp(request.param) / "m", seed=3)


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]


PROMPTS = ["a red circle", "a large blue square at the top", "a cat"]


@torch.no_grad()
def hand_logp(model, processor, lead, question, images, answer):
    """log p(answer | one user turn [images..., question]) from one unbatched forward."""
    messages = [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + lead
    enc = processor(text=[text], images=images, return_tensors="pt")
    answer_ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    n = enc["input_ids"].shape[1]
    inputs = dict(enc)
    inputs["input_ids"] = torch.cat([enc["input_ids"], torch.tensor([answer_ids])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in enc:
        inputs["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"],
                                                 torch.zeros(1, len(answer_ids), dtype=enc["mm_token_type_ids"].dtype)], 1)
    logp = torch.log_softmax(model(**inputs).logits[0].float(), dim=-1)
    return float(sum(logp[n - 1 + j, t] for j, t in enumerate(answer_ids)))


def test_yes_probability_equals_hand_computation(judge_folder):
    family, folder = judge_folder
    s = scorers.load_scorer("vlm-judge", checkpoint=str(folder))
    images = _images()
    ours = s.score(images, PROMPTS, batch_size=2)  # padded batches of 2 and 1
    raw = s.score(images, PROMPTS, raw=True, batch_size=3)
    expected, expected_raw = [], []
    for im, p in zip(images, PROMPTS):
        q = s.card.question.format(prompt=p)
        yes, no = (np.exp(hand_logp(s.model, s.processor, LEAD[family], q, [im], a)) for a in ("Yes", "No"))
        expected.append(yes / (yes + no))
        expected_raw.append(yes)
    assert ours.shape == (3,) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw, torch.tensor(expected_raw, dtype=torch.float32), atol=1e-6, rtol=1e-4)
    assert 0 < float(raw.max()) < 1 and float(ours.std()) > 0


def test_scale_expectation_equals_hand_computation(judge_folder):
    family, folder = judge_folder
    s = scorers.load_scorer("vlm-judge-scale", checkpoint=str(folder))
    assert len(s.answer_ids(["10"])[0]) == 2  # the tiny tokenizer splits "10": the multi-token path is exercised
    images = _images(2, seed=1)
    ours = s.score(images, PROMPTS[:2])
    expected = []
    for im, p in zip(images, PROMPTS[:2]):
        q = s.card.question.format(prompt=p)
        probs = np.exp([hand_logp(s.model, s.processor, LEAD[family], q, [im], str(k)) for k in range(1, 11)])
        expected.append(float((np.arange(1, 11) * probs).sum() / probs.sum()))
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_pairwise_averages_both_orders(judge_folder):
    family, folder = judge_folder
    s = scorers.load_scorer("vlm-judge", checkpoint=str(folder))
    a, b = _images(2, seed=2), _images(2, seed=3)
    ours = s.compare(a, b, PROMPTS[:2])
    expected = []
    for x, y, p in zip(a, b, PROMPTS[:2]):
        q = s.card.pair_question.format(prompt=p)
        ab = np.exp([hand_logp(s.model, s.processor, LEAD[family], q, [x, y], ans) for ans in ("1", "2")])
        ba = np.exp([hand_logp(s.model, s.processor, LEAD[family], q, [y, x], ans) for ans in ("1", "2")])
        expected.append((ab[0] / ab.sum() + ba[1] / ba.sum()) / 2)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours + s.compare(b, a, PROMPTS[:2]), torch.ones(2), atol=1e-6, rtol=0)


def test_card_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint=<image-text-to-text"):
        scorers.load_scorer("vlm-judge")
    folder = write_tiny_vlm("qwen2vl", tmp_path / "m")
    with pytest.raises(ValueError, match=r"\{prompt\}"):
        scorers.load_scorer("vlm-judge", checkpoint=str(folder), question="Is this good?")
    with pytest.raises(ValueError, match="answer_values"):
        scorers.load_scorer("vlm-judge", checkpoint=str(folder), answer_values=[1.0, 2.0, 3.0])
