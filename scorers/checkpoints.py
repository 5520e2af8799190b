"""Find and read scorer checkpoints safely (safetensors or ``torch.load(weights_only=True)``), load strictly.

A checkpoint reference is a local file or folder; otherwise ``org/repo`` (a hub folder) or ``org/repo/file``
(one file of a hub repo) is fetched with ``huggingface_hub`` when online. Library code never downloads anything
else (no base weights before fine-tuned ones, unlike ``hpsv2.score``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

# open_clip's preference order for the weights file of a ``local-dir`` folder, then transformers' names.
WEIGHT_FILES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pt",
    "model.safetensors", "pytorch_model.bin",
)
HUB_FOLDER_PATTERNS = ["*.json", "*.txt", "*.safetensors", "pytorch_model*.bin", "open_clip_pytorch_model*"]
IGNORED_KEY_SUFFIXES = ("position_ids", "attn_mask")  # buffers some versions save and others do not


REPO_ROOT = Path(__file__).resolve().parents[1]


def card_default(ref: str | None) -> str | None:
    """A card's ``default_checkpoint``: a relative path that exists in the repository (``assets/toy/...``) is
    made absolute, so the shipped default works from any directory; hub references stay as they are."""
    if ref is None or Path(ref).is_absolute() or Path(ref).expanduser().exists():
        return ref
    shipped = REPO_ROOT / ref
    return str(shipped) if shipped.exists() else ref


def is_hub_reference(ref: str) -> bool:
    """``org/repo`` (a hub folder) or ``org/repo/file`` (one file of a hub repo), not a local-looking path."""
    parts = ref.split("/")
    return 2 <= len(parts) <= 3 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve_checkpoint(ref: str | os.PathLike | None, what: str = "checkpoint") -> Path:
    """A local path for ``ref``: the path itself if it exists, else a hub download (clear error when offline)."""
    if ref is None:
        raise FileNotFoundError(f"no {what} given and the scorer card has no default; pass checkpoint=<path>")
    path = Path(ref).expanduser()
    if path.exists():
        return path
    text = str(ref)
    parts = text.split("/")
    if is_hub_reference(text):
        try:
            if len(parts) == 2:
                from huggingface_hub import snapshot_download

                # weights for torch only (hub CLIP repos also hold TF / Flax copies)
                return Path(snapshot_download(repo_id=text, allow_patterns=HUB_FOLDER_PATTERNS))
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo_id="/".join(parts[:2]), filename=parts[2]))
        except Exception as exc:  # offline, missing repo, no access: report the reference and the cause
            raise FileNotFoundError(
                f"{what} {text!r} is not a local file or folder, and fetching it from the Hugging Face hub "
                f"failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "pass a local path"
            ) from exc
    raise FileNotFoundError(f"{what} not found: {text}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (``.safetensors`` or a torch zip/pickle read with ``weights_only=True``).

    A dict holding ``'state_dict'`` (the HPSv2 layout) is unwrapped; a ``module.`` prefix (DDP) is stripped.
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read {path} as a weights-only torch checkpoint ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(sd).__name__})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_folder_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict of a model folder (single weights file or a sharded ``*.index.json``)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return read_state_dict(folder / name), folder / name
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(read_state_dict(folder / shard))
            return sd, index
    raise FileNotFoundError(f"no weights file in {folder} (looked for {', '.join(WEIGHT_FILES)} "
                            "or a sharded *.index.json)")


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], source: str | Path, limit: int = 5, *,
                assign: bool = False) -> None:
    """``load_state_dict`` that fails on missing/unexpected keys or shape mismatches, naming the first ones.

    ``assign``: the checkpoint tensors become the parameters (for a module built on the meta device)."""
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith(IGNORED_KEY_SUFFIXES)}
    given = {k: v for k, v in sd.items() if not k.endswith(IGNORED_KEY_SUFFIXES)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in given and given[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not match the {type(module).__name__} built from the card"]
        if missing:
            lines.append(f"  {len(missing)} missing key(s), first: {missing[:limit]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected key(s), first: {unexpected[:limit]}")
        if shapes:
            lines.append(f"  {len(shapes)} shape mismatch(es), first: {shapes[:limit]}")
        lines.append("  (wrong scorer name, wrong arch override, or a checkpoint of another layout?)")
        raise ValueError("\n".join(lines))
    module.load_state_dict(given, strict=False, assign=assign)
