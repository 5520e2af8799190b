"""Shared fixtures for the PPD tests: tiny SD pipeline builders, user embeddings, per-user preference data."""

from __future__ import annotations

from functools import partial

import pytest

from mmalign.testing.placeholders import COLORS, square_image

square = partial(square_image, size=32)
"""A colored square on a gray noisy background (distinct bytes per seed), 32 px."""


@pytest.fixture
def sd15():
    from mmalign.testing.tiny_diffusion import tiny_pipeline

    return tiny_pipeline("sd15", seed=0)


@pytest.fixture(scope="session")
def per_user_pairs(tmp_path_factory):
    """A Pick-a-Pic-schema jsonl with ``user_id``: 3 users x 6 pairs; user u prefers color ``u``."""
    from mmalign.data import write_pairs_jsonl

    names = list(COLORS)
    rows = []
    for user in range(3):
        for i in range(6):
            good, bad = names[user], names[(user + 1 + i % 3) % 4]
            rows.append({"prompt": f"a square number {i}", "chosen": square(good, seed=100 * user + i),
                         "rejected": square(bad, seed=100 * user + 50 + i), "user_id": user})
    path = tmp_path_factory.mktemp("ppd_data") / "per_user" / "data.jsonl"
    return str(write_pairs_jsonl(rows, path))
