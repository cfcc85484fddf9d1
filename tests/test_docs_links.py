"""Every in-page link of README.md and docs/*.md points at a heading that exists.

The docs grow a section per benchmark run and rename the older ones ("Reading the table at
the top" becomes "Reading the session N table"), which silently breaks links written
against the old heading. GitHub makes a heading's anchor by lower-casing it, dropping
every character that is not a letter, digit, underscore, hyphen or space, and turning
spaces into hyphens.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading.

    >>> github_anchor("Reading the table at the top (session 23, 08:39 UTC)")
    'reading-the-table-at-the-top-session-23-0839-utc'
    """
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def anchors_of(document: pathlib.Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", document.read_text(), flags=re.MULTILINE)
    return {github_anchor(heading) for heading in headings}


def test_the_anchor_rule():
    assert github_anchor("Reading the table at the top (session 23, 08:39 UTC)") == (
        "reading-the-table-at-the-top-session-23-0839-utc"
    )
    assert github_anchor('The table: "The session 22 run" below') == (
        "the-table-the-session-22-run-below"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_anchor_link_resolves(document):
    broken = []
    for number, line in enumerate(document.read_text().splitlines(), 1):
        for target, anchor in LINK.findall(line):
            linked = (document.parent / target) if target else document
            if not linked.exists():
                broken.append(f"line {number}: {target} does not exist")
            elif anchor not in anchors_of(linked):
                broken.append(f"line {number}: {target}#{anchor}: no such heading")
    assert not broken, f"{document.name}: " + "; ".join(broken)
