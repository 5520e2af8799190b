"""Toy world: caption grammar, split, renderer and judge (deterministic, and the judge agrees with the renderer)."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.toy import captions as C
from mmalign.toy.judge import best_caption, judge, judge_terms, weighted_score
from mmalign.toy.render import render, render_batch


@pytest.fixture(scope="module")
def world():
    caps = C.all_captions() * 3
    seeds = list(range(len(caps)))
    return caps, render_batch(caps, seeds)


def test_grammar_and_parse_roundtrip():
    caps = C.all_captions()
    assert len(caps) == len(set(caps)) == 180
    for text in caps:
        assert C.parse_caption(text).text() == text
    assert C.parse_caption("  A Large RED circle on the left ").text() == "a large red circle on the left"
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        C.parse_caption("a small pink circle on the left")
    with pytest.raises(ValueError, match="unknown position"):
        C.parse_caption("a small red circle somewhere else")
    with pytest.raises(ValueError, match="not a toy caption"):
        C.parse_caption("red circle")


def test_split_is_deterministic_disjoint_and_covers_attributes():
    train, heldout = C.caption_split()
    assert (train, heldout) == C.caption_split()
    assert len(train) == 72 and len(heldout) == 108 and not set(train) & set(heldout)
    assert set(train) | set(heldout) == set(C.all_captions())
    for attr in C.ATTRIBUTES:
        assert {getattr(C.parse_caption(t), attr) for t in train} == set(C.CHOICES[attr])


def test_perturb_changes_exactly_one_attribute():
    rng = np.random.default_rng(0)
    for text in C.all_captions()[:30]:
        for attr in C.ATTRIBUTES:
            new = C.parse_caption(C.perturb_caption(text, attr, rng))
            old = C.parse_caption(text)
            assert [a for a in C.ATTRIBUTES if getattr(new, a) != getattr(old, a)] == [attr]


def test_renderer_is_deterministic_and_seed_dependent():
    a, b = render("a large red circle on the left", 3), render("a large red circle on the left", 3)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render("a large red circle on the left", 4))
    # the shape sits where the caption says: left half holds the red pixels
    red = (a[..., 0] > 150) & (a[..., 1] < 100)
    assert red[:, :32].sum() > 10 * red[:, 32:].sum()


def test_judge_agrees_with_renderer(world):
    caps, images = world
    own = judge(images, caps)
    assert own.dtype == torch.float32 and own.shape == (len(caps),)
    assert float(own.mean()) > 0.95 and float(own.quantile(0.05)) > 0.9 and float(own.min()) >= 0
    rng = np.random.default_rng(1)
    # one wrong attribute: the geometric mean of the terms drops to ~0.05-0.35 and is always below the own caption
    for attr, max_mean in (("color", 0.1), ("shape", 0.25), ("size", 0.2), ("position", 0.4)):
        other = judge(images, [C.perturb_caption(c, attr, rng) for c in caps])
        assert float(other.mean()) < max_mean, attr
        assert float((other < own - 0.3).float().mean()) > 0.97, attr
    random_caption = judge(images, [C.all_captions()[i] for i in rng.integers(180, size=len(caps))])
    assert float(random_caption.mean()) < 0.06
    np.testing.assert_array_equal(judge(images, caps).numpy(), own.numpy())  # deterministic


def test_judge_input_types_agree(world):
    caps, images = world
    caps, images = caps[:20], images[:20]
    ref = judge(images, caps)
    pil = judge([Image.fromarray(im) for im in images], caps)
    chw = judge(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, caps)
    torch.testing.assert_close(pil, ref)
    torch.testing.assert_close(chw, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="20 images but 3 captions"):
        judge(images, caps[:3])


def test_blank_and_noise_images_score_zero():
    blank = np.full((2, 64, 64, 3), 230, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    assert float(judge(blank, "a small red circle on the left").max()) == 0.0
    assert float(judge(noise, "a small red circle on the left").max()) < 0.01


def test_best_caption_recovers_the_render_caption(world):
    caps, images = world
    found = best_caption(images[:180], C.all_captions())
    assert np.mean([f == c for f, c in zip(found, caps[:180])]) > 0.95


def test_weighted_score_is_a_convex_mix(world):
    caps, images = world
    terms = judge_terms(images[:10], caps[:10])
    w = {"color": 0.7, "shape": 0.1, "position": 0.1, "size": 0.1}
    expected = 0.7 * terms["color"] + 0.1 * (terms["shape"] + terms["position"] + terms["size"])
    torch.testing.assert_close(weighted_score(terms, w), expected)
    product = terms["color"] * terms["shape"] * terms["position"] * terms["size"]
    torch.testing.assert_close(judge(images[:10], caps[:10]), product ** 0.25)
