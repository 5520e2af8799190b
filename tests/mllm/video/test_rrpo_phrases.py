"""RRPO phrase ids: <MASK>-tagged pairs, difflib replacements only, and the zero-phrase filter."""

import pytest

from mmalign.mllm.video.rrpo_phrases import (
    PhraseTagError,
    filter_pairs,
    phrase_ids_from_diff,
    phrase_ids_from_tags,
    strip_tags,
)
from mmalign.testing.tiny_vlm import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_strip_tags_spans():
    plain, spans = strip_tags("a <MASK>red</MASK> circle moves <MASK>to the left</MASK>.")
    assert plain == "a red circle moves to the left."
    assert [plain[s:e] for s, e in spans] == ["red", "to the left"]
    for bad in ("<MASK>a", "a</MASK>", "<MASK><MASK>a</MASK></MASK>"):
        with pytest.raises(PhraseTagError):
            strip_tags(bad)


def test_tagged_ids_cover_exactly_the_phrases(tok):
    tagged = "The <MASK>blue</MASK> square moves <MASK>left</MASK> quickly."
    ids, phrase = phrase_ids_from_tags(tok, tagged, "The blue square moves left quickly.")
    assert ids == tok("The blue square moves left quickly.", add_special_tokens=False)["input_ids"]
    decoded = {k: tok.decode([i for i, p in zip(ids, phrase) if p == k]).strip() for k in (1, 2)}
    assert decoded == {1: "blue", 2: "left"}
    assert tok.decode([i for i, p in zip(ids, phrase) if p == 0]).replace(" ", "") == "Thesquaremovesquickly."


def test_tag_spacing_tolerated_and_mismatch_rejected(tok):
    ids, phrase = phrase_ids_from_tags(tok, "a <MASK> red </MASK> ball", "a red ball")
    assert tok.decode([i for i, p in zip(ids, phrase) if p == 1]).strip() == "red"
    with pytest.raises(PhraseTagError, match="differs"):
        phrase_ids_from_tags(tok, "a <MASK>red</MASK> ball", "a blue ball")


def test_diff_replacements_only():
    chosen = [1, 2, 3, 4, 5, 6, 7]
    rejected = [1, 9, 9, 4, 5, 7, 8]  # replace [2,3]->[9,9]; delete 6; insert 8
    a, b = phrase_ids_from_diff(chosen, rejected)
    assert a == [0, 1, 1, 0, 0, 0, 0]
    assert b == [0, 1, 1, 0, 0, 0, 0]
    a, b = phrase_ids_from_diff([1, 2, 3, 4], [5, 2, 3, 6])
    assert a == [1, 0, 0, 2] and b == [1, 0, 0, 2]
    assert phrase_ids_from_diff([1, 2], [1, 2, 3]) == ([0, 0], [0, 0, 0])  # insertion only: no reward


def test_filter_drops_pairs_without_phrases():
    pairs = [([0, 1], [1, 0]), ([0, 0], [1]), ([2], [0, 0]), ([1], [1])]
    keep, report = filter_pairs(pairs)
    assert keep == [0, 3] and report.kept == 2
    assert report.dropped == {1: "chosen response has no phrase token", 2: "rejected response has no phrase token"}
