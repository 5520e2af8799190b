"""Video batches on a tiny LLaVA-OneVision whose llava-hf chat template renders typed content parts only.

Before the typed assistant turn, ``VideoRowCollator`` rendered ``{"role": "assistant", "content": "..."}``; this
template drops string content, so the collator failed with "cannot derive the completion suffix".
"""

import copy
import math

import pytest
import torch

from mmalign.lora_config import LoraConfig
from mmalign.mllm.forward import forward_logits
from mmalign.mllm.video.batch import (
    VideoRow,
    VideoRowCollator,
    completion_suffix,
    score_logits,
)
from mmalign.mllm.video.curriculum import StageAdapter, fresh_adapter
from mmalign.mllm.video.steps import make_rrpo_step
from mmalign.testing.tiny_video import write_tiny_video_llm


def test_prompt_and_completion_mask(tiny_llavaov, toy_clips):
    model, proc = tiny_llavaov
    tok = proc.tokenizer
    frames, q, _ = toy_clips["train"][0]  # 8 frames of 56 px
    response = "It moves left."
    resp_ids = tok(response, add_special_tokens=False)["input_ids"]
    phrase = [0] * (len(resp_ids) - 2) + [1, 1]
    batch = VideoRowCollator(proc)([(VideoRow(frames, q, response, phrase), VideoRow(frames[::-1].copy(), q, "up"))])
    ids, cm, attn = batch["input_ids"], batch["completion_mask"].bool(), batch["attention_mask"].bool()
    video_id = tok.convert_tokens_to_ids("<video>")
    assert (ids == video_id).sum(1).tolist() == [8 * 2 * 2 + 1] * 2  # 8 frames x pooled 2 x 2, + newline token
    assert not cm[ids == video_id].any()
    prompt = tok.decode(ids[0][attn[0] & ~cm[0]])
    assert prompt.startswith("<|im_start|>user <video>") and prompt.endswith(f"\n{q}<|im_end|><|im_start|>assistant\n")
    assert tok.decode(ids[0][cm[0]]) == response + "<|im_end|>"
    assert int(cm[0].sum()) == len(resp_ids) + 1 and int(cm[1].sum()) == len(tok("up")["input_ids"]) + 1
    assert batch["phrase_ids"][0][cm[0]].tolist() == phrase + [0]
    assert "mm_token_type_ids" not in batch and "video_grid_thw" not in batch
    assert tuple(batch["pixel_values_videos"].shape) == (2, 8, 3, 56, 56)
    # scores depend on completion logits only
    logits = forward_logits(model, batch).detach()
    base, scored = score_logits(logits, batch)
    assert torch.equal(scored.sum(1), cm.sum(1)) and torch.isfinite(base).all()
    keep = torch.zeros_like(cm)
    keep[:, :-1] = cm[:, 1:]  # logits at i score token i + 1
    noisy = logits.clone()
    noisy[~keep] += torch.randn_like(noisy[~keep]) * 5
    torch.testing.assert_close(score_logits(noisy, batch)[0], base)


def test_rows_with_different_frame_counts_are_a_clear_error(tiny_llavaov, toy_clips):
    _, proc = tiny_llavaov
    frames, q, _ = toy_clips["train"][0]
    with pytest.raises(ValueError, match="pixel_values_videos of different shapes"):
        VideoRowCollator(proc)([(VideoRow(frames, q, "left"), VideoRow(frames[:4], q, "left"))])


def test_rrpo_step_trains_the_language_model_lora(tiny_llavaov, toy_clips):
    model, proc = tiny_llavaov
    frames, q, _ = toy_clips["train"][1]
    tok = proc.tokenizer
    chosen, rejected = "It moves left.", "It moves up."
    n_c, n_r = (len(tok(t, add_special_tokens=False)["input_ids"]) for t in (chosen, rejected))
    batch = VideoRowCollator(proc)([(VideoRow(frames, q, chosen, [0] * (n_c - 2) + [1, 0]),
                                     VideoRow(frames, q, rejected, [0] * (n_r - 2) + [1, 0]))])
    policy = fresh_adapter(copy.deepcopy(model), StageAdapter(LoraConfig(rank=4, alpha=8), seed=0))
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("language_model" in n and "lora_" in n for n in trainable)
    loss, metrics = make_rrpo_step(beta=0.1, alpha=0.01)(policy, batch)
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
    assert float(metrics["kl/chosen"]) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    grads = [p.grad for n, p in policy.named_parameters() if "lora_B" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_saved_folder_reloads_with_the_same_template(tmp_path, tiny_llavaov):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = write_tiny_video_llm("llavaov", tmp_path / "ov")
    proc = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(proc).__name__ == "LlavaOnevisionProcessor" and type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert completion_suffix(proc) == completion_suffix(tiny_llavaov[1]) == "<|im_end|>"
    assert proc.chat_template == tiny_llavaov[1].chat_template
