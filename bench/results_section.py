"""Replace one benchmark's section of ``bench/RESULTS.md`` in place (each benchmark edits only its own section).

A section is the text between ``<!-- section: NAME ... -->`` and ``<!-- end section: NAME -->``. Writing a section
that is not in the file yet appends it at the end.
"""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, name: str, body: str, *, title: str = "") -> None:
    """Write ``body`` as section ``name`` of ``path`` (markers included), replacing an earlier one."""
    begin = f"<!-- section: {name}{(' ' + title) if title else ''} -->"
    end = f"<!-- end section: {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"<!-- section: {re.escape(name)}\b[^>]*-->.*?<!-- end section: {re.escape(name)} -->\n?",
                         re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
