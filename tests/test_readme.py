"""README renders as written: every table is one table (a blank line inside one splits it and its
later rows render as text), with a header, a separator and rows of the header's width."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


def cells(row: str) -> int:
    """Cells of a Markdown table row: pipes outside inline code, less the outer two."""
    outside_code = re.sub(r"`[^`]*`", "", row.strip())
    return outside_code.count("|") - 1


def tables(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, rows) of every block of consecutive table rows outside code fences."""
    blocks, current, fenced = [], None, False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
        is_row = not fenced and line.lstrip().startswith("|")
        if is_row:
            if current is None:
                current = (number, [])
                blocks.append(current)
            current[1].append(line)
        else:
            current = None
    return blocks


def test_every_table_is_whole():
    found = tables(README.read_text())
    assert len(found) >= 5
    for line, rows in found:
        assert len(rows) >= 3, f"README.md:{line}: a table needs a header, a separator and rows"
        assert SEPARATOR.match(rows[1].strip()), f"README.md:{line}: rows without a header (split by a blank line?)"
        width = cells(rows[0])
        for offset, row in enumerate(rows):
            assert cells(row) == width, f"README.md:{line + offset}: {cells(row)} cells, the header has {width}"


def test_the_check_finds_a_split_table():
    broken = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n"
    (_, first), (line, orphan) = tables(broken)
    assert len(first) == 3 and line == 5 and not SEPARATOR.match(orphan[0])


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_inside_the_readme_has_its_heading():
    text = README.read_text()
    headings = {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert anchors and anchors <= headings, sorted(anchors - headings)


def test_the_hand_types_suggested_for_the_demo_work_on_every_demo_sequence():
    """A fixed --hand-type refuses a sequence without that hand ('both': without either)."""
    from interhand_prep.stages.process import DEMO_SPEC

    have = {s.name: ({"right", "left"} if s.hands == "both" else {s.hands}) for s in DEMO_SPEC.sequences}
    suggested = re.findall(r"interhand-prep demo[^`\n]*--hand-type (\w+)", README.read_text())
    assert suggested
    for hand_type in suggested:
        needs = {"right": {"right"}, "left": {"left"}, "both": {"right", "left"}, "auto": set()}[hand_type]
        assert all(needs <= hands for hands in have.values()), f"README suggests demo --hand-type {hand_type}"
