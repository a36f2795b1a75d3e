"""Every chapter teaches completely: exercises with solutions (one coding task checked by an
assert), a recap, references; and its student edition has a stub wherever a solution was."""
import re

import nbformat
import pytest

from diffusion_course.course import colab
from diffusion_course.course import editions
from diffusion_course.course import runner
from diffusion_course.course.runner import list_chapters

CHAPTERS = list_chapters()


@pytest.fixture(params=CHAPTERS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_three_to_six_exercises_each_with_a_solution(notebook):
    _, nb = notebook
    found = editions.exercises(nb)
    assert 3 <= len(found) <= 6, f"{len(found)} exercises; a chapter has three to six"
    for ex in found:
        assert ex["solutions"], f"{ex['title']!r} has no cell tagged 'solution'"
        assert all(nb.cells[i].source.strip() for i in ex["solutions"]), f"{ex['title']!r}: empty solution"
        for i in ex["solutions"]:     # a student fills in a code stub that the check cells can run
            if nb.cells[i].cell_type == "code":
                assert nb.cells[i].metadata.get("stub"), f"{ex['title']!r}: a code solution needs a 'stub'"


def test_a_coding_exercise_is_checked_by_an_assert(notebook):
    _, nb = notebook
    checked = [ex["title"] for ex in editions.exercises(nb)
               if any(nb.cells[i].cell_type == "code" for i in ex["solutions"])
               and any(re.search(r"^\s*assert\b", nb.cells[i].source, re.M)
                       for i in ex["solutions"] + ex["others"] if nb.cells[i].cell_type == "code")]
    assert checked, "at least one exercise has a code solution and an assert that checks it"


def test_recap_and_references(notebook):
    _, nb = notebook
    headings = {c.source.split("\n")[0].strip(): c for c in nb.cells if c.cell_type == "markdown"}
    recap = headings.get("## What to remember")
    assert recap is not None and recap.source.count("\n- ") >= 3, "a '## What to remember' list of 3+ points"
    refs = headings.get("## References")
    assert refs is not None and len(re.findall(r"\]\((https?://[^)]+)\)", refs.source)) >= 1, \
        "a '## References' cell with linked sources"


def test_student_edition_has_stubs_where_the_solutions_were(notebook, tmp_path):
    path, nb = notebook
    written = runner.main(["--student-edition", "--build", str(tmp_path), path.stem[:2]])
    assert written == 0
    student = nbformat.read(tmp_path / "student" / path.name, as_version=4)
    nbformat.validate(student)
    assert len(student.cells) == len(nb.cells)
    solutions = [i for i, c in enumerate(nb.cells) if editions.is_solution(c)]
    stubs = [i for i, c in enumerate(student.cells) if editions.STUB in c.metadata.get("tags", [])]
    assert stubs == solutions and solutions
    for i in solutions:
        assert student.cells[i].id == nb.cells[i].id and student.cells[i].cell_type == nb.cells[i].cell_type
        assert not editions.is_solution(student.cells[i])
        assert nb.cells[i].source.strip() not in student.cells[i].source
    assert [c.source for i, c in enumerate(student.cells) if i not in solutions][1:] == \
        [c.source for i, c in enumerate(nb.cells) if i not in solutions][1:], "everything else is unchanged"
    first = student.cells[0].source
    assert first.split("\n")[0] == colab.badge_markdown(f"notebooks/student/{path.name}")
    assert first.endswith(nb.cells[0].source.partition("\n")[2]), "the chapter's own first cell follows"
    assert colab.colab_url(f"notebooks/{path.name}") in first, "it points at the full edition"


def test_published_student_edition_is_current(notebook, tmp_path):
    """notebooks/student/ (what Colab and the website open) is what `make student` writes now."""
    path, _ = notebook
    published = runner.REPO_ROOT / editions.student_path(path.name)
    assert published.exists(), f"{published} is missing: run `make student`"
    assert published.read_text() == editions.write_student_edition(path, tmp_path).read_text(), \
        f"{published.name} is out of date: run `make student`"


def test_no_stray_student_editions():
    published = sorted(p.name for p in (runner.REPO_ROOT / editions.STUDENT_FOLDER).glob("*.ipynb"))
    assert published == [p.name for p in CHAPTERS], "one student edition per chapter, no other"


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _solution(cell, stub=None):
    cell.metadata["tags"] = ["solution"]
    if stub:
        cell.metadata["stub"] = stub
    return cell


def test_exercises_end_at_the_next_heading_and_stubs_follow_the_metadata():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = _nb(md("### Exercise 1: predict"), _solution(md("It halves.")),
             md("### Exercise 2: code it"), _solution(code("def f(x):\n    return 2 * x"), stub="def f(x):\n    ..."),
             code("assert f(2) == 4"), md("## What to remember"), code("print('not an exercise')"))
    found = editions.exercises(nb)
    assert [(e["solutions"], e["others"]) for e in found] == [([1], []), ([3], [4])]
    student = editions.student_edition(nb)
    assert student.cells[1].source == "*Your answer here.*"
    assert student.cells[3].source == "def f(x):\n    ..." and student.cells[3].metadata["tags"] == ["stub"]
    assert student.cells[4].source == "assert f(2) == 4"
    assert nb.cells[3].source.startswith("def f(x):\n    return"), "the full edition is left as it was"


def test_a_solution_outside_an_exercise_is_an_error():
    nb = _nb(nbformat.v4.new_markdown_cell("## Intro"), _solution(nbformat.v4.new_code_cell("x = 1")))
    with pytest.raises(ValueError, match="follow no '### Exercise' heading"):
        editions.student_edition(nb)
