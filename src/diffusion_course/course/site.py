"""The course website: the chapters as the runner executed them, as static pages.

    python -m diffusion_course.course.site                    # build/ -> build/site/   (make site)
    python -m diffusion_course.course.site --build build/test --out /tmp/site

Reads what the runner wrote (``<build>/executed/*.ipynb``, ``<build>/metrics/*.json``) and
never executes a notebook again. Sphinx with MyST-NB renders each executed chapter (outputs,
figures, LaTeX maths, chapter 11's audio players) as one page; the home page is the README
(chapter table with run times per profile and Colab links, profiles), and the notation and
references of ``docs/`` are pages of their own.
Every page says which profile and run produced it and ends with the numbers the chapter
measured. Each exercise's solution is folded (a "Solution" toggle, closed until a reader opens
it), and each chapter links its student edition in Colab beside the full one. MathJax is served
from the site itself, so the pages work offline. The site is built in a scratch folder and moved
into place only when complete.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from ..data.paths import build_dir
from .colab import colab_url
from .editions import HIDE_INPUT, is_solution, student_path
from .story import HEADING, collapsed_sections
from .runner import REPO_ROOT, list_chapters

TITLE = "Diffusion models, from Gaussian noise to sound"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]+)\)")
CONF = f'''# Written by diffusion_course.course.site; the site is rebuilt from the executed notebooks.
project = {TITLE!r}
extensions = ["myst_nb", "sphinx-mathjax-offline"]
nb_execution_mode = "off"                 # the runner executed them; never run twice
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {{"show_toc_level": 2, "home_page_in_toc": True}}
html_last_updated_fmt = ""
exclude_patterns = ["_build"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
'''


def offline_badges(markdown: str) -> str:
    """The Colab badge as a plain link: its image lives on Google's servers."""
    return BADGE.sub(r"[Open in Colab](\1)", markdown)


def colab_links(first_cell: str, name: str) -> str:
    """The first cell's Colab badge as plain links to both editions of the chapter ``name``."""
    full, _, rest = offline_badges(first_cell).partition("\n")
    student = f"[Student edition in Colab]({colab_url(student_path(name))}) (exercises without solutions)"
    return f"{full} · {student}\n{rest}"


SOLUTION_OPEN = '<details class="solution">\n<summary>Solution</summary>'
SOLUTION_CLOSE = "</details>"


def fold_solutions(cells: list) -> list:
    """Each run of consecutive solution cells inside a ``<details>`` toggle (closed by default):
    a reader tries the exercise before seeing the answer. A markdown solution that is a
    ``<details>`` block already stays as it is."""
    folded, inside = [], False
    for cell in cells:
        if is_solution(cell):
            tags = cell.metadata.get("tags", [])
            cell.metadata["tags"] = [t for t in tags if t != HIDE_INPUT]   # the toggle hides it
        hidden = is_solution(cell) and not cell.source.lstrip().startswith("<details")
        if hidden != inside:
            inside = not inside
            folded.append(nbformat.v4.new_markdown_cell(SOLUTION_OPEN if inside else SOLUTION_CLOSE))
        folded.append(cell)
    if inside:
        folded.append(nbformat.v4.new_markdown_cell(SOLUTION_CLOSE))
    return folded


def fold_collapsed_sections(nb) -> None:
    """Each collapsed section (the chapter's measurements appendix) as its heading followed by a
    closed toggle holding the rest; headings inside become bold lines (a toggle holds no section)."""
    for start, end in reversed(collapsed_sections(nb)):
        for cell in nb.cells[start + 1:end]:
            if cell.cell_type == "markdown":
                cell.source = HEADING.sub(lambda m: f"**{m.group(2).strip()}**", cell.source)
        title = HEADING.match(nb.cells[start].source.lstrip()).group(2).strip()
        nb.cells[end:end] = [nbformat.v4.new_markdown_cell(SOLUTION_CLOSE)]
        nb.cells[start + 1:start + 1] = [nbformat.v4.new_markdown_cell(
            f'<details class="appendix">\n<summary>Show: {title}</summary>')]


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        shown = ", ".join(_format(v) for v in value[:8])
        return f"[{shown}{', ...' if len(value) > 8 else ''}]"
    return str(value).replace("|", "\\|")


def flatten(metrics: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested metrics as (dotted key, short value) rows."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, name + " / ")
        else:
            rows.append((name, _format(value)))
    return rows


def run_note(summary: dict, executed: Path) -> str:
    when = time.strftime("%Y-%m-%d", time.gmtime(executed.stat().st_mtime))
    chapter = summary["chapter"]
    return (f"```{{note}}\nThis page shows the **`{summary['profile']}` profile** run of "
            f"{when} (wall time {summary['wall_time_s']:.0f} s). Run it yourself with "
            f"`make course CHAPTERS={chapter[:2]} PROFILE=cpu`, or open it in Colab with the "
            f"link above. The numbers this run measured are [at the end of the page]"
            f"(#numbers-measured-in-this-run).\n```")


def metrics_cell(summary: dict) -> str:
    rows = flatten(summary.get("metrics", {}))
    table = "\n".join(f"| `{k}` | {v} |" for k, v in rows) or "| (none recorded) | |"
    return ("## Numbers measured in this run\n\n"
            f"Profile `{summary['profile']}`, parameters `{json.dumps(summary.get('parameters', {}))}`, "
            f"wall time {summary['wall_time_s']:.1f} s; from `build/metrics/{summary['chapter']}.json`.\n\n"
            "| quantity | value |\n|---|---|\n" + table)


def chapter_page(executed: Path, summary: dict):
    """The executed notebook with the run note, its metrics, offline links to both editions in
    Colab, and the solutions folded."""
    nb = nbformat.read(executed, as_version=4)
    nb.cells[0].source = colab_links(nb.cells[0].source, executed.name)
    nb.cells[1].metadata.setdefault("tags", []).append("remove-cell")   # the Colab-only setup
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(run_note(summary, executed)))
    fold_collapsed_sections(nb)
    nb.cells = fold_solutions(nb.cells)
    nb.cells.append(nbformat.v4.new_markdown_cell(metrics_cell(summary)))
    for cell in nb.cells:
        cell.pop("id", None)              # ids are not needed on a page; keeps inserted cells valid
    nb.nbformat_minor = 4
    return nb


DOCS = REPO_ROOT / "docs"


def doc_pages() -> list[Path]:
    """The Markdown pages of ``docs/`` (notation, references), each a page of the site."""
    return sorted(DOCS.glob("*.md"))


def home_page(chapters: list[str], profiles: set[str]) -> str:
    """The README, its chapter and docs/ links pointing at the pages, plus the table of contents."""
    readme = offline_badges((REPO_ROOT / "README.md").read_text())
    readme = re.sub(r"\]\(notebooks/([^)]+)\.ipynb\)", r"](\1.ipynb)", readme)
    readme = re.sub(r"\]\((?!https?://|#)([^)]+)\)", lambda m: _repo_link(m.group(1)), readme)
    title, _, body = readme.partition("\n")
    shown = ", ".join(f"`{p}`" for p in sorted(profiles))
    note = (f"```{{note}}\nThese pages show the chapters as executed in the {shown} profile: "
            "outputs, figures and measured numbers are that run's.\n```\n")
    pages = chapters + [doc.stem for doc in doc_pages()]
    toc = "\n```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n"
    return f"{title}\n\n{note}{body}\n{toc}"


def _repo_link(target: str) -> str:
    """A README link to a file of the repository: to its page where the site has one (a chapter,
    a docs/ page), else to the file on GitHub."""
    if target.endswith(".ipynb"):
        return f"]({target})"
    if REPO_ROOT / target in doc_pages():
        return f"]({Path(target).name})"
    from .colab import BRANCH, REPO_SLUG
    return f"](https://github.com/{REPO_SLUG}/blob/{BRANCH}/{target})"


def warnings_file(out: Path) -> Path:
    """Where ``build_site`` keeps Sphinx's warnings for the site at ``out`` (empty: none)."""
    return out.with_name(out.name + "-warnings.txt")


def build_site(build: Path, out: Path, quiet: bool = True) -> Path:
    """Render ``build``'s executed chapters into a static site at ``out``."""
    chapters = [p.stem for p in list_chapters()]
    missing = [c for c in chapters if not (build / "executed" / f"{c}.ipynb").exists()
               or not (build / "metrics" / f"{c}.json").exists()]
    if missing:
        raise FileNotFoundError(
            f"no executed run of {', '.join(missing)} in {build}: run `make course` (or "
            f"`make course PROFILE=ci` for a quick site) first; the site never executes notebooks")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".site.", dir=out.parent))
    try:
        src = scratch / "src"
        src.mkdir()
        (src / "conf.py").write_text(CONF)
        profiles = set()
        for chapter in chapters:
            summary = json.loads((build / "metrics" / f"{chapter}.json").read_text())
            profiles.add(summary["profile"])
            nbformat.write(chapter_page(build / "executed" / f"{chapter}.ipynb", summary),
                           src / f"{chapter}.ipynb")
        for doc in doc_pages():
            shutil.copy(doc, src / doc.name)
        (src / "index.md").write_text(home_page(chapters, profiles))
        html = scratch / "html"
        log = scratch / "warnings.txt"
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-w", str(log), str(src), str(html)]
        done = subprocess.run(cmd + (["-q"] if quiet else []), capture_output=quiet, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sphinx failed:\n{done.stderr or ''}{log.read_text() if log.exists() else ''}")
        shutil.copy(log, warnings_file(out))      # beside the site, not published with it
        if out.exists():
            shutil.rmtree(out)
        html.replace(out)
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_course.course.site",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=build_dir(),
                        help="the runner's output folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="where the site goes (default: BUILD/site)")
    args = parser.parse_args(argv)
    try:
        out = build_site(args.build, args.out or args.build / "site", quiet=False)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    warnings = warnings_file(out).read_text().strip()
    print(f"site written to {out}; open {out / 'index.html'}"
          + (f"\n{len(warnings.splitlines())} Sphinx warning(s), kept in {warnings_file(out)}" if warnings else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
