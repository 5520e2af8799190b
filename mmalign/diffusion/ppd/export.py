"""Export and reload of the PPD user adapter: ``user_adapter.safetensors`` + ``user_adapter_config.json``.

The safetensors file holds the user projection (``projection.*``) and the new key/value projections of every
adapted cross-attention (``unet.<layer>.to_k_ip.weight`` / ``to_v_ip.weight``); the json says how to rebuild them
(embedding shape, token count, scale, the UNet's cross-attention width, the adapted layer names) and which
embedding source produced the users' embeddings. The base UNet is not copied: load the adapter onto the same base
pipeline's UNet with :func:`load_user_adapter` (strict: missing, unexpected or mis-shaped tensors are errors).
The recipe also stores the training users' embeddings (``user_embeddings.safetensors``, keys ``user_<id>``) in the
same folder (:func:`save_user_embeddings` / :func:`load_user_embeddings`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmalign.diffusion.ppd.attention import user_branch_state_dict, user_processors
from mmalign.diffusion.ppd.model import UserConditionedUNet

WEIGHTS_NAME = "user_adapter.safetensors"
CONFIG_NAME = "user_adapter_config.json"
FORMAT_VERSION = 1
USER_EMBEDDINGS_NAME = "user_embeddings.safetensors"


def adapter_state_dict(model: UserConditionedUNet) -> dict[str, torch.Tensor]:
    state = {f"projection.{k}": v for k, v in model.projection.state_dict().items()}
    state.update({f"unet.{k}": v for k, v in user_branch_state_dict(model.unet).items()})
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def save_user_adapter(model: UserConditionedUNet, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter into ``out_dir``; ``extra`` (e.g. the embedding source) goes into the json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    procs = user_processors(model.unet)
    scale = next(iter(procs.values())).user.scale[0]
    config = {
        "format_version": FORMAT_VERSION, "user_dim": model.projection.user_dim,
        "seq_len": model.projection.seq_len, "num_tokens": model.projection.num_tokens,
        "cross_attention_dim": model.projection.token_dim, "scale": scale,
        "layers": sorted(n.removesuffix(".processor") for n in procs), **(extra or {}),
    }
    save_file(adapter_state_dict(model), str(out / WEIGHTS_NAME), metadata={"format": "pt", "mmalign": "ppd"})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no PPD user adapter config here")
    return json.loads(path.read_text())


def load_user_adapter(unet, adapter_dir: str | Path) -> UserConditionedUNet:
    """Install the saved user branch on ``unet`` (in place) and return the user-conditioned UNet."""
    from safetensors.torch import load_file

    config = read_adapter_config(adapter_dir)
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{adapter_dir}: user adapter format {config.get('format_version')} (expected {FORMAT_VERSION})")
    if int(unet.config.cross_attention_dim) != config["cross_attention_dim"]:
        raise ValueError(f"{adapter_dir}: adapter for cross_attention_dim {config['cross_attention_dim']}, the UNet "
                         f"has {unet.config.cross_attention_dim}")
    model = UserConditionedUNet.build(unet, (config["seq_len"], config["user_dim"]), config["num_tokens"],
                                      scale=config["scale"])
    state = load_file(str(Path(adapter_dir) / WEIGHTS_NAME))
    expected = adapter_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(f"{adapter_dir}/{WEIGHTS_NAME} does not match this UNet: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}")
    model.projection.load_state_dict({k.removeprefix("projection."): v for k, v in state.items()
                                      if k.startswith("projection.")})
    with torch.no_grad():
        for name, proc in user_processors(unet).items():
            layer = name.removesuffix(".processor")
            proc.user.to_k_ip[0].weight.copy_(state[f"unet.{layer}.to_k_ip.weight"])
            proc.user.to_v_ip[0].weight.copy_(state[f"unet.{layer}.to_v_ip.weight"])
    return model


def save_user_embeddings(embeddings: dict, path: str | Path) -> Path:
    """``{user_id: (S, H)}`` → safetensors with keys ``user_<id>``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"user_{u}": e.float().contiguous() for u, e in embeddings.items()}, str(path))
    return path


def load_user_embeddings(path: str | Path) -> dict[str, torch.Tensor]:
    """``{user_id (str): embedding}`` from :func:`save_user_embeddings`' file (or an adapter folder holding it)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / USER_EMBEDDINGS_NAME
    return {k.removeprefix("user_"): v for k, v in load_file(str(path)).items()}
