"""rDPO's code path and MM-RLHF's dynamic beta against transcriptions of their official code on the same inputs.

* rDPO: ``taco-group/Re-Align`` @ a82ce56 — ``rDPOtrainer.py`` ``dpo_loss`` (l.200-250: DPO + image-conditional
  term, same beta) with the chosen row scored by ``dpo_trainer.py`` ``_get_batch_logps`` (l.467-498) and the
  rejected / retrieved-image rows by ``_get_noisy_batch_logps`` (l.500-544; rDPOtrainer l.147, l.191).
* MM-DPO: ``Kwai-YuanQi/MM-RLHF`` @ 7c8af1d — ``trl/trainer/dpo_trainer.py`` ``dpo_loss`` (l.736-822), sigmoid
  branch with ``label_smoothing = 1.0`` (the fork's standard DPO), ``implicit_beta`` on (the released default) or
  off (the ``ls_factor`` data path).
* VDPO / PaMi-VDPO: no parity test — no official code is public (spec vlm_video_objectives.md §7: not found by
  repository, code or issue search; the two "VDPO" repositories in the index are unrelated projects).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.mllm.forward import forward_logits
from mmalign.mllm.vlm.batch import VisionPreferenceCollator
from mmalign.mllm.vlm.config import VLMMethodConfig
from mmalign.mllm.vlm.methods import RdpoOptions
from mmalign.mllm.vlm.objective import preference_step
from mmalign.objectives.dynamic_beta import per_sample_beta

LABEL_PAD = -100


def _get_batch_logps(logits, labels):
    """Re-Align dpo_trainer.py l.467-498 (decoder-only, summed)."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != LABEL_PAD
    labels[labels == LABEL_PAD] = 0
    per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    return (per_token_logps * loss_mask).sum(-1)


def _get_noisy_batch_logps(logits, chosen_logits, labels):
    """Re-Align dpo_trainer.py l.500-544: the top-1 token's log-prob, or the top-2 one where top-1 is the label."""
    new_chosen_logits = chosen_logits[:, :-1, :]
    logits = logits[:, :-1, :]
    labels = labels[:, 1:].clone()
    loss_mask = labels != LABEL_PAD
    _, top_two_indices = torch.topk(logits, 2, dim=2)
    overlap_mask = top_two_indices[:, :, 0] == labels
    chosen_indices = torch.where(overlap_mask, top_two_indices[:, :, 1], top_two_indices[:, :, 0])
    per_token_logps = torch.gather(new_chosen_logits.log_softmax(-1), dim=2, index=chosen_indices.unsqueeze(2)).squeeze(2)
    return (per_token_logps * loss_mask).sum(-1)


def _rdpo_dpo_loss(beta, pc, pr, pi, rc, rr, ri):
    """rDPOtrainer.py l.200-230 (reference_free False)."""
    logits = (pc - pr) - (rc - rr)
    image_conditional_logits = (pc - pi) - (rc - ri)
    return -F.logsigmoid(beta * logits) - F.logsigmoid(beta * image_conditional_logits)


def _labels(text):
    return torch.where(text["completion_mask"].bool(), text["input_ids"], torch.full_like(text["input_ids"], LABEL_PAD))


def test_rdpo_noisy_code_path_equals_re_align(make_policy, vlm_rows):
    policy, processor = make_policy("qwen25vl")
    for r in vlm_rows:
        r.extra_image = r.images[0].rotate(90, expand=True)
    batch = VisionPreferenceCollator(processor, extra="row")(vlm_rows)
    beta = 0.3
    with torch.no_grad():
        loss, _ = preference_step(policy, batch, VLMMethodConfig(name="rdpo", beta=beta, rdpo=RdpoOptions(noisy=True)))

        def official_scores():
            pair = forward_logits(policy, batch["pair"], batch["vision"], times=2).float()
            extra = forward_logits(policy, batch["extra"], batch["extra_vision"], times=1).float()
            labels = _labels(batch["pair"])
            chosen_logits, rejected_logits = pair.chunk(2)
            chosen_labels, rejected_labels = labels.chunk(2)
            return (_get_batch_logps(chosen_logits, chosen_labels),
                    _get_noisy_batch_logps(rejected_logits, rejected_logits, rejected_labels),
                    _get_noisy_batch_logps(extra, extra, _labels(batch["extra"])))

        pc, pr, pi = official_scores()
        with policy.disable_adapter():
            rc, rr, ri = official_scores()
    official = _rdpo_dpo_loss(beta, pc, pr, pi, rc, rr, ri).mean()
    assert abs(float(loss) - float(official)) <= 1e-5, (float(loss), float(official))
    with torch.no_grad():
        paper, _ = preference_step(policy, batch, VLMMethodConfig(name="rdpo", beta=beta))
    assert abs(float(paper) - float(official)) > 1e-4  # the default (paper formula) is not the code path


def _mmrlhf_dpo_loss(pc, pr, rc, rr, *, beta, ls_factor_weight, ls_factor=1.0, implicit_beta=True,
                     label_smoothing=1.0):
    """MM-RLHF trl/trainer/dpo_trainer.py l.759-818 (sigmoid branch, not vision, one process)."""
    logits = (pc - pr) - (rc - rr)
    if isinstance(ls_factor, (float, int)):
        ls_factor = torch.full_like(logits, fill_value=ls_factor)
    beta_used = beta * (1 + ls_factor_weight * ls_factor.detach())
    beta_used = beta_used.clamp(min=1e-3)
    if implicit_beta:
        A = logits.detach()
        mean = torch.mean(A)
        std = torch.std(A)
        weight_sample = torch.exp(-0.5 * ((A - mean) / (std + 1e-7)).pow(2))
        sample_num = int(weight_sample.numel() * (1 - 0.2))
        sample_index = torch.multinomial(weight_sample, sample_num, replacement=False)
        A_used = torch.mean(A[sample_index])
        beta_used = beta * (1 + ls_factor_weight * (A_used - mean))
        beta_used = beta_used.clamp(min=1e-3)
    losses = -F.logsigmoid(beta_used * logits) * label_smoothing - F.logsigmoid(-beta_used * logits) * (1 - label_smoothing)
    return losses, beta_used


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_implicit_and_ls_factor_beta_equal_mm_rlhf(seed):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-20 + 3 * torch.randn(10, generator=g) for _ in range(4))
    h = (pc - pr) - (rc - rr)
    torch.manual_seed(100 + seed)
    official, official_beta = _mmrlhf_dpo_loss(pc, pr, rc, rr, beta=0.1, ls_factor_weight=0.1)
    torch.manual_seed(100 + seed)
    beta = per_sample_beta("batch_implicit", 0.1, {}, 10, weight=0.1, margins=h)
    torch.testing.assert_close(beta, official_beta.expand(10).float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(-F.logsigmoid(beta * h), official.float(), rtol=1e-6, atol=1e-7)
    # the data path the code was written for (implicit_beta off): beta (1 + w ls_factor), clamped at 1e-3
    ls = torch.tensor([1.0, 0.5, -30.0, 2.0, 0.0, 1.0, 1.0, 3.0, -1.0, 0.2])
    official_ls, official_ls_beta = _mmrlhf_dpo_loss(pc, pr, rc, rr, beta=0.1, ls_factor_weight=0.1, ls_factor=ls,
                                                     implicit_beta=False)
    ours_ls = per_sample_beta("ls_factor", 0.1, {"ls_factor": ls}, 10, weight=0.1)
    torch.testing.assert_close(ours_ls, official_ls_beta.float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(-F.logsigmoid(ours_ls * h), official_ls.float(), rtol=1e-6, atol=1e-7)
