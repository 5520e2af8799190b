"""Parity with TRL's DPO loss, computed where TRL computes it: ``trl.DPOTrainer.compute_loss``.

A tiny random ``LlamaForCausalLM``, a word-level tokenizer built locally with ``tokenizers`` (``conftest.py``), a
tiny preference dataset. TRL gets a batch from its own collator and computes its loss (fused LM head, its own
masks); mmalign runs a plain forward of an identical policy/reference on the same ``input_ids``/``attention_mask``, scores with
``sequence_logps(logits, input_ids, completion_mask)`` and applies ``preference_loss``. Policy != reference (the
policy's weights are perturbed) so margins, rewards and gradients are non-trivial.
"""

import pytest
import torch

from mmalign.mllm.logprobs import sequence_logps
from mmalign.objectives import preference_loss

trl = pytest.importorskip("trl")

PROMPTS = ["the cat", "a dog ran", "the red mat is", "a big", "the dog is"]
CHOSEN = [" sat on the mat", " fast", " big", " blue cat ran", " red and big"]
REJECTED = [" ran", " slow on a mat", " small red", " dog", " was"]
BETA = 0.5


@pytest.fixture(scope="module")
def world(tiny_lm):
    from datasets import Dataset

    dataset = Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    return {**tiny_lm, "dataset": dataset}


def trl_loss_and_batch(world, loss_type, loss_weights=None, label_smoothing=0.0):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(world["out"]), report_to=[], loss_type=loss_type, loss_weights=loss_weights, beta=BETA,
        label_smoothing=label_smoothing, bf16=False, gradient_checkpointing=False, use_cpu=True,
        per_device_train_batch_size=len(PROMPTS),
    )
    policy = world["policy"]().train()
    trainer = DPOTrainer(
        model=policy, ref_model=world["reference"](), args=args, train_dataset=world["dataset"],
        processing_class=world["tokenizer"],
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PROMPTS))])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), grads, metrics, batch


def mmalign_loss(world, batch, kind, sft_weight=0.0, label_smoothing=0.0):
    policy = world["policy"]().train()
    reference = world["reference"]().eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logps, n_tokens = sequence_logps(policy(**inputs).logits, batch["input_ids"], batch["completion_mask"])
    with torch.no_grad():
        ref_logps, _ = sequence_logps(reference(**inputs).logits, batch["input_ids"], batch["completion_mask"])
    chosen, rejected = logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    chosen_len, rejected_len = n_tokens.chunk(2)
    losses, metrics = preference_loss(
        kind, chosen=chosen, rejected=rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected, beta=BETA,
        chosen_len=chosen_len, rejected_len=rejected_len, label_smoothing=label_smoothing,
        chosen_nll=-chosen, sft_weight=sft_weight,
    )
    loss = losses.mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    return loss.detach(), grads, metrics


CASES = [
    # id, TRL loss_type, TRL loss_weights, mmalign kind, sft_weight, label_smoothing
    ("sigmoid", ["sigmoid"], None, "sigmoid", 0.0, 0.0),
    ("hinge", ["hinge"], None, "hinge", 0.0, 0.0),
    ("ipo", ["ipo"], None, "ipo", 0.0, 0.0),
    ("robust", ["robust"], None, "robust", 0.0, 0.1),
    ("bco_pair", ["bco_pair"], None, "bco_pair", 0.0, 0.0),
    ("rpo_sigmoid_sft", ["sigmoid", "sft"], [1.0, 0.7], "sigmoid", 0.7, 0.0),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_loss_and_gradients_match_trl_dpo_trainer(world, case):
    _, loss_type, loss_weights, kind, sft_weight, eps = case
    trl_loss, trl_grads, trl_metrics, batch = trl_loss_and_batch(world, loss_type, loss_weights, eps)
    assert batch["completion_mask"][:, 0].sum() == 0 and (batch["attention_mask"] == 0).any()  # prompt + padding
    ours, our_grads, our_metrics = mmalign_loss(world, batch, kind, sft_weight, eps)

    assert abs(ours.item() - trl_loss.item()) < 1e-5, (ours.item(), trl_loss.item())
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert our_metrics[name].item() == pytest.approx(trl_metrics[name], abs=1e-5), name
    assert abs(trl_metrics["rewards/margins"]) > 1e-3  # policy != reference: the comparison is not at a fixed point
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
