"""Parity with TRL's KTO loss inside ``trl.KTOTrainer.compute_loss`` (z0 from the collator's mismatched KL rows).

TRL's collator builds, for every example, a KL sequence with the completion of the previous example (cycled by one
in the batch). mmalign scores the same ``input_ids`` and ``KL_input_ids`` with ``sequence_logps`` and applies
``kto_loss(..., kl_policy=..., kl_reference=...)``; losses, z0 (``kl``) and policy gradients must agree.
"""

import pytest
import torch

from mmalign.mllm.logprobs import sequence_logps
from mmalign.objectives import kto_loss

trl = pytest.importorskip("trl")

PROMPTS = ["the cat", "a dog ran", "the red mat is", "a big", "the dog is", "a cat"]
COMPLETIONS = [" sat on the mat", " fast", " small red", " blue cat ran", " was", " is big and red"]
LABELS = [True, False, False, True, True, False]
BETA = 0.5


def test_kto_loss_matches_trl_kto_trainer(tiny_lm):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    dataset = Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS, "label": LABELS})
    args = KTOConfig(
        output_dir=str(tiny_lm["out"]), report_to=[], beta=BETA, desirable_weight=1.0, undesirable_weight=1.2,
        bf16=False, gradient_checkpointing=False, use_cpu=True, per_device_train_batch_size=len(PROMPTS),
    )
    # roles swapped w.r.t. the DPO parity test: with the perturbed model as reference, the mismatched-pair
    # log-ratio is positive on average, so z0 is not clamped to 0 and enters the loss
    policy_fn, reference_fn = tiny_lm["reference"], tiny_lm["policy"]
    trainer = KTOTrainer(
        model=policy_fn().train(), ref_model=reference_fn(), args=args, train_dataset=dataset,
        processing_class=tiny_lm["tokenizer"],
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PROMPTS))])
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    trl_kl = trainer._metrics["train"]["kl"][-1]

    policy, reference = policy_fn().train(), reference_fn().eval()

    def scores(model, prefix):
        ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"]
        logits = model(input_ids=ids, attention_mask=mask).logits
        return sequence_logps(logits, ids, batch[f"{prefix}completion_mask"])[0]

    with torch.no_grad():
        ref_scores, kl_policy, kl_reference = scores(reference, ""), scores(policy, "KL_"), scores(reference, "KL_")
    losses, metrics = kto_loss(
        scores(policy, ""), ref_scores, batch["label"], beta=BETA, kl_policy=kl_policy, kl_reference=kl_reference,
        lambda_d=1.0, lambda_u=1.2,
    )
    ours = losses.mean()
    ours.backward()

    assert abs(ours.item() - trl_loss.item()) < 1e-5, (ours.item(), trl_loss.item())
    assert metrics["kl"].item() == pytest.approx(trl_kl, abs=1e-6)
    assert trl_kl > 0.5  # the mismatched-pair estimate is active (not clamped to 0) for this batch
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert metrics[name].item() == pytest.approx(trainer._metrics["train"][name][-1], abs=1e-5), name
    for (name, ours_p), theirs_p in zip(policy.named_parameters(), trainer.model.parameters()):
        torch.testing.assert_close(ours_p.grad, theirs_p.grad, rtol=1e-4, atol=1e-6, msg=name)
