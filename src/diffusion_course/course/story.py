"""What a student reads in a chapter: the story, apart from its measurements.

A chapter is a story followed by a collapsed appendix. The story is every markdown cell that is
not collapsed; what is collapsed a student opens when they want it:

* a **collapsed section**: a heading cell with ``"jp-MarkdownHeadingCollapsed": true`` in its
  metadata (JupyterLab's own flag: the section opens folded, up to the next heading of the
  same or a higher level; Colab reads the heading's id from the notebook's
  ``colab.collapsed_sections``, and the website folds the section into a toggle). The
  chapter's "Appendix: measurements and details" is one;
* a ``<details>`` block inside a markdown cell (closed unless it says ``open``);
* an exercise's solution cells (tag ``solution``), folded everywhere, see ``fold``.

Code cells a student need not read (asserts, records) are **folded**: their source hidden in
JupyterLab (``jupyter.source_hidden``), Colab (``cellView: form``) and on the website (tag
``hide-input``), their output shown. ``fold(cell)`` sets all three.

``story_words``, ``story_numbers`` and ``forward_references`` measure a chapter the way the
course's tests hold it: at most ``MAX_STORY_WORDS`` words and ``MAX_STORY_NUMBERS`` numbers in
the story, no pointer to a later chapter outside a primer, the recap or the appendix.

    python -m diffusion_course.course.story       # the table, one row per chapter
"""
from __future__ import annotations

import re
import sys

import nbformat

from .editions import HIDE_INPUT, is_solution

MAX_STORY_WORDS = 3000
MAX_STORY_NUMBERS = 15
MAX_KNOBS = 20
COLLAPSED = "jp-MarkdownHeadingCollapsed"

HEADING = re.compile(r"^(#{1,6})\s+(.*)", re.M)
DETAILS = re.compile(r"<details(?![^>]*\bopen\b)[^>]*>.*?</details>", re.S | re.I)
# A paragraph that introduces a later chapter's idea in place may name that chapter.
PRIMER = re.compile(r"^\s*(>\s*)?\*\*Primer\b", re.I)
# Sections where a pointer forward is the point: the recap and "where next".
CLOSING = re.compile(r"recap|what to remember|what(?:'|’)s next|where next|going further", re.I)
CHAPTER_REF = re.compile(r"\bchapters?\s+((?:\d\d(?:\s*(?:,|and|or|to|-|–)\s*)?)+)", re.I)


def _source(cell) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def heading_level(cell) -> int | None:
    """The level of the heading a markdown cell starts with (``## x`` is 2), else None."""
    if cell["cell_type"] != "markdown":
        return None
    match = HEADING.match(_source(cell).lstrip())
    return len(match.group(1)) if match else None


def collapsed_sections(nb) -> list[tuple[int, int]]:
    """(heading index, end index) of each collapsed section: its cells are heading..end-1."""
    sections, start, level = [], None, None
    for i, cell in enumerate(nb["cells"]):
        here = heading_level(cell)
        if here is not None and start is not None and here <= level:
            sections.append((start, i))
            start = None
        if here is not None and start is None and cell["metadata"].get(COLLAPSED):
            start, level = i, here
    if start is not None:
        sections.append((start, len(nb["cells"])))
    return sections


def collapsed(nb) -> list[bool]:
    """For each cell: is it folded away, under a collapsed heading or a solution? (The heading
    cell itself stays in view, so it holds its heading line only.)"""
    flags = [is_solution(cell) for cell in nb["cells"]]
    for start, end in collapsed_sections(nb):
        flags[start + 1:end] = [True] * (end - start - 1)
    return flags


def story_cells(nb) -> list[tuple[int, str]]:
    """(index, text) of each markdown cell of the story, ``<details>`` blocks removed."""
    return [(i, DETAILS.sub("", _source(cell)))
            for i, (cell, hidden) in enumerate(zip(nb["cells"], collapsed(nb)))
            if cell["cell_type"] == "markdown" and not hidden]


def _prose(text: str) -> str:
    """Words a student reads: without maths, code, HTML tags, link targets and the badge."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$", " ", text, flags=re.S)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)           # images (the Colab badge)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"<[^>]+>", " ", text)


def story_words(nb) -> int:
    """Words of the story: its whitespace-separated tokens, maths and code included (a
    formula costs a reader time too), HTML tags and link targets not."""
    return sum(len(re.sub(r"<[^>]+>|\]\([^)]*\)", " ", text).split()) for _, text in story_cells(nb))


NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:[,_\u202f\u2009 ]\d{3}(?!\d))*(?:\.\d+)?(?:e[-+]?\d+)?(?:\s*%)?")
# Numbers that are names, not measurements: chapter, section, exercise and equation numbers,
# the year of a citation, a model's name.
NAME_NUMBERS = re.compile(
    r"\b(?:chapters?|sections?|exercises?|cells?|figures?|steps? \d+ of|part)\s+[\d.,\s–-]*(?:and\s+\d[\d.]*)?"
    r"|\bet al\.?,?\s*\(?\d{4}[a-z]?\)?|\(\d{4}[a-z]?\)|\b(?:19|20)\d\d\b"
    r"|\b[A-Za-z]+-\d+\b|\b\d+[A-Za-z]\w*", re.I)


def story_numbers(nb) -> list[str]:
    """The numbers in the story's prose (outside maths, code, headings, the run-time table of
    the first cell, and numbers that name things: chapters, sections, citation years)."""
    found = []
    for i, text in story_cells(nb):
        lines = [line for line in text.splitlines()
                 if not HEADING.match(line) and not (i == 0 and line.lstrip().startswith("|"))]
        prose = NAME_NUMBERS.sub(" ", _prose("\n".join(lines)))
        found += [m.group(0).strip() for m in NUMBER.finditer(prose)]
    return found


def forward_references(nb, chapter: str) -> list[str]:
    """Mentions of a later chapter in the story outside a primer paragraph or the closing
    recap/next section: "cell 12: chapter 08"."""
    found, in_closing = [], False
    for i, text in story_cells(nb):
        title = HEADING.match(text.lstrip())
        if title and len(title.group(1)) <= 2:
            in_closing = bool(CLOSING.search(title.group(2)))
        if in_closing:
            continue
        for paragraph in re.split(r"\n\s*\n", text):
            if PRIMER.match(paragraph):
                continue
            for match in CHAPTER_REF.finditer(_prose(paragraph)):
                later = [n for n in re.findall(r"\d\d", match.group(1)) if n > chapter]
                found += [f"cell {i}: chapter {n}" for n in later]
    return found


def knobs(nb) -> list[str]:
    """The knobs of the chapter's parameters cell (``NAME = None  # ...``; PROFILE included)."""
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    return re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", _source(cell), re.M)


def fold(cell) -> None:
    """Hide a code cell's source (its output stays) in JupyterLab, Colab and on the website."""
    meta = cell["metadata"]
    meta.setdefault("jupyter", {})["source_hidden"] = True
    meta["cellView"] = "form"
    tags = meta.setdefault("tags", [])
    if HIDE_INPUT not in tags:
        tags.append(HIDE_INPUT)


def is_folded(cell) -> bool:
    meta = cell["metadata"]
    return (HIDE_INPUT in meta.get("tags", []) and meta.get("jupyter", {}).get("source_hidden") is True
            and meta.get("cellView") == "form")


SOLUTION_DETAILS = "<details>\n<summary>Solution</summary>\n\n"


def fold_solution(cell) -> None:
    """Fold an exercise's solution everywhere a student opens the full edition: a code cell's
    source and output hidden (JupyterLab, Colab's form view), a markdown cell's text inside a
    closed ``<details>`` block (rendered closed by JupyterLab, Colab and the website)."""
    if cell["cell_type"] == "code":
        fold(cell)
        cell["metadata"]["jupyter"]["outputs_hidden"] = True
        cell["metadata"]["collapsed"] = True      # the older flag, which JupyterLab writes beside it
    elif not _source(cell).lstrip().startswith("<details"):
        cell["source"] = SOLUTION_DETAILS + _source(cell).strip() + "\n\n</details>"


def is_folded_solution(cell) -> bool:
    if cell["cell_type"] == "code":
        meta = cell["metadata"]
        return is_folded(cell) and meta["jupyter"].get("outputs_hidden") is True and meta.get("collapsed") is True
    return bool(DETAILS.fullmatch(_source(cell).strip()))


def table(paths) -> str:
    rows = ["| chapter | story words | numbers | knobs | forward refs |", "|---|---:|---:|---:|---:|"]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        chapter = path.stem[:2]
        rows.append(f"| {path.stem} | {story_words(nb)} | {len(story_numbers(nb))} | "
                    f"{len(knobs(nb))} | {len(forward_references(nb, chapter))} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from .runner import list_chapters

    chosen = sys.argv[1:]
    print(table([p for p in list_chapters() if not chosen or p.stem[:2] in chosen]))
