"""README.md and docs/*.md render as written: every table is one table (a blank line inside one
splits it and its later rows render as text), with a header, a separator and rows of the header's
width; every link to a page or a heading leads somewhere; README stays a five-minute read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")
README_MAX_LINES = 160


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


def outside_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", outside_fences(page.read_text()), re.MULTILINE)}


def name(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_table_is_whole(page):
    for line, rows in tables(page.read_text()):
        where = f"{name(page)}:{line}"
        assert len(rows) >= 3, f"{where}: a table needs a header, a separator and rows"
        assert SEPARATOR.match(rows[1].strip()), f"{where}: rows without a header (split by a blank line?)"
        width = cells(rows[0])
        for offset, row in enumerate(rows):
            assert cells(row) == width, f"{name(page)}:{line + offset}: {cells(row)} cells, the header has {width}"


def test_the_check_finds_a_split_table():
    broken = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n"
    (_, first), (line, orphan) = tables(broken)
    assert len(first) == 3 and line == 5 and not SEPARATOR.match(orphan[0])


def dangling_links(page: Path) -> list[str]:
    """Relative links of `page` to a file that does not exist, or to a #fragment that is no
    heading of their file: "target: why" each."""
    found = []
    for target in re.findall(r"\]\(([^)\s]+)\)", outside_fences(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            found.append(f"{target}: no such file")
        elif fragment and fragment not in anchors_of(linked):
            found.append(f"{target}: no such heading")
    return found


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_link_leads_to_a_file_and_heading(page):
    """Relative links name an existing file of the checkout, and a #fragment a heading of it."""
    assert not dangling_links(page), f"{name(page)}: {dangling_links(page)}"


def test_the_link_check_finds_a_dangling_link(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md) [there](other.md#other-page)"
                    " [off](other.md#title) [web](https://example.org)\n")
    assert dangling_links(page) == ["#nothing: no such heading", "missing.md: no such file",
                                    "other.md#title: no such heading"]


def test_every_docs_page_is_reachable_from_the_readme():
    """Each docs/ page is linked from README or from a page README links to."""
    seen, todo = set(), [README]
    while todo:
        page = todo.pop()
        seen.add(page)
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            linked = (page.parent / target).resolve()
            if linked.is_file() and linked not in seen:
                todo.append(linked)
    assert set(PAGES) <= seen, sorted(name(p) for p in set(PAGES) - seen)


def test_the_readme_is_a_five_minute_read():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_hand_types_suggested_for_the_demo_work_on_every_demo_sequence():
    """A fixed --hand-type refuses a sequence without that hand ('both': without either)."""
    from interhand_prep.stages.process import DEMO_SPEC

    have = {s.name: ({"right", "left"} if s.hands == "both" else {s.hands}) for s in DEMO_SPEC.sequences}
    text = "\n".join(page.read_text() for page in PAGES)
    suggested = re.findall(r"interhand-prep demo[^`\n]*--hand-type (\w+)", text)
    assert suggested
    for hand_type in suggested:
        needs = {"right": {"right"}, "left": {"left"}, "both": {"right", "left"}, "auto": set()}[hand_type]
        assert all(needs <= hands for hands in have.values()), f"docs suggest demo --hand-type {hand_type}"
