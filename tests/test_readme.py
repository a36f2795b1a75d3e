"""The README stays short and for students first, and the repository's own Markdown links work:
every relative link in README.md, CONTRIBUTING.md and docs/ names a file that exists."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKDOWN = [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")          # [text](target), images included


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text that point into the repository (no scheme, no
    bare #anchor), with any #anchor cut off."""
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_parser():
    text = "[a](notebooks/01.ipynb) [![b](x.svg)](https://c.org/d) [e](#f) [g](docs/n.md#h) [m](mailto:x@y)"
    assert relative_links(text) == ["notebooks/01.ipynb", "x.svg", "docs/n.md"]


def test_readme_is_under_160_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 160


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_points_at_a_file(doc):
    links = relative_links(doc.read_text(encoding="utf-8"))
    missing = [t for t in links if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_readme_starts_with_chapter_01_and_links_every_chapter():
    text = README.read_text(encoding="utf-8")
    start = text.split("## Start here", 1)[1].split("\n## ", 1)[0]
    assert "notebooks/01_" in start and "make lab" in start
    for chapter in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"](notebooks/{chapter.name})" in text, f"the chapter table links {chapter.name}"
