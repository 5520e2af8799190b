"""RRPO phrase ids: which completion tokens belong to the sub-sequences where chosen and rejected differ.

Two sources, as in the official code (``pritamqu/RRPO`` @ a9055737):

* **Tagged pairs** (LLaVA-Video / LongVU path, ``train_llavavideo.py``): ``answer_masked`` / ``pred_masked``
  wrap each differing concept in ``<MASK> ... </MASK>``; spans are numbered 1..N in order. The official code
  tokenises the tagged text with the tags added as special tokens, strips them, and zeroes all ids when the
  stripped tokens differ from the untagged tokenisation in a way it cannot attribute (tags can change BPE
  merges). Here the tags are stripped at the *character* level and a token gets span ``i``'s id when its
  character offsets overlap a non-space character of span ``i`` (fast tokenizer offsets). The token sequence
  is then exactly the untagged tokenisation, so no sample is lost to changed merges; a mismatch between the
  stripped tagged text and the untagged text is an error naming the row.
* **Untagged pairs** (VideoChat2 path, ``videochat2/diff_lib.py``): ``difflib.SequenceMatcher`` on the two
  token-id sequences; each ``replace`` opcode (non-empty on both sides) gets the next id on both sides; pure
  insertions and deletions get no reward (id 0).

Pairs whose chosen *or* rejected side ends up with no phrase token are filtered (their preference term would be
the constant ``log 2``); :func:`filter_pairs` counts them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

OPEN_TAG, CLOSE_TAG = "<MASK>", "</MASK>"
_TAG_RE = re.compile(r"<MASK>|</MASK>")


class PhraseTagError(ValueError):
    """A ``<MASK>``-tagged text is malformed (nested/unclosed tags, or differs from its untagged text)."""


def strip_tags(tagged: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove ``<MASK>``/``</MASK>``; return the plain text and the ``[start, end)`` character span of each phrase."""
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    pos, length, start = 0, 0, None
    for m in _TAG_RE.finditer(tagged):
        chunk = tagged[pos:m.start()]
        plain.append(chunk)
        length += len(chunk)
        if m.group() == OPEN_TAG:
            if start is not None:
                raise PhraseTagError(f"nested {OPEN_TAG} at character {m.start()}")
            start = length
        else:
            if start is None:
                raise PhraseTagError(f"{CLOSE_TAG} without {OPEN_TAG} at character {m.start()}")
            spans.append((start, length))
            start = None
        pos = m.end()
    if start is not None:
        raise PhraseTagError(f"unclosed {OPEN_TAG}")
    plain.append(tagged[pos:])
    return "".join(plain), spans


def phrase_ids_from_tags(tokenizer, tagged: str, untagged: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the untagged text and the phrase id of each token (0 outside every ``<MASK>`` span).

    ``untagged`` (the dataset's ``answer``/``pred``), when given, must equal the tagged text with the tags
    removed; whitespace around tags is the only tolerated difference (``"a <MASK> red </MASK> ball"``).
    """
    plain, spans = strip_tags(tagged)
    if untagged is not None and plain != untagged:
        squeezed = re.sub(r"\s+", " ", plain).strip()
        if squeezed != re.sub(r"\s+", " ", untagged).strip():
            raise PhraseTagError(f"tagged text without tags {plain!r} differs from the untagged text {untagged!r}")
        plain, spans = strip_tags(_normalise_tag_spaces(tagged))
        if plain != untagged:
            raise PhraseTagError(f"tagged text without tags {plain!r} differs from the untagged text {untagged!r}")
    enc = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)
    ids = []
    for a, b in enc["offset_mapping"]:
        pid = 0
        for i, (s, e) in enumerate(spans, 1):
            if a < e and b > s and plain[max(a, s):min(b, e)].strip():
                pid = i
                break
        ids.append(pid)
    return list(enc["input_ids"]), ids


def _normalise_tag_spaces(tagged: str) -> str:
    """``"a <MASK> red </MASK> ball"`` → ``"a <MASK>red</MASK> ball"`` (spaces inside tags moved outside)."""
    out = re.sub(r"<MASK>\s+", " <MASK>", tagged)
    out = re.sub(r"\s+</MASK>", "</MASK> ", out)
    return re.sub(r" {2,}", " ", out).strip()


def phrase_ids_from_diff(chosen: Sequence[int], rejected: Sequence[int]) -> tuple[list[int], list[int]]:
    """Phrase ids for two token sequences from ``difflib`` opcodes: ``replace`` blocks are numbered 1..N on both
    sides in order; ``equal``, ``insert`` and ``delete`` blocks get 0."""
    a, b = list(chosen), list(rejected)
    ids_a, ids_b = [0] * len(a), [0] * len(b)
    n = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "replace":
            n += 1
            ids_a[i1:i2] = [n] * (i2 - i1)
            ids_b[j1:j2] = [n] * (j2 - j1)
    return ids_a, ids_b


@dataclass
class PhraseFilterReport:
    """How many RRPO pairs were kept and why the others were dropped (row index → reason)."""

    kept: int = 0
    dropped: dict[int, str] = field(default_factory=dict)


def has_phrases(ids: Sequence[int]) -> bool:
    return any(i > 0 for i in ids)


def filter_pairs(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
) -> tuple[list[int], PhraseFilterReport]:
    """Indices of the ``(chosen_ids, rejected_ids)`` phrase-id pairs to keep: both sides need a phrase token."""
    report = PhraseFilterReport()
    keep = []
    for i, (c, r) in enumerate(pairs):
        if not has_phrases(c):
            report.dropped[i] = "chosen response has no phrase token"
        elif not has_phrases(r):
            report.dropped[i] = "rejected response has no phrase token"
        else:
            keep.append(i)
    report.kept = len(keep)
    return keep, report
