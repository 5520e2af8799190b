"""Vision features computed once per step give the same loss (and gradients) with fewer vision-tower calls."""

from __future__ import annotations

import pytest
import torch

from mmalign.mllm.forward import vision_tower
from mmalign.mllm.vlm.batch import VisionPreferenceCollator
from mmalign.mllm.vlm.config import VLMMethodConfig
from mmalign.mllm.vlm.objective import preference_step


def _run(policy, batch, method, share):
    calls = []
    handle = vision_tower(policy).register_forward_hook(lambda *a: calls.append(1))
    try:
        policy.zero_grad(set_to_none=True)
        loss, _ = preference_step(policy, batch, method, share_features=share)
        loss.backward()
    finally:
        handle.remove()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads, len(calls)


@pytest.mark.parametrize("family,method_name", [("qwen2vl", "dpo"), ("qwen25vl", "mdpo"), ("llava", "rdpo"),
                                                ("idefics3", "dpo")])
def test_shared_features_same_loss_fewer_calls(family, method_name, make_policy, vlm_rows):
    policy, processor = make_policy(family)
    extra = {"dpo": "none", "mdpo": "crop", "rdpo": "row"}[method_name]
    if method_name == "rdpo":
        for r in vlm_rows:
            r.extra_image = r.images[0].transpose(0)  # the "retrieved" image: a mirrored copy
    batch = VisionPreferenceCollator(processor, extra=extra, seed=3)(vlm_rows)
    method = VLMMethodConfig(name=method_name)
    loss_full, grads_full, calls_full = _run(policy, batch, method, share=False)
    loss_shared, grads_shared, calls_shared = _run(policy, batch, method, share=True)
    assert loss_shared == pytest.approx(loss_full, abs=1e-5)
    assert grads_full.keys() == grads_shared.keys() and grads_full
    for name in grads_full:
        torch.testing.assert_close(grads_shared[name], grads_full[name], atol=1e-5, rtol=1e-4)
    # Recomputing: policy and reference each encode every image (pair batch, and the extra batch for mDPO/rDPO).
    # Shared: one encoder call per distinct image batch.
    per_forward = 2 if method_name != "dpo" else 1
    assert calls_full == 2 * per_forward
    assert calls_shared == per_forward


def test_completion_window_scores_equal_full_logits(make_policy, vlm_rows):
    from mmalign.mllm.forward import completion_window, forward_logits, score_rows
    from mmalign.mllm.logprobs import sequence_logps

    policy, processor = make_policy("llava")
    batch = VisionPreferenceCollator(processor)(vlm_rows)
    pair = batch["pair"]
    start = completion_window(pair)
    assert start > 0  # the window really skips the prompt (with its visual tokens)
    with torch.no_grad():
        windowed, n = score_rows(policy, pair, batch["vision"], times=2)
        full_logits = forward_logits(policy, pair, batch["vision"], times=2)
        assert forward_logits(policy, pair, batch["vision"], times=2, keep_from=start).shape[1] == \
            full_logits.shape[1] - start
        full, n_full = sequence_logps(full_logits, pair["input_ids"], pair["completion_mask"])
    torch.testing.assert_close(windowed, full, atol=1e-5, rtol=1e-6)
    assert torch.equal(n, n_full)
