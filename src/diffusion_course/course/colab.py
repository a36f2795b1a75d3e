"""The one place that knows where the course lives on GitHub, for Colab badges and setup.

Every notebook's first cell is ``badge_markdown(path)`` and its second cell is
``SETUP_CELL``; ``tests/test_notebooks_meta.py`` checks that. ``python -m
diffusion_course.course.colab`` rewrites both in every notebook after the repository moves.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data.paths import checkout_root

REPO_SLUG = "diffusion-course/diffusion-course"
BRANCH = "main"

# Cell 1 of every chapter, the first code a student reads: short, and a no-op outside Colab.
# The Drive folder keeps trained models across Colab sessions (data is quick to download again).
DRIVE_MOUNT = "/content/drive"
DRIVE_CACHE = f"{DRIVE_MOUNT}/MyDrive/diffusion-course/checkpoints"
SETUP_CELL = f"""\
# Setup, only on Colab: install the course package (Colab's torch is kept). For a GPU, pick
# Runtime > Change runtime type > GPU before running this cell. Locally it does nothing.
KEEP_CACHE_ON_DRIVE = False  # True: keep trained models in your Google Drive across sessions
import os, sys
if "google.colab" in sys.modules:
    %pip install -q "diffusion-course @ git+https://github.com/{REPO_SLUG}@{BRANCH}"
    import torch
    if KEEP_CACHE_ON_DRIVE:
        from google.colab import drive
        drive.mount("{DRIVE_MOUNT}")
        os.environ["COURSE_CACHE"] = "{DRIVE_CACHE}"
    if not torch.cuda.is_available():
        print("No GPU: this chapter runs its cpu profile (for a GPU: Runtime > Change runtime type > GPU).")\
"""


def colab_url(notebook_path: str) -> str:
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{notebook_path}"


def badge_markdown(notebook_path: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook_path)})")


def _lines(text: str) -> list[str]:
    """A cell's source as the notebook file stores it: one string per line."""
    return text.splitlines(keepends=True)


def fix_notebook(path: Path, repo_root: Path) -> bool:
    """Rewrite the badge line and the setup cell of one notebook; True if it changed. The file
    is read and written as plain JSON, so everything else in it (key order included) stays."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    rel = path.resolve().relative_to(repo_root.resolve()).as_posix()
    badge = badge_markdown(rel)
    intro, setup = nb["cells"][0], nb["cells"][1]
    first = "".join(intro["source"]).split("\n")
    changed = first[0] != badge or "".join(setup["source"]) != SETUP_CELL
    if changed:
        intro["source"] = _lines("\n".join([badge] + first[1:]) if "colab" in first[0] else
                                 "\n".join([badge, ""] + first))
        setup["source"] = _lines(SETUP_CELL)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
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
