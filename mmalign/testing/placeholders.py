"""``tiny:`` placeholders for ``model.pretrained`` and ``data.path``: runnable without any download.

* ``model.pretrained: tiny:sd15 | tiny:sd2v | tiny:sdxl | tiny:sd3 | tiny:flux`` — a tiny random-weight pipeline
  of that family (:mod:`mmalign.testing.tiny_diffusion`; SD3 / FLUX: :mod:`mmalign.testing.tiny_flow`);
  ``tiny:qwen2vl | tiny:qwen25vl | tiny:llavaov`` (and ``tiny:qwen2vl-toy``) — a tiny random-weight video LLM
  with its processor (:mod:`mmalign.testing.tiny_video`); in the VLM recipe ``tiny:qwen2vl | tiny:qwen25vl |
  tiny:llava | tiny:idefics3`` — a tiny random-weight image-text-to-text model with its processor
  (:mod:`mmalign.testing.tiny_vlm`). Each is saved once under ``<output_dir>/tiny_inputs/`` and loaded with
  ``from_pretrained`` like any checkpoint (so ``model.dtype`` applies as to a real one);
* ``data.path: tiny:pairs | tiny:dual | tiny:ranked | tiny:unpaired`` — a small generated preference set of
  colored squares (caption "a {color} square"; the square of the caption's color is preferred), written with the
  data package's jsonl writers; in the VLM recipe ``tiny:pairs`` is a set of VLM preference rows on such images
  (question "What color is the square?", chosen = the square's color);
* ``scorer: tiny:<card>`` in any section (``method.smpo``, ``validation``, ...) — a tiny random-weight checkpoint
  of that scorer card in its official layout (:mod:`mmalign.testing.tiny_scorers`), with the card options it needs.

A random-weight model learns nothing meaningful: this is a smoke-test / demo default until real (or toy-world)
assets are configured, and the recipe prints so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PREFIX = "tiny:"
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def square_image(color: str, size: int = 64, seed: int = 0) -> Image.Image:
    """A square of ``color`` on a noisy gray background."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(100, 140, size=(size, size, 3), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    arr[lo:hi, lo:hi] = COLORS[color]
    return Image.fromarray(arr)


def write_tiny_data(kind: str, out_dir: str | Path, n: int = 16, size: int = 64) -> Path:
    from mmalign.data import write_pairs_jsonl, write_ranked_jsonl, write_unpaired_jsonl

    names = list(COLORS)
    if kind == "prompts":  # the online methods' data: one prompt per line
        path = Path(out_dir) / "prompts.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"a {names[i % 4]} square on the {('left', 'right')[i // 4 % 2]}\n" for i in range(n)))
        return path
    rows = []
    for i in range(n):
        good, bad = names[i % 4], names[(i + 1 + i // 4) % 4 if (i + 1 + i // 4) % 4 != i % 4 else (i + 2) % 4]
        prompt = f"a {good} square"
        if kind in ("pairs", "dual"):
            row = {"prompt": prompt, "chosen": square_image(good, size, i), "rejected": square_image(bad, size, 1000 + i)}
            if kind == "dual":
                row.update(prompt_chosen=prompt, prompt_rejected=f"a {bad} square")
            rows.append(row)
        elif kind == "ranked":
            colors = [good] + [c for c in names if c != good][:2]
            rows.append({"prompt": prompt, "images": [square_image(c, size, 10 * i + j) for j, c in enumerate(colors)],
                         "scores": [1.0, 0.5, 0.0]})
        elif kind == "unpaired":
            rows.append({"prompt": prompt, "image": square_image(good, size, i), "label": True})
            rows.append({"prompt": prompt, "image": square_image(bad, size, 1000 + i), "label": False})
        else:
            raise ValueError(f"data.path: unknown placeholder 'tiny:{kind}' (pairs, dual, ranked, unpaired, prompts)")
    path = Path(out_dir) / f"{kind}.jsonl"
    writer = {"pairs": write_pairs_jsonl, "dual": write_pairs_jsonl, "ranked": write_ranked_jsonl,
              "unpaired": write_unpaired_jsonl}[kind]
    return writer(rows, path)


def write_tiny_vlm_pairs(out_dir: str | Path, n: int = 8, size: int = 32) -> Path:
    """VLM preference rows (``mmalign.data.vlm_rows`` format) on colored squares: chosen names the color."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, rows = list(COLORS), []
    for i in range(n):
        good, bad = names[i % 4], names[(i + 1) % 4]
        square_image(good, size, i).save(out_dir / f"img{i}.png")
        rows.append({"id": f"row{i}", "images": [f"img{i}.png"],
                     "prompt": [{"role": "user", "content": "What color is the square?"}],
                     "chosen": [{"role": "assistant", "content": f"It is {good}."}],
                     "rejected": [{"role": "assistant", "content": f"It is {bad}."}]})
    path = out_dir / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_model_folder(kind: str, workdir: str | Path, family: str | None = None) -> Path:
    """The folder of the tiny model ``tiny:<kind>`` under ``workdir``, saved there on first use: a diffusion
    pipeline (``model_index.json``), a video LLM + processor, or (``family="vlm"``) an image-text-to-text model +
    processor (``config.json``)."""
    from mmalign.testing.tiny_diffusion import TINY_KINDS, save_tiny_pipeline
    from mmalign.testing.tiny_video import FAMILIES, write_tiny_video_llm

    path = Path(workdir) / f"model_{kind}"
    if family == "vlm":
        from mmalign.testing.tiny_vlm import FAMILIES as VLM_FAMILIES
        from mmalign.testing.tiny_vlm import write_tiny_vlm

        if kind not in VLM_FAMILIES:
            raise ValueError(f"model.pretrained: unknown placeholder 'tiny:{kind}' ({', '.join(VLM_FAMILIES)})")
        if not (path / "config.json").is_file():
            write_tiny_vlm(kind, path)
    elif kind in TINY_KINDS:
        if not (path / "model_index.json").is_file():
            save_tiny_pipeline(kind, path)
    elif kind.partition("-")[0] in FAMILIES:
        if not (path / "config.json").is_file():
            write_tiny_video_llm(kind, path)
    else:
        known = ", ".join([*TINY_KINDS, *FAMILIES, "qwen2vl-toy"])
        raise ValueError(f"model.pretrained: unknown placeholder 'tiny:{kind}' ({known})")
    return path


def resolve_scorer_placeholders(section: Any, workdir: str | Path, where: str = "") -> list[str]:
    """``scorer: tiny:<card>`` in any section of ``section`` (a config dataclass, walked recursively) → the card
    name, its tiny checkpoint (written once under ``<workdir>/tiny_scorer``) and the card options it needs; returns
    notices. A section without ``scorer_options`` takes only cards that need no options."""
    notes: list[str] = []
    if not dataclasses.is_dataclass(section):
        return notes
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            notes += resolve_scorer_placeholders(value, workdir, f"{key}.")
        elif f.name == "scorer" and isinstance(value, str) and value.startswith(PREFIX):
            from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints

            card, kwargs = value[len(PREFIX):], save_tiny_scorer_checkpoints(Path(workdir) / "tiny_scorer")
            if card not in kwargs or not hasattr(section, "scorer_checkpoint"):
                raise ValueError(f"{key}: no tiny checkpoint for '{value}' ({', '.join(kwargs)})")
            options = dict(kwargs[card])
            section.scorer, section.scorer_checkpoint = card, options.pop("checkpoint")
            if options and not hasattr(section, "scorer_options"):
                raise ValueError(f"{key}: '{value}' needs card options ({', '.join(options)}) this section cannot set")
            if options:
                section.scorer_options = {**section.scorer_options, **options}
            notes.append(f"{key}=tiny:{card}: a tiny RANDOM-WEIGHT {card} checkpoint ({section.scorer_checkpoint})")
    return notes


def resolve_placeholders(cfg, workdir: str | Path, family: str | None = None) -> list[str]:
    """Replace ``tiny:`` values of ``cfg.model.pretrained`` / ``cfg.data.path`` by generated folders (in place);
    returns notices to print. Every recipe calls it (:func:`mmalign.recipe.run`, its ``family`` name) under
    ``accelerator.main_process_first()``."""
    notes, workdir = [], Path(workdir)
    if str(cfg.model.pretrained).startswith(PREFIX):
        kind = cfg.model.pretrained[len(PREFIX):]
        path = tiny_model_folder(kind, workdir, family)
        cfg.model.pretrained = str(path)
        notes.append(f"model.pretrained=tiny:{kind}: a tiny RANDOM-WEIGHT model ({path}); outputs are not meaningful")
    if str(getattr(cfg.data, "path", None)).startswith(PREFIX):
        kind = cfg.data.path[len(PREFIX):]
        path = workdir / f"data_{kind}"
        jsonl = path / f"{kind}.jsonl"
        if family == "vlm":
            if kind != "pairs":
                raise ValueError(f"data.path: unknown placeholder 'tiny:{kind}' (the VLM recipe reads tiny:pairs)")
            jsonl = path / "pairs.jsonl"
            if not jsonl.is_file():
                write_tiny_vlm_pairs(path)
        elif not jsonl.is_file():
            write_tiny_data(kind, path)
        cfg.data.path = str(jsonl)
        notes.append(f"data.path=tiny:{kind}: generated colored-square preference data ({jsonl})")
    return notes + resolve_scorer_placeholders(cfg, workdir)
