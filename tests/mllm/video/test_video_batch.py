"""Video batches: completion masks exclude prompt and video tokens, phrase ids align, truncation never cuts visuals."""

import pytest
import torch

from mmalign.mllm.forward import forward_logits
from mmalign.mllm.video.batch import VideoRow, VideoRowCollator, encode_row, score_logits


def test_masks_phrases_and_pixels(tiny_qwen2vl, toy_clips):
    model, proc = tiny_qwen2vl
    frames, q, _ = toy_clips["train"][0]
    tok = proc.tokenizer
    resp_ids = tok("moves left", add_special_tokens=False)["input_ids"]
    phrase = [0] * (len(resp_ids) - 1) + [1]
    col = VideoRowCollator(proc)
    batch = col([(VideoRow(frames, q, "moves left", phrase), VideoRow(frames[::-1].copy(), q, "up"))])
    video_id = tok.convert_tokens_to_ids("<|video_pad|>")
    ids, cm = batch["input_ids"], batch["completion_mask"].bool()
    assert int((ids[0] == video_id).sum()) == 16  # 8 frames of 56 px: 4 x 4 x 4 patches / 2 x 2 merge
    assert not cm[ids == video_id].any()
    assert (batch["mm_token_type_ids"][ids == video_id] == 2).all()
    completion = ids[0][cm[0]].tolist()
    assert tok.decode(completion) == "moves left<|im_end|>\n"
    assert batch["phrase_ids"][0][cm[0]].tolist() == phrase + [0, 0]
    assert batch["pixel_values_videos"].shape[0] == 2 * 64 and batch["video_grid_thw"].tolist() == [[4, 4, 4]] * 2
    # padding rows: the shorter second row is right-padded and masked
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    # perturbing logits outside the completion leaves the scores unchanged; inside changes them
    logits = forward_logits(model, batch).detach()
    base, _ = score_logits(logits, batch)
    noisy = logits.clone()
    keep = torch.zeros_like(cm)
    keep[:, :-1] = cm[:, 1:]  # logits at i score token i + 1
    noisy[~keep] += torch.randn_like(noisy[~keep]) * 5
    torch.testing.assert_close(score_logits(noisy, batch)[0], base)
    noisy[keep] += 1.0 * torch.randn_like(noisy[keep])
    assert not torch.allclose(score_logits(noisy, batch)[0], base)


def test_truncation_keeps_visual_tokens(tiny_qwen2vl, toy_clips):
    _, proc = tiny_qwen2vl
    frames, q, _ = toy_clips["train"][0]
    enc = encode_row(proc, VideoRow(frames, q, "left right up down left", row_id="row-7"), max_length=None)
    n_prompt = int((enc["completion_mask"] == 0).sum())
    cut = encode_row(proc, VideoRow(frames, q, "left right up down left"), max_length=n_prompt + 2)
    assert len(cut["input_ids"]) == n_prompt + 2 and torch.equal(cut["input_ids"], enc["input_ids"][: n_prompt + 2])
    with pytest.raises(ValueError, match="row-7.*visual tokens are never truncated"):
        encode_row(proc, VideoRow(frames, q, "left", row_id="row-7"), max_length=n_prompt - 3)
    with pytest.raises(ValueError, match="empty response"):
        encode_row(proc, VideoRow(frames, q, "", row_id="row-8"))
