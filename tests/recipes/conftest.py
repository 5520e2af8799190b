"""Inputs for the shipped-config matrix: tiny random-weight stand-ins for each released model a config names
(real classes, saved in that architecture's released layout) and small data sets of each kind a method reads."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from mmalign.testing.placeholders import COLORS, square_image
from tests.helpers import REPO

TOY_VIDEOS = REPO / "assets" / "videos" / "toy"
square = partial(square_image, size=32)


class LazyDirs:
    """``dirs[name]`` builds (once per session) and returns a folder; builders are keyed by name."""

    def __init__(self, root: Path, builders: dict) -> None:
        self.root, self.builders, self.built = root, builders, {}

    def __getitem__(self, name: str) -> str:
        if name not in self.built:
            self.built[name] = str(self.builders[name](self.root / name.replace(":", "_")))
        return self.built[name]

    def scorer_checkpoint(self, name: str) -> str:
        """The tiny checkpoint of scorer ``name`` in its official layout (needs the ``scorers`` builder)."""
        return json.loads((Path(self["scorers"]) / "kwargs.json").read_text())[name]["checkpoint"]


def _diffusion_pipeline(kind: str, out: Path) -> Path:
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline

    return save_tiny_pipeline(kind, out)


def _vlm(family: str, out: Path) -> Path:
    from mmalign.testing.tiny_vlm import write_tiny_vlm

    return write_tiny_vlm(family, out)


def _video_llm(family: str, out: Path) -> Path:
    from mmalign.testing.tiny_video import write_tiny_video_llm

    return write_tiny_video_llm(family, out)


def _scorers(out: Path) -> Path:
    from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints

    (out / "kwargs.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "kwargs.json").write_text(json.dumps(save_tiny_scorer_checkpoints(out), default=str))
    return out


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> LazyDirs:
    """Saved tiny models: ``sd15`` / ``sd2v`` / ``sdxl`` / ``sd3`` / ``flux`` pipelines, ``vlm:<family>``, ``video:<family>``, and
    ``scorers`` (every scorer layout; ``models.scorer_checkpoint(name)`` picks one)."""
    builders = {kind: partial(_diffusion_pipeline, kind) for kind in ("sd15", "sd2v", "sdxl", "sd3", "flux")}
    builders.update({f"vlm:{f}": partial(_vlm, f) for f in ("qwen2vl", "qwen25vl", "llava", "idefics3")})
    builders.update({f"video:{f}": partial(_video_llm, f) for f in ("qwen2vl", "qwen25vl", "qwen2vl-toy", "llavaov")})
    builders["scorers"] = _scorers
    return LazyDirs(tmp_path_factory.mktemp("matrix_models"), builders)




def _diffusion_data(kind: str, out: Path) -> Path:
    from mmalign.data import write_pairs_jsonl
    from mmalign.testing.placeholders import write_tiny_data

    if kind != "per_user":
        return write_tiny_data(kind, out, n=4, size=32)
    names = list(COLORS)  # 3 users x 6 pairs; user u prefers colour u (PPD: 4 shots + 2 training pairs each)
    rows = [{"prompt": f"a square number {i}", "chosen": square(names[u], seed=100 * u + i),
             "rejected": square(names[(u + 1 + i % 3) % 4], seed=100 * u + 50 + i), "user_id": u}
            for u in range(3) for i in range(6)]
    return write_pairs_jsonl(rows, out / "data.jsonl")


def _vlm_pairs(out: Path) -> Path:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, rgb) in enumerate(list(COLORS.items())[:4]):
        Image.new("RGB", (32 + 8 * i, 32), rgb).save(out / f"img{i}.png")
        Image.new("RGB", (32, 32), tuple(255 - c for c in rgb)).save(out / f"ret{i}.png")
        rows.append({"id": f"row{i}", "images": [f"img{i}.png"], "retrieved_image": f"ret{i}.png",
                     "prompt": [{"role": "user", "content": "What color is the shape?"}],
                     "chosen": [{"role": "assistant", "content": f"It is {name}."}],
                     "rejected": [{"role": "assistant", "content": "a purple circle on the left"}]})
    path = out / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _video_rows(kind: str, out: Path) -> Path:
    """Rows on the toy clips: ``rrpo`` (masked phrases), ``dpo`` (ms-swift messages + rejected_response), ``sft``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in (TOY_VIDEOS / "direction_train.jsonl").read_text().splitlines()][:2]
    other = {"left": "right", "right": "left", "up": "down", "down": "up"}
    video = [str(TOY_VIDEOS / r["video"]) for r in rows]
    if kind == "rrpo":
        data = [{"media_path": v, "question": "<image>\n" + r["question"], "answer": f"It moves {r['answer']}.",
                 "pred": f"It moves {other[r['answer']]}.", "answer_masked": f"It moves <MASK>{r['answer']}</MASK>.",
                 "pred_masked": f"It moves <MASK>{other[r['answer']]}</MASK>."} for v, r in zip(video, rows)]
    elif kind == "dpo":
        data = [{"messages": [{"role": "user", "content": "<video>" + r["question"]},
                              {"role": "assistant", "content": r["answer"]}],
                 "rejected_response": other[r["answer"]], "videos": [v]} for v, r in zip(video, rows)]
    else:
        data = [{"video": v, "question": r["question"], "response": r["answer"]} for v, r in zip(video, rows)]
    path = out / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> LazyDirs:
    """Data files: ``diffusion:<pairs|dual|ranked|unpaired|per_user|prompts>``, ``vlm:pairs``,
    ``video:<rrpo|dpo|sft>``."""
    builders = {f"diffusion:{k}": partial(_diffusion_data, k)
                for k in ("pairs", "dual", "ranked", "unpaired", "per_user", "prompts")}
    builders["vlm:pairs"] = _vlm_pairs
    builders.update({f"video:{k}": partial(_video_rows, k) for k in ("rrpo", "dpo", "sft")})
    return LazyDirs(tmp_path_factory.mktemp("matrix_data"), builders)


@pytest.fixture
def fresh_accelerate():
    """Each run may use another mixed precision; accelerate keeps process-wide state, so reset it around a run."""
    from mmalign.recipe_entry import reset_accelerate_state

    reset_accelerate_state()
    yield
    reset_accelerate_state()
