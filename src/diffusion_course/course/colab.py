"""The one place that knows where the course lives on GitHub, for Colab badges and setup.

Every notebook's first cell is ``badge_markdown(path)`` and its second cell is
``SETUP_CELL``; ``tests/test_notebooks_meta.py`` checks that. ``python -m
diffusion_course.course.colab`` rewrites both in every notebook after the repository moves.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from ..data.paths import checkout_root

REPO_SLUG = "diffusion-course/diffusion-course"
BRANCH = "main"

SETUP_CELL = f"""\
# Setup: on Colab, install the course package (torch is already there); locally, do nothing.
import sys
if "google.colab" in sys.modules:
    %pip install -q "diffusion-course @ git+https://github.com/{REPO_SLUG}@{BRANCH}"\
"""


def colab_url(notebook_path: str) -> str:
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{notebook_path}"


def badge_markdown(notebook_path: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook_path)})")


def fix_notebook(path: Path, repo_root: Path) -> bool:
    """Rewrite the badge line and the setup cell of one notebook; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    rel = path.resolve().relative_to(repo_root.resolve()).as_posix()
    badge = badge_markdown(rel)
    first = nb.cells[0].source.split("\n")
    changed = first[0] != badge or nb.cells[1].source != SETUP_CELL
    if changed:
        nb.cells[0].source = "\n".join([badge] + first[1:]) if "colab" in first[0] else \
            "\n".join([badge, ""] + first)
        nb.cells[1].source = SETUP_CELL
        nbformat.write(nb, path)
    return changed


def main() -> int:
    root = checkout_root()
    if root is None:
        print("run this from a checkout of the course (it rewrites the notebooks there)", file=sys.stderr)
        return 2
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if fix_notebook(path, root):
            print(f"updated {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
