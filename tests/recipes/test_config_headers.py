"""Shipped config headers say what a config is for and how to run it; dated measurements live in bench/RESULTS.md
(issue 23 item 8), where they are kept with their dates and commands."""

from __future__ import annotations

import re

from tests.helpers import REPO

DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def test_no_shipped_config_carries_a_dated_measurement():
    for path in sorted((REPO / "recipes" / "configs").glob("*/*.yaml")):
        dated = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#") and DATE.search(line)]
        assert dated == [], f"{path.relative_to(REPO)}: move dated measurements to bench/RESULTS.md: {dated[:2]}"


def test_every_pointer_to_results_names_a_section_that_exists():
    results = (REPO / "bench" / "RESULTS.md").read_text()
    for path in sorted((REPO / "recipes" / "configs").glob("*/*.yaml")):
        for section in re.findall(r'bench/RESULTS\.md "([^"]+)"', path.read_text()):
            assert f"## {section}" in results, f"{path.name}: bench/RESULTS.md has no section '{section}'"
        if "Shipped toy configs" in path.read_text():
            assert f"`recipes/configs/{path.parent.name}/{path.name}`" in results, path.name
