"""The loop's accelerate save/load pre-hooks (mmalign.training.checkpointing.save_hook / load_hook).

Single process and DDP: accelerate hands the hooks the models' full state dicts (``weights``) / the models; the
hooks replace that by the trainable parameters only (small LoRA checkpoints). FSDP and DeepSpeed: accelerate saves
and loads the sharded model itself and passes empty lists; the hooks must then write and read nothing (their
parameters are shards). FSDP itself needs GPUs with accelerate 1.15 (a CPU launch is refused, see
test_accelerate_configs.py), so these are the state-dict paths that can run here.
"""

from __future__ import annotations

import torch

from mmalign import checkpoint as ckpt
from mmalign.training.checkpointing import load_hook, save_hook


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # a frozen base layer, as under LoRA
    return model


def test_unsharded_save_keeps_only_trainable_parameters_and_load_restores_them(tmp_path):
    model = _model(0)
    weights = [model.state_dict()]
    save_hook(model, weights, str(tmp_path))
    assert weights == []  # accelerate must not also write the full model
    saved = (tmp_path / ckpt.TRAINABLE_FILE)
    from safetensors.torch import load_file

    assert sorted(load_file(str(saved))) == ["1.bias", "1.weight"]
    other = _model(1)
    models = [other]
    load_hook(other, models, str(tmp_path))
    assert models == [] and torch.equal(other[1].weight, model[1].weight)
    assert not torch.equal(other[0].weight, model[0].weight)  # frozen layers are not part of the checkpoint


def test_sharded_paths_write_and_read_nothing(tmp_path):
    model = _model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_hook(model, [], str(tmp_path))  # FSDP / DeepSpeed: accelerate saved the shards itself
    assert not any(tmp_path.iterdir())
    load_hook(model, [], str(tmp_path))  # ... and loads them itself
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
