"""bench/results_section.replace_section: a benchmark rewrites only its own section of RESULTS.md."""

from __future__ import annotations

import re
import sys

from tests.helpers import REPO

sys.path.insert(0, str(REPO))

from bench.results_section import replace_section  # noqa: E402


def test_replace_keeps_other_sections_and_appends_new_ones(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n<!-- section: a (x.py) -->\nold a\n<!-- end section: a -->\n\n"
                    "<!-- section: b -->\nkeep b\n<!-- end section: b -->\n")
    replace_section(path, "a", "new a\n| t |", title="(x.py)")
    replace_section(path, "c", "fresh c")
    text = path.read_text()
    assert "old a" not in text and text.count("<!-- section: a (x.py) -->") == 1
    assert text.index("new a") < text.index("keep b") < text.index("fresh c")
    assert text.startswith("# Results\n\n<!-- section: a (x.py) -->\nnew a\n| t |\n<!-- end section: a -->\n")
    replace_section(path, "c", "fresh c again")
    assert path.read_text().count("fresh c") == 1 and "fresh c again" in path.read_text()


def test_shipped_results_file_has_matched_sections():
    text = (REPO / "bench" / "RESULTS.md").read_text()
    for name in ("diffusion_step", "toy_quality", "toy_quality_ablations", "toy_quality_findings", "ppd_toy",
                 "ppd_opposed_users", "toy_video"):
        assert len(re.findall(rf"<!-- section: {name}\b", text)) == 1, name  # \b: toy_quality != toy_quality_x
        assert text.count(f"<!-- end section: {name} -->") == 1, name
