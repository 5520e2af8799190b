"""Completion masks: only completion logits matter; prompt text and visual placeholders never do."""

from __future__ import annotations

import pytest
import torch

from mmalign.mllm.vlm.batch import VisionPreferenceCollator
from mmalign.mllm.vlm.config import VLMMethodConfig
from mmalign.mllm.vlm.objective import preference_step

FAMILIES = ["qwen2vl", "qwen25vl", "llava", "idefics3"]
COMPLETION_TEXT = {"llava": " a red square "}


def _image_token_id(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))


class _PerturbLogits:
    """Forward hook on the lm_head adding noise to the logits at positions selected by ``select(input_ids)``."""

    def __init__(self, select):
        self.select, self.ids, self.calls = select, None, 0

    def pre(self, module, args, kwargs):
        self.ids = kwargs.get("input_ids")

    def __call__(self, module, inputs, output):
        self.calls += 1
        where = self.select(self.ids)[:, -output.shape[1]:].to(output.dtype)[..., None]  # logits_to_keep window
        noise = torch.randn(output.shape, generator=torch.Generator().manual_seed(self.calls)) * 5.0
        return output + noise * where


@torch.no_grad()
def _loss_with(policy, batch, select):
    if select is None:
        return float(preference_step(policy, batch, VLMMethodConfig(), share_features=False)[0])
    hook = _PerturbLogits(select)
    h1 = policy.register_forward_pre_hook(hook.pre, with_kwargs=True)
    h2 = policy.get_base_model().get_output_embeddings().register_forward_hook(hook)
    try:
        return float(preference_step(policy, batch, VLMMethodConfig(), share_features=False)[0])
    finally:
        h1.remove()
        h2.remove()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("window", [True, False], ids=["completion-window", "full-logits"])
def test_only_completion_logits_change_the_loss(family, window, make_policy, vlm_rows, monkeypatch):
    if not window:  # score from full logits, so that the mask alone must exclude prompt / visual positions
        monkeypatch.setattr("mmalign.mllm.vlm.objective.completion_window", lambda text: 0)
    policy, processor = make_policy(family)
    batch = VisionPreferenceCollator(processor)(vlm_rows)
    pair = batch["pair"]
    ids, completion = pair["input_ids"], pair["completion_mask"]
    image_id = _image_token_id(processor)
    assert (ids == image_id).any(), "the prompt must contain visual placeholder tokens"
    assert not completion.bool()[ids == image_id].any(), "visual tokens are never completion tokens"
    # The completion tokens decode to exactly the completion text (+ the template's end-of-turn suffix; the
    # llava-hf LLaVA-1.5 template writes "ASSISTANT: " + text + " " and its generation prompt ends at ":").
    first = processor.tokenizer.decode(ids[0][completion[0].bool()])
    assert first == COMPLETION_TEXT.get(family, "a red square<|im_end|>\n")

    # logits at position i predict token i+1: "prompt logits" predict prompt tokens, "completion logits" predict
    # completion tokens. Shift the token masks left by one to select logit positions.
    def logits_predicting(mask_of_tokens):
        return lambda x: torch.cat([mask_of_tokens(x)[:, 1:], torch.zeros_like(x[:, :1], dtype=torch.bool)], 1)

    base = _loss_with(policy, batch, None)
    comp = lambda x: completion.bool()  # noqa: E731 - the dpo step only forwards the pair rows
    prompt_logits = logits_predicting(lambda x: ~comp(x))
    image_logits = lambda x: x == image_id  # noqa: E731 - logits *at* visual placeholder positions
    completion_logits = logits_predicting(comp)
    assert _loss_with(policy, batch, prompt_logits) == pytest.approx(base, abs=1e-6)
    assert _loss_with(policy, batch, image_logits) == pytest.approx(base, abs=1e-6)
    assert abs(_loss_with(policy, batch, completion_logits) - base) > 1e-3
