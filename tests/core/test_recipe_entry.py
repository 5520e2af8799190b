"""mmalign.recipe_entry.run_recipe_file: the one in-process recipe runner (test fixtures, notebooks) resets
accelerate's process-wide state around each run."""

from __future__ import annotations

import pytest

from mmalign.recipe_entry import reset_accelerate_state, run_recipe_file

RECIPE = """
from accelerate import Accelerator


def main(argv):
    accelerator = Accelerator(mixed_precision=argv[0], cpu=True, gradient_accumulation_steps=int(argv[1]))
    return accelerator.mixed_precision, accelerator.gradient_accumulation_steps
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text(RECIPE)
    yield path
    reset_accelerate_state()


def test_runs_with_other_settings_follow_each_other(recipe):
    assert run_recipe_file(recipe, ["no", "1"]) == ("no", 1)
    assert run_recipe_file(recipe, ["bf16", "3"]) == ("bf16", 3)


def test_state_left_by_earlier_code_is_reset_before_the_run(recipe):
    from accelerate import Accelerator

    Accelerator(mixed_precision="bf16", cpu=True)
    assert run_recipe_file(recipe, ["no", "2"]) == ("no", 2)


def test_state_is_reset_after_a_failing_run(recipe):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    with pytest.raises(ValueError):
        run_recipe_file(recipe, ["fp17", "1"])
    assert not AcceleratorState._shared_state and not PartialState._shared_state
    assert Accelerator(mixed_precision="bf16", cpu=True).mixed_precision == "bf16"


def test_without_the_reset_accelerate_refuses_other_settings(recipe):
    """What the reset prevents (keeps the tests above meaningful if accelerate changes)."""
    import runpy

    from accelerate import Accelerator

    reset_accelerate_state()
    Accelerator(mixed_precision="bf16", cpu=True)
    with pytest.raises(ValueError, match="already been initialized"):
        runpy.run_path(str(recipe))["main"](["no", "1"])
