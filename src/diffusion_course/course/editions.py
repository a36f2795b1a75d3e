"""The student edition of a chapter: every exercise's solution replaced by a stub.

Chapters end with exercises. Each exercise is a markdown cell whose first line starts with
``### Exercise``, followed by one or more cells tagged ``solution`` (code or markdown) and,
for coding tasks, a cell that checks the solution with an ``assert``. The notebooks in the
repository are the full edition (CI runs it, so every solution is tested); this module
writes the student edition, in which each solution cell becomes a cell tagged ``stub`` at
the same place: the cell's ``stub`` metadata if it has one (say, a function signature with
``...``), else a prompt to write the answer. Check cells stay, so a student runs them on
their own answer.

    python -m diffusion_course.course.editions   # every chapter into notebooks/student/ (make student)
    python -m diffusion_course --student-edition  # the same files into build/student/

The copy in ``notebooks/student/`` is committed, so that Colab can open it from GitHub and the
website can link it; ``tests/test_exercises.py`` checks that it is what this module writes.
Its first cell carries its own Colab badge and points at the full edition.

A check that passes on the stub checks nothing. ``check_stubs_fail`` runs, in a kernel that
has just executed the whole chapter, every coding exercise's stub followed by its check cells,
and requires a failed ``assert``; then it runs the solution and the checks again (they must
pass), so the kernel is left as the chapter left it. ``make test`` does this for every chapter
(``diffusion_course.course.nbval_record``). A stub is therefore runnable code that gives a well-typed
wrong answer (``return 0.0``, ``torch.zeros_like(x)``), never an error of its own.
"""
from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import nbformat

from ..data.paths import checkout_root
from .colab import badge_markdown, colab_url

EXERCISE = re.compile(r"^### Exercise\b")
SOLUTION, STUB = "solution", "stub"
HIDE_INPUT = "hide-input"                # the website's tag for a folded cell (course.story.fold)
STUDENT_FOLDER = "notebooks/student"     # the published student edition, relative to the checkout


def is_exercise(cell) -> bool:
    return cell.cell_type == "markdown" and bool(EXERCISE.match(cell.source))


def is_solution(cell) -> bool:
    return SOLUTION in cell["metadata"].get("tags", [])    # a NotebookNode or the plain JSON dict


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
    # the stub is for the student to write in: nothing of the solution's folding stays
    tags = [t for t in cell.metadata.get("tags", []) if t not in (SOLUTION, HIDE_INPUT)] + [STUB]
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


def student_path(name: str) -> str:
    """Where the student edition of the chapter file ``name`` lives in the repository."""
    return f"{STUDENT_FOLDER}/{name}"


def student_first_cell(source: str, name: str) -> str:
    """The full edition's first cell with the student edition's own Colab badge, and a line
    that says what this edition is and where the full one is."""
    lines = source.split("\n")
    if lines[0] == badge_markdown(f"notebooks/{name}"):
        lines = lines[1:]
    note = (f"*Student edition: each exercise's solution is replaced by a stub for you to write. "
            f"The full edition, with the solutions, is `notebooks/{name}` "
            f"([open it in Colab]({colab_url(f'notebooks/{name}')})).*")
    return "\n".join([badge_markdown(student_path(name)), "", note] + lines)


def write_student_edition(notebook: Path, folder: Path) -> Path:
    """Write the student edition of ``notebook`` into ``folder``, validated, all or nothing."""
    nb = nbformat.read(notebook, as_version=4)
    student = student_edition(nb)
    student.cells[0].source = student_first_cell(student.cells[0].source, notebook.name)
    nbformat.validate(student)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / notebook.name
    partial = target.with_suffix(".ipynb.partial")
    nbformat.write(student, partial)
    partial.replace(target)
    return target


def coding_exercises(nb) -> list[dict]:
    """The exercises with a code solution: what a check must be able to reject."""
    return [ex for ex in exercises(nb) if any(nb.cells[i].cell_type == "code" for i in ex["solutions"])]


def check_stubs_fail(notebook: Path | str, shell=None) -> list[str]:
    """In an IPython kernel that has run ``notebook`` to the end, run each coding exercise with
    its stub in place of the solution: its check cells must fail with an ``AssertionError``
    (any other error means the stub itself is broken). Then run the solution and the checks
    again: they must pass. Returns one line per exercise; raises ``AssertionError`` listing
    every exercise whose checks could not fail, or whose stub or solution errs."""
    from IPython import get_ipython
    from IPython.utils.capture import capture_output

    shell = shell or get_ipython()
    nb = nbformat.read(notebook, as_version=4)

    def run(cells: list[tuple[bool, str]]) -> tuple[BaseException | None, bool]:
        """Run (is_solution, source) cells in order: the first error, and whether a solution
        (or stub) cell raised it."""
        for is_sol, source in cells:
            with capture_output():
                result = shell.run_cell(source, silent=True)
            if not result.success:
                return result.error_before_exec or result.error_in_exec, is_sol
        return None, False

    lines, problems = [], []
    for ex in coding_exercises(nb):
        order = [i for i in sorted(ex["solutions"] + ex["others"]) if nb.cells[i].cell_type == "code"]
        with_stubs = [(i in ex["solutions"], stub_for(nb.cells[i], ex["title"]).source
                       if i in ex["solutions"] else nb.cells[i].source) for i in order]
        failed, in_stub = run(with_stubs)
        restored, _ = run([(i in ex["solutions"], nb.cells[i].source) for i in order])
        verdict = f"{type(failed).__name__}: {failed}"[:160] if failed else "the checks passed"
        lines.append(f"{ex['title']}: on the stub, {'the stub itself errs, ' if in_stub else ''}{verdict}")
        if in_stub or not isinstance(failed, AssertionError):
            problems.append(lines[-1])
        if restored is not None:
            problems.append(f"{ex['title']}: the solution fails its own checks: {restored!r}"[:300])
    if problems:
        raise AssertionError("exercise checks that cannot fail on their stubs, or broken stubs:\n  "
                             + "\n  ".join(problems))
    return lines


def main() -> int:
    """Write every chapter's student edition into the checkout's ``notebooks/student/``."""
    root = checkout_root()
    if root is None:
        print("run this from a checkout of the course (it writes notebooks/student/ there)", file=sys.stderr)
        return 2
    for notebook in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        print(write_student_edition(notebook, root / STUDENT_FOLDER).relative_to(root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
