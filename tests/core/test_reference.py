"""The frozen reference copy (mmalign/reference.py): no gradients, eval mode, on the policy's device."""

import torch

from mmalign.reference import frozen_copy


def test_frozen_copy_is_frozen_in_eval_mode_on_the_requested_device():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).train()
    ref = frozen_copy(model, device="meta", dtype=torch.float16)
    assert all(p.device.type == "meta" and p.dtype == torch.float16 and not p.requires_grad for p in ref.parameters())
    assert not ref.training and model.training  # the policy is untouched
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())


def test_adapters_off_reference_runs_in_eval_mode_and_restores_the_policy():
    """The same eval-mode rule for UNets and VLMs: the adapters-off policy is eval() during the reference forward."""
    import pytest

    from mmalign.reference import ReferenceProvider, adapters_disabled

    class Toggled(torch.nn.Module):  # a diffusers / transformers model with peft adapters (disable_adapters())
        def __init__(self):
            super().__init__()
            self.lin, self.enabled = torch.nn.Linear(2, 2), True

        def disable_adapters(self):
            self.enabled = False

        def enable_adapters(self):
            self.enabled = True

    policy = Toggled().train()
    with adapters_disabled(policy) as ref:
        assert ref is policy and not policy.enabled and not policy.training
    assert policy.enabled and policy.training
    with pytest.raises(RuntimeError), adapters_disabled(policy):
        raise RuntimeError("boom")
    assert policy.enabled and policy.training  # restored after an exception too
    with ReferenceProvider("lora").model(policy) as ref:
        assert not ref.enabled and not ref.training
    frozen = ReferenceProvider.for_training(policy, use_lora=False, needs_reference=True)
    with frozen.model(policy) as ref:
        assert ref is not policy and not ref.training and not any(p.requires_grad for p in ref.parameters())
    with pytest.raises(ValueError, match="no reference"), adapters_disabled(torch.nn.Linear(2, 2)):
        pass


def test_peft_adapters_off_reference_matches_the_base_model():
    from peft import LoraConfig, get_peft_model

    from mmalign.reference import reference_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 4))
    x = torch.randn(3, 4)
    expected = base.eval()(x)
    policy = get_peft_model(base.train(), LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False))
    assert not torch.allclose(policy.eval()(x), expected)
    policy.train()
    with torch.no_grad(), reference_model(policy) as ref:
        torch.testing.assert_close(ref(x), expected)  # adapters off and dropout off: the base, deterministic
    assert policy.training
