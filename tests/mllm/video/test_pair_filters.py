"""TEMPLE pair filters (convert_to_swift.py): N/A, substring, drop length, shuffle/reverse length ratio."""

import pytest

from mmalign.mllm.video.temple_pairs import PairFilter, filter_reason

F = PairFilter()


@pytest.mark.parametrize("chosen,rejected,kind,expected", [
    ("The ball moves left then up.", "N/A", "reverse", "n/a generation"),
    ("", "something", "shuffle", "n/a generation"),
    ("moves left", "it moves left quickly", "reverse", "chosen is a substring of rejected"),
    ("left", "left", "shuffle", "chosen is a substring of rejected"),
    ("a long caption of many events", "short one", "drop", None),
    ("short", "a much longer caption", "drop", "drop: rejected not shorter than chosen"),
    ("same len", "diff len", "drop", "drop: rejected not shorter than chosen"),
    ("left", "right", "reverse", None),  # ratio 1.25
    ("up", "down", "reverse", "reverse: length ratio above 1.5"),  # ratio 2
    ("a b c d e f", "x y", "shuffle", "shuffle: length ratio above 1.5"),
    ("a b c d e", "x y z w", "shuffle", None),  # 9 / 7 = 1.29
])
def test_filter_reason(chosen, rejected, kind, expected):
    assert filter_reason(chosen, rejected, kind, F) == expected


def test_ratio_filter_can_be_disabled_and_boundary_kept():
    assert filter_reason("up", "down", "reverse", PairFilter(max_length_ratio=None)) is None
    assert filter_reason("abcdef", "ghijklmno", "reverse", F) is None  # exactly 1.5 is kept
    assert filter_reason("abcdef", "ghijklmnop", "reverse", F) is not None
