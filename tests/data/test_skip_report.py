"""The one bad-row counter (mmalign.data.skipping.SkipCounter): data.on_bad_row and data.max_bad_fraction mean the
same in every family, and its report is what summary.json["data"]["skips"] holds."""

import pytest

from mmalign.data.errors import BadSample, TooManyBadSamplesError
from mmalign.data.skipping import SkipCounter


def _bad(i: int) -> BadSample:
    return BadSample(index=i, id=f"rows.jsonl:{i}", file="rows.jsonl", row=i, field="image", reason="corrupt")


def test_skip_counts_distinct_rows_and_stops_past_the_fraction():
    counter = SkipCounter(10, max_bad_fraction=0.2, what="rows")
    counter.update({"skipped": [_bad(1), _bad(1)]})  # the same row twice (two epochs): one bad row
    counter.skip("rows.jsonl:7", "rows.jsonl:7: video does not decode")
    report = counter.as_dict()
    assert (report["bad_samples"], report["skip_events"], report["bad_fraction"]) == (2, 3, pytest.approx(0.2))
    assert report["on_bad_row"] == "skip" and "video does not decode" in report["last_bad"]
    with pytest.raises(TooManyBadSamplesError, match=r"3 of 10 rows are unusable \(more than data.max_bad_fraction"):
        counter.add(_bad(3))


def test_error_policy_stops_at_the_first_bad_row():
    counter = SkipCounter(100, max_bad_fraction=0.5, on_bad_row="error")
    with pytest.raises(TooManyBadSamplesError, match=r"data.on_bad_row=error.*rows.jsonl.*image"):
        counter.add(_bad(4))


def test_rows_dropped_at_load_are_reported_not_counted():
    counter = SkipCounter(4, max_bad_fraction=0.0)
    counter.note_dropped(["rows.jsonl, line 2: missing field 'chosen'"])
    report = counter.as_dict()
    assert report["bad_samples"] == 0 and report["dropped_at_load"] == 1 and "chosen" in report["dropped_rows"][0]


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="data.on_bad_row must be one of skip, error"):
        SkipCounter(4, on_bad_row="raise")
