"""TEMPLE temporal perturbations: stated magnitudes, determinism under a seed, frames/clips/caption lists."""

import numpy as np
import pytest

from mmalign.mllm.video.temporal import (
    MAGNITUDES,
    contiguous_groups,
    perturb_frames,
    perturb_indices,
    perturb_sequence,
)


@pytest.mark.parametrize("n", [1, 3, 8, 16, 20, 33])
@pytest.mark.parametrize("m", MAGNITUDES)
def test_drop_keeps_n_over_m_in_order(n, m):
    idx = perturb_indices(n, "drop", m, seed=3)
    assert len(idx) == max(1, n // m)
    assert idx == sorted(idx) and len(set(idx)) == len(idx) and all(0 <= i < n for i in idx)


@pytest.mark.parametrize("n", [2, 8, 16, 20, 33])
@pytest.mark.parametrize("m", MAGNITUDES)
def test_group_size_and_reverse(n, m):
    groups = contiguous_groups(n, m)
    g = max(1, n // m)
    assert all(len(x) == g for x in groups[:-1]) and 1 <= len(groups[-1]) <= g
    assert [i for x in groups for i in x] == list(range(n))
    rev = perturb_indices(n, "reverse", m)
    assert rev == [i for x in reversed(groups) for i in x]
    shuf = perturb_indices(n, "shuffle", m, seed=1)
    assert sorted(shuf) == list(range(n))
    # groups stay contiguous blocks inside the shuffled order
    pos = 0
    blocks = []
    while pos < n:
        block = next(x for x in groups if x[0] == shuf[pos])
        assert shuf[pos:pos + len(block)] == block
        blocks.append(block)
        pos += len(block)
    assert len(blocks) == len(groups)


def test_magnitude_examples():
    # 16 clips: r2 reverses two halves, r16 reverses every clip; drop keeps 8 / 1
    assert perturb_indices(16, "reverse", 2) == list(range(8, 16)) + list(range(8))
    assert perturb_indices(16, "reverse", 16) == list(range(15, -1, -1))
    assert len(perturb_indices(16, "drop", 2, seed=0)) == 8
    assert len(perturb_indices(16, "drop", 16, seed=0)) == 1
    # fewer units than the magnitude: every unit is its own group
    assert perturb_indices(4, "reverse", 8) == [3, 2, 1, 0]


@pytest.mark.parametrize("kind", ["drop", "shuffle"])
def test_deterministic_under_seed(kind):
    a = [perturb_indices(32, kind, 4, seed=s) for s in range(6)]
    b = [perturb_indices(32, kind, 4, seed=s) for s in range(6)]
    assert a == b
    assert len({tuple(x) for x in a}) > 1  # and the seed matters


def test_avoid_identity_shuffle():
    for s in range(30):
        assert perturb_indices(4, "shuffle", 2, seed=s, avoid_identity=True) != [0, 1, 2, 3]
    assert any(perturb_indices(4, "shuffle", 2, seed=s) == [0, 1, 2, 3] for s in range(30))


def test_caption_list_and_frames():
    caps = [f"clip {i}" for i in range(8)]
    out, idx = perturb_sequence(caps, "reverse", 4)
    assert out == ["clip 6", "clip 7", "clip 4", "clip 5", "clip 2", "clip 3", "clip 0", "clip 1"]
    frames = np.arange(16)[:, None, None, None] * np.ones((16, 2, 2, 3), dtype=np.int64)
    new, fidx = perturb_frames(frames, "reverse", 16, frames_per_clip=2)
    assert fidx == [14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1]
    assert (new[:, 0, 0, 0] == np.array(fidx)).all()
    dropped, didx = perturb_frames(frames, "drop", 2, seed=5, frames_per_clip=2)
    assert len(dropped) == 8 and all(didx[i] + 1 == didx[i + 1] for i in range(0, 8, 2))
    with pytest.raises(ValueError, match="clips of 2"):
        perturb_frames(frames[:5], "drop", 2, frames_per_clip=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        perturb_indices(4, "rotate", 2)
    with pytest.raises(ValueError, match="magnitude"):
        perturb_indices(4, "drop", 0)
