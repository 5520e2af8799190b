"""The recipes are one skeleton in code (issue 23 item 4): every ``recipes/<family>.py`` is :func:`mmalign.recipe.run`
over its :class:`~mmalign.recipe.Family`, the steps run in one order, and every family writes one export layout
(the output folder is the trained model, beside ``mmalign_config.yaml`` and ``summary.json``)."""

from __future__ import annotations

import ast
import json
import runpy
import sys

import pytest
import torch

from tests.helpers import REPO

RECIPES = ("diffusion", "vlm", "video")
ORDER = ["prepare_config", "lock", "accelerator", "tiny", "check", "load_data", "load_model", "make_job", "train",
         "before_export", "export", "evaluate", "summary"]
"""parse → lock → accelerator → tiny: → check → data → model and reference → step → train → export and eval →
summary (mmalign/recipe.py)."""


def test_recipe_files_are_the_skeleton_over_their_family():
    for name in RECIPES:
        text = (REPO / "recipes" / f"{name}.py").read_text()
        assert len(text.splitlines()) <= 20, f"recipes/{name}.py: {len(text.splitlines())} lines"
        tree = ast.parse(text)
        defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        assert defined == [], f"recipes/{name}.py defines {defined}: steps live in mmalign/recipe.py"
        main = runpy.run_path(str(REPO / "recipes" / f"{name}.py"))["main"]
        assert main.__qualname__ == "main_of.<locals>.main", f"recipes/{name}.py: main is not mmalign.recipe.run"
        family = main.__closure__[0].cell_contents
        assert family.name == name


TABLES = ("METHODS", "STEPS", "REGISTRY", "SPECS")
"""The method tables (VLM steps, video step builders, diffusion registry, key specs): inside ``mmalign/`` a lookup
``TABLE[cfg.method.name]`` is how method knowledge is read; any other use of the name as a key is a branch."""


def _method_name_comparisons(tree: ast.AST, tables: tuple[str, ...] = ()) -> list[int]:
    """Lines where ``<...>.method.name`` (or a stage's ``.method``) is compared or used as a lookup key (a lookup
    into one of ``tables`` excepted)."""
    def is_method_name(node: ast.AST) -> bool:  # cfg.method.name, method.name, stage.method
        if not isinstance(node, ast.Attribute):
            return False
        owner = node.value
        if node.attr == "name":
            return isinstance(owner, ast.Attribute) and owner.attr == "method" or \
                isinstance(owner, ast.Name) and owner.id == "method"
        return node.attr == "method" and isinstance(owner, ast.Name) and owner.id == "stage"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(is_method_name(n) for n in [node.left, *node.comparators]):
            membership = all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and all(
                isinstance(c, ast.Name) and c.id in tables for c in node.comparators)
            if not membership:  # ``name in TABLE`` validates, it does not branch
                lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and is_method_name(node.slice):
            table = node.value
            if not (isinstance(table, ast.Name) and table.id in tables):
                lines.append(node.lineno)
    return lines


def test_recipes_and_families_hold_no_method_branches():
    """Method knowledge lives in the family's table (diffusion registry, vlm_objective.METHODS, video_build.STEPS)."""
    files = [REPO / "recipes" / f"{n}.py" for n in RECIPES] + sorted((REPO / "mmalign" / "families").glob("*.py"))
    files.append(REPO / "mmalign" / "recipe.py")
    for path in files:
        assert _method_name_comparisons(ast.parse(path.read_text())) == [], f"{path} branches on the method name"


def test_the_detector_sees_a_method_branch():
    tree = ast.parse('extra = {"dpo": 1}[method.name]\nif cfg.method.name != "sft":\n    pass\n')
    assert _method_name_comparisons(tree) == [1, 2]
    assert _method_name_comparisons(ast.parse("spec = STEPS[cfg.method.name]"), TABLES) == []


def test_the_package_holds_no_method_branches():
    """Issue 23: no ``method.name`` branch anywhere in ``mmalign/``: what is method-specific is a field of the
    method's entry (diffusion registry, VLM ``METHODS``, video ``STEPS`` / ``SPECS``)."""
    found = {}
    for path in sorted((REPO / "mmalign").rglob("*.py")):
        lines = _method_name_comparisons(ast.parse(path.read_text()), TABLES)
        if lines:
            found[str(path.relative_to(REPO))] = lines
    assert found == {}, f"method.name branches outside the tables: {found}"


class Recorder:
    """The real family, with each call of a step method recorded in ``calls``."""

    def __init__(self, family, calls: list[str]) -> None:
        self._family, self._calls = family, calls
        self.name, self.schema = family.name, family.schema

    def __getattr__(self, attr):
        method = getattr(self._family, attr)

        def recorded(*args, **kwargs):
            self._calls.append(attr)
            return method(*args, **kwargs)

        return recorded


def _run_recorded(name: str, argv: list[str], monkeypatch) -> tuple[dict, list[str]]:
    """Run ``recipes/<name>.py``'s family through :func:`mmalign.recipe.run` recording the order of the steps."""
    from mmalign import run_lock
    from mmalign.recipe import run
    from mmalign.recipe_entry import reset_accelerate_state
    from mmalign.testing import placeholders
    from mmalign.training import distributed, loop, metrics

    assert loop.prepare_run  # imported before the spies: the loop's own (re-entrant) lock call is not a recipe step

    calls: list[str] = []

    def spy(label, real):
        def call(*args, **kwargs):
            calls.append(label)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(run_lock, "lock_run_folder", spy("lock", run_lock.lock_run_folder))
    monkeypatch.setattr(distributed, "make_accelerator", spy("accelerator", distributed.make_accelerator))
    monkeypatch.setattr(placeholders, "resolve_placeholders", spy("tiny", placeholders.resolve_placeholders))
    real_summary = metrics.write_summary

    def write_summary(output_dir, summary):  # the loop writes its own part too; the recipe's is the last
        if sys._getframe(1).f_globals["__name__"] == "mmalign.recipe":
            calls.append("summary")
        return real_summary(output_dir, summary)

    monkeypatch.setattr(metrics, "write_summary", write_summary)
    family = runpy.run_path(str(REPO / "recipes" / f"{name}.py"))["main"].__closure__[0].cell_contents
    reset_accelerate_state()
    try:
        summary = run(Recorder(family, calls), argv)
    finally:
        reset_accelerate_state()
    return summary, calls


SMALL = ["train.max_steps=1", "train.batch_size=2", "train.grad_accum=1", "train.progress_bar=false",
         "train.mixed_precision=no"]


@pytest.mark.slow
def test_vlm_tiny_run_follows_the_skeleton_and_exports_into_the_run_folder(tmp_path, monkeypatch):
    """VLM had no ``tiny:`` (a ConfigError: the path does not exist) and wrote its adapter to ``adapter/``."""
    from mmalign.cli import main as cli
    from mmalign.mllm.export import load_trained

    out = tmp_path / "vlm"
    summary, calls = _run_recorded("vlm", [
        "--config", str(REPO / "recipes/configs/vlm/qwen2vl_dpo.yaml"), "model.pretrained=tiny:qwen2vl",
        "data.path=tiny:pairs", f"output_dir={out}", "model.dtype=float32", *SMALL], monkeypatch)
    assert calls == ORDER
    assert (out / "tiny_inputs" / "model_qwen2vl" / "config.json").is_file()
    assert summary["steps"] == 1 and json.loads((out / "summary.json").read_text())["data"]["rows"] == 8
    assert (out / "adapter_config.json").is_file() and (out / "mmalign_config.yaml").is_file()
    reloaded = load_trained(out)
    trained = summary["trained_model"]
    for key, value in trained.state_dict().items():  # export -> reload exact
        if "lora_" in key:
            torch.testing.assert_close(reloaded.state_dict()[key], value, atol=0, rtol=0)
    assert cli(["export", str(out), "--out", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "adapter_config.json").is_file()
    assert (tmp_path / "exported" / "mmalign_config.yaml").read_text() == (out / "mmalign_config.yaml").read_text()
    assert not (tmp_path / "exported" / "checkpoints").exists()


@pytest.mark.slow
def test_video_run_follows_the_skeleton_and_exports_into_the_run_folder(tmp_path, monkeypatch, data):
    """Video wrote a hard-coded ``adapter/`` (LoRA) or ``model/`` (full fine-tuning)."""
    out = tmp_path / "video"
    summary, calls = _run_recorded("video", [
        "--config", str(REPO / "recipes/configs/video/qwen25vl_vdpo.yaml"), "model.pretrained=tiny:qwen2vl",
        f"data.path={data['video:sft']}", f"output_dir={out}", "model.dtype=float32", "data.max_length=512",
        "video.num_frames=4", "video.max_frames=4", *SMALL], monkeypatch)
    assert calls == ORDER
    assert summary["steps"] == 1
    assert (out / "adapter_config.json").is_file() and (out / "mmalign_config.yaml").is_file()
    assert not (out / "adapter").exists() and not (out / "model").exists()


@pytest.mark.slow
def test_diffusion_run_follows_the_skeleton_and_exports_into_the_run_folder(tmp_path, monkeypatch):
    out = tmp_path / "diffusion"
    summary, calls = _run_recorded("diffusion", [
        "--config", str(REPO / "recipes/configs/diffusion/sd15_dpo.yaml"), "model.pretrained=tiny:sd15",
        "data.path=tiny:pairs", f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", "data.resolution=32",
        "validation.prompts=[]", *SMALL], monkeypatch)
    assert calls == ORDER
    assert summary["steps"] == 1
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "mmalign_config.yaml").is_file()
