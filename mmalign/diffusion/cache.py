"""On-disk cache of VAE latents and text embeddings, keyed by content, model identity and resolution.

Layout under the cache root::

    latents/<vae fingerprint>-<vae dtype>-r<resolution>/<key[:2]>/<image key>.safetensors   mean, std, time_ids
    text/<text-encoder fingerprint>/<key[:2]>/<sha1(prompt)>.safetensors                   prompt_embeds, pooled

(SD3 / FLUX: ``prompt_embeds`` hold the CLIP+T5 / T5 states, ``max_sequence_length`` tokens — 4096 wide for the
real T5-XXL, 2 MB per prompt in bfloat16 at 256 tokens; ``data.cache_dtype: bfloat16`` halves them, the shipped
SD3/FLUX configs use it; the T5 length is part of the text fingerprint.)

* the image key is the content hash of the image bytes given by the data reader (``chosen_key`` ...);
* the fingerprints hash the model's class names, parameter names, shapes and an evenly spaced sample of every
  tensor's values — a different checkpoint (or a different resolution) lands in a different folder, so nothing
  stale is ever reused, and a second run with the same model reuses every entry;
* the posterior *moments* (mean, std, already × ``scaling_factor``) are stored, not a sample, so training still
  draws a fresh ``latent_dist.sample()`` each step as the official scripts do (``data.latent_sample=mean`` uses the
  mean); SDXL micro-conditioning ids (original size, crop) are stored with the latents;
* files are written to a temporary name and renamed (a killed run never leaves a half-written entry); an entry
  damaged anyway (a full disk, a copy cut short) fails a header check (:mod:`mmalign.diffusion.cache_check`), is
  re-encoded and counted (``entries_damaged`` in the summary).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmalign import disk_errors
from mmalign.diffusion.adapter import DiffusionParts
from mmalign.diffusion.cache_check import safetensors_intact

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_cache_root() -> Path:
    base = os.environ.get("MMALIGN_CACHE") or str(Path.home() / ".cache" / "mmalign")
    return Path(base) / "diffusion"


def module_fingerprint(*modules: torch.nn.Module, extra: str = "", samples: int = 64) -> str:
    """Short hash of the modules' identity: class, parameter names/shapes and sampled values."""
    h = hashlib.sha256(extra.encode())
    for module in modules:
        h.update(type(module).__name__.encode())
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            h.update(f"{name}:{tuple(tensor.shape)}".encode())
            if flat.numel():
                idx = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel())).long()
                h.update(flat[idx.to(flat.device)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def prompt_key(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


class LatentTextCache:
    """Get/put cached latents (by image key) and text embeddings (by prompt)."""

    def __init__(self, root: str | os.PathLike, vae_id: str, text_id: str, resolution: int, dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"data.cache_dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        self.root, self.dtype = Path(root), DTYPES[dtype]
        self.latent_dir = self.root / "latents" / f"{vae_id}-r{resolution}"
        self.text_dir = self.root / "text" / text_id
        self.stats = {"images_encoded": 0, "images_reused": 0, "prompts_encoded": 0, "prompts_reused": 0,
                      "entries_damaged": 0}

    @classmethod
    def for_model(cls, parts: DiffusionParts, resolution: int, root: str | os.PathLike | None = None,
                  dtype: str = "float32") -> LatentTextCache:
        """Fingerprints must be taken before the modules are cast to a training dtype."""
        vae_id = module_fingerprint(parts.vae, extra=str(parts.vae.dtype))
        tok = "|".join(f"{type(t).__name__}:{len(t)}:{t.model_max_length}" for t in parts.tokenizers)
        if parts.is_flow:  # the T5 length changes the embeddings' shape
            tok += f"|t5:{parts.max_sequence_length}"
        text_id = module_fingerprint(*parts.text_encoders, extra=parts.family + tok)
        return cls(root or default_cache_root(), f"{vae_id}-{dtype}", f"{text_id}-{dtype}", resolution, dtype)

    @staticmethod
    def _path(base: Path, key: str) -> Path:
        return base / key[:2] / f"{key}.safetensors"

    def has_image(self, key: str) -> bool:
        return self._has(self._path(self.latent_dir, key))

    def has_prompt(self, prompt: str) -> bool:
        return self._has(self._path(self.text_dir, prompt_key(prompt)))

    def _has(self, path: Path) -> bool:
        """An intact entry exists; a damaged one (truncated, overwritten) is removed and counted, so it is re-encoded."""
        if not path.is_file():
            return False
        if safetensors_intact(path):
            return True
        path.unlink(missing_ok=True)
        self.stats["entries_damaged"] += 1
        return False

    def put_image(self, key: str, mean: torch.Tensor, std: torch.Tensor, time_ids: torch.Tensor) -> None:
        self._write(self._path(self.latent_dir, key), {"mean": mean, "std": std, "time_ids": time_ids.float()})
        self.stats["images_encoded"] += 1

    def put_prompt(self, prompt: str, embeds: dict[str, torch.Tensor]) -> None:
        self._write(self._path(self.text_dir, prompt_key(prompt)), embeds)
        self.stats["prompts_encoded"] += 1

    def get_image(self, key: str) -> dict[str, torch.Tensor]:
        return load_file(str(self._path(self.latent_dir, key)))

    def get_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        return load_file(str(self._path(self.text_dir, prompt_key(prompt))))

    def _write(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        def cast(name: str, v: torch.Tensor) -> torch.Tensor:
            dtype = self.dtype if v.is_floating_point() and name != "time_ids" else v.dtype
            return v.detach().to("cpu", dtype).contiguous()

        def survivor() -> str:
            return (f"nothing trained is lost (the cache only saves re-encoding); free space under {self.root} or "
                    "set data.cache_dir to a disk with room")

        with disk_errors.writing(tmp, survivor, cleanup=lambda: tmp.unlink(missing_ok=True)):
            save_file({k: cast(k, v) for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, path)
