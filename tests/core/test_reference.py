"""The frozen reference copy (mmalign/reference.py): no gradients, eval mode, on the policy's device."""

import torch

from mmalign.reference import frozen_copy


def test_frozen_copy_is_frozen_in_eval_mode_on_the_requested_device():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).train()
    ref = frozen_copy(model, device="meta", dtype=torch.float16)
    assert all(p.device.type == "meta" and p.dtype == torch.float16 and not p.requires_grad for p in ref.parameters())
    assert not ref.training and model.training  # the policy is untouched
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
