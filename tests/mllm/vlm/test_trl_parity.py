"""Our VLM DPO loss equals TRL DPOTrainer's computed loss on the same rows (tiny random Qwen2-VL and LLaVA)."""

from __future__ import annotations

import copy

import pytest
import torch

trl = pytest.importorskip("trl")

from mmalign.mllm.vlm.batch import VisionPreferenceCollator  # noqa: E402
from mmalign.mllm.vlm.config import VLMMethodConfig  # noqa: E402
from mmalign.mllm.vlm.objective import preference_step  # noqa: E402


def _trl_rows(rows):
    return [{"images": list(r.images), "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows]


def _trainer(model, processor, rows, tmp_path, *, ref_model=None, loss_type="sigmoid"):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", bf16=False, gradient_checkpointing=False,
                     per_device_train_batch_size=2, max_length=None, use_cpu=True, beta=0.1, loss_type=[loss_type])
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(_trl_rows(rows)),
                      processing_class=processor)


@pytest.mark.parametrize("family,share", [("qwen2vl", False), ("llava", True)])
def test_dpo_loss_equals_trl_with_adapter_off_reference(family, share, make_policy, vlm_rows, tmp_path):
    policy, processor = make_policy(family)
    trainer = _trainer(policy, processor, vlm_rows, tmp_path)
    assert trainer.ref_model is None  # TRL: pretrained adapter → frozen "ref" copy of it, or adapters off
    trl_batch = trainer.data_collator(_trl_rows(vlm_rows))
    ours = VisionPreferenceCollator(processor)(vlm_rows)
    # Same tensors: TRL's collator layout is ours (flushed left, completion mask on completions only).
    assert torch.equal(ours["pair"]["input_ids"], trl_batch["input_ids"].masked_fill(trl_batch["attention_mask"] == 0,
                                                                                    processor.tokenizer.pad_token_id))
    assert torch.equal(ours["pair"]["completion_mask"], trl_batch["completion_mask"])
    if "mm_token_type_ids" in trl_batch:
        assert torch.equal(ours["pair"]["mm_token_type_ids"], trl_batch["mm_token_type_ids"])

    # TRL adds a "ref" adapter = copy of the pretrained adapter; make the reference the base model as ours is.
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in unwrapped.peft_config:
        unwrapped.delete_adapter("ref")
        unwrapped.set_adapter("default")
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, trl_batch)
        loss, metrics = preference_step(trainer.model, ours, VLMMethodConfig(beta=0.1), share_features=share)
    assert abs(float(trl_loss) - 0.6931) > 1e-3  # policy != reference, so the check is not trivial
    assert float(loss) == pytest.approx(float(trl_loss), abs=1e-5)


@pytest.mark.parametrize("family,loss_type", [("llava", "sigmoid"), ("qwen2vl", "ipo")])
def test_loss_equals_trl_with_frozen_reference_copy(family, loss_type, tiny_vlm, vlm_rows, tmp_path):
    from mmalign.mllm.model import load_vlm
    from mmalign.mllm.model_config import VLMModelConfig

    model, processor = load_vlm(VLMModelConfig(pretrained=str(tiny_vlm(family)), attn_implementation="eager"))
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():  # full fine-tuning after a few steps: policy drifted from the reference
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    trainer = _trainer(model, processor, vlm_rows, tmp_path, ref_model=ref, loss_type=loss_type)
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, trainer.data_collator(_trl_rows(vlm_rows)))
        batch = VisionPreferenceCollator(processor)(vlm_rows)
        loss, _ = preference_step(trainer.model, batch, VLMMethodConfig(loss_type=loss_type, beta=0.1),
                                  ref_model=trainer.ref_model, share_features=False)
    assert float(loss) == pytest.approx(float(trl_loss), abs=1e-5)
