"""The suite's own settings (tests/conftest.py) name folders that exist: a renamed test folder must not silently
drop out of the single-thread areas (the flat names ``diffusion_inversion`` / ``diffusion_ppd`` / ``toy_main_job``
matched nothing after the tests moved under ``tests/diffusion/inversion``, ...)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SINGLE_THREAD_AREAS, TESTS, _area


def test_every_single_thread_area_is_a_test_folder():
    for area in SINGLE_THREAD_AREAS:
        folder = TESTS / area
        assert folder.is_dir() and any(folder.glob("test_*.py")), area


def test_the_area_is_the_folder_under_tests():
    assert _area(TESTS / "diffusion" / "inversion" / "test_x.py") == "diffusion/inversion"
    assert _area(TESTS / "test_x.py") == "."
    assert _area(Path("/elsewhere/test_x.py")) == ""
