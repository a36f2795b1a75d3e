"""The student edition of a chapter: every exercise's solution replaced by a stub.

Chapters end with exercises. Each exercise is a markdown cell whose first line starts with
``### Exercise``, followed by one or more cells tagged ``solution`` (code or markdown) and,
for coding tasks, a cell that checks the solution with an ``assert``. The notebooks in the
repository are the full edition (CI runs it, so every solution is tested); this module
writes the student edition, in which each solution cell becomes a cell tagged ``stub`` at
the same place: the cell's ``stub`` metadata if it has one (say, a function signature with
``...``), else a prompt to write the answer. Check cells stay, so a student runs them on
their own answer.

    python -m diffusion_course.runner --student-edition          # all chapters into build/student/
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

EXERCISE = re.compile(r"^### Exercise\b")
SOLUTION, STUB = "solution", "stub"


def is_exercise(cell) -> bool:
    return cell.cell_type == "markdown" and bool(EXERCISE.match(cell.source))


def is_solution(cell) -> bool:
    return SOLUTION in cell.metadata.get("tags", [])


def exercises(nb) -> list[dict]:
    """Each exercise: its heading cell's index, its solution cells' indices and the indices
    of the other code cells up to the next heading (where its checks live)."""
    found, current = [], None
    for i, cell in enumerate(nb.cells):
        if is_exercise(cell):
            current = {"index": i, "title": cell.source.split("\n")[0].lstrip("# "),
                       "solutions": [], "others": []}
            found.append(current)
        elif cell.cell_type == "markdown" and cell.source.startswith("#"):
            current = None                   # a heading ends the exercise
        elif current is not None:
            current["solutions" if is_solution(cell) else "others"].append(i)
    return found


def stub_for(cell, title: str):
    """The cell a student sees in place of ``cell`` (a solution of exercise ``title``)."""
    tags = [t for t in cell.metadata.get("tags", []) if t != SOLUTION] + [STUB]
    if cell.cell_type == "code":
        text = cell.metadata.get(STUB) or f"# {title}: write your solution here.\n..."
        new = nbformat.v4.new_code_cell(text)
    else:
        new = nbformat.v4.new_markdown_cell(cell.metadata.get(STUB) or "*Your answer here.*")
    new.id = cell.get("id", new.id)    # same id: the stub sits where the solution was
    new.metadata = {"tags": tags}
    return new


def student_edition(nb):
    """A copy of ``nb`` with every solution cell replaced by its stub."""
    out = copy.deepcopy(nb)
    titles = {i: ex["title"] for ex in exercises(nb) for i in ex["solutions"]}
    stray = [i for i, c in enumerate(nb.cells) if is_solution(c) and i not in titles]
    if stray:
        raise ValueError(f"cells {stray} are tagged {SOLUTION!r} but follow no '### Exercise' heading")
    for i, title in titles.items():
        out.cells[i] = stub_for(nb.cells[i], title)
    return out


def write_student_edition(notebook: Path, folder: Path) -> Path:
    """Write the student edition of ``notebook`` into ``folder``, validated, all or nothing."""
    nb = nbformat.read(notebook, as_version=4)
    student = student_edition(nb)
    nbformat.validate(student)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / notebook.name
    partial = target.with_suffix(".ipynb.partial")
    nbformat.write(student, partial)
    partial.replace(target)
    return target
