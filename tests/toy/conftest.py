"""Fixtures of the toy-world tests: the shipped pipeline (loaded once)."""

import pytest

from mmalign.toy import paths


@pytest.fixture(scope="session")
def toy_pipeline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(paths.pipeline_dir(), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
