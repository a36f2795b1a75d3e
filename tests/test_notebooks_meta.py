"""Every chapter: Colab badge for its own path, Colab-only setup cell, one parameters cell,
no committed outputs, and parameters that match the chapter's knobs (with the defaults
that their comments state)."""
import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from diffusion_course.course import colab
from diffusion_course.course import kernel
from diffusion_course.course import settings
from diffusion_course.course import story
from diffusion_course.course.runner import list_chapters, REPO_ROOT

CHAPTERS = list_chapters()


def test_there_are_chapters():
    assert [p.stem[:2] for p in CHAPTERS][:2] == ["01", "02"]


@pytest.fixture(params=CHAPTERS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_badge_points_at_this_notebook(notebook):
    path, nb = notebook
    rel = path.relative_to(REPO_ROOT).as_posix()
    assert nb.cells[0].cell_type == "markdown"
    assert nb.cells[0].source.split("\n")[0] == colab.badge_markdown(rel)
    assert f"github/{colab.REPO_SLUG}/blob/" in nb.cells[0].source


def test_setup_cell_installs_only_on_colab(notebook):
    _, nb = notebook
    assert nb.cells[1].cell_type == "code" and nb.cells[1].source == colab.SETUP_CELL
    assert 'if "google.colab" in sys.modules' in colab.SETUP_CELL
    pip_line = next(line for line in colab.SETUP_CELL.splitlines() if "%pip" in line)
    assert colab.REPO_SLUG in pip_line and "torch" not in pip_line, "Colab's own torch is kept"


def test_one_parameters_cell_with_profile_auto(notebook):
    path, nb = notebook
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    src = tagged[0].source
    assert re.search(r'^PROFILE = "auto"', src, re.M)
    names = re.findall(r"^([A-Z][A-Z0-9_]*) = ", src, re.M)
    knobs = settings.CHAPTERS[path.stem[:2]]
    assert {n.lower() for n in names if n != "PROFILE"} == {k.lower() for k in knobs}, \
        "the parameters cell declares exactly the chapter's knobs"


def test_committed_without_outputs(notebook):
    _, nb = notebook
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_metadata_is_what_jupyterlab_writes_with_the_course_kernel(notebook):
    """JupyterLab rewrites the kernelspec and language_info when the kernel starts, and marks the
    notebook modified if they change (tests/test_lab.py opens chapter 01 in it)."""
    _, nb = notebook
    assert nb.metadata == kernel.NOTEBOOK_METADATA


def test_written_as_jupyter_writes_notebooks(notebook):
    """Keys sorted, one-space indent: what JupyterLab's save and nbstripout write, so neither
    reformats a chapter."""
    path, nb = notebook
    assert path.read_text(encoding="utf-8") == nbformat.writes(nb) + "\n", \
        "rewrite it with nbformat.write, or json.dump(nb, f, indent=1, ensure_ascii=False, sort_keys=True)"


def test_make_env_installs_the_course_kernel(tmp_path):
    assert "-m diffusion_course.course.kernel --sys-prefix" in (REPO_ROOT / "Makefile").read_text()
    spec = json.loads((Path(kernel.install(prefix=str(tmp_path))) / "kernel.json").read_text())
    assert spec["display_name"] == kernel.DISPLAY_NAME and spec["language"] == "python"
    assert "--IPKernelApp.kernel_class=diffusion_course.course.kernel.CourseKernel" in spec["argv"]
    assert Path(kernel.install(prefix=str(tmp_path))).name == kernel.NAME
    assert "version" not in kernel.CourseKernel.language_info


RUN_TIME = r"(~|≈|about |under |at most )?\s*(\d[\d.,]*(\s*[-–]\s*\d[\d.,]*)?\s*(s|min|minutes|seconds|h)\b|a few (seconds|minutes|min)\b|seconds\b)"


def stated_run_times(first_cell: str) -> dict:
    """The run time the chapter's first cell states per profile: "`ci` ≈ 10 s", "`cpu` ~3 min",
    "`gpu`: a few minutes" (the profile in backticks, the time within the next few words)."""
    times = {}
    for profile in ("ci", "cpu", "gpu"):
        match = re.search(rf"`{profile}`[^`]{{0,120}}?{RUN_TIME}", first_cell)
        times[profile] = match.group(0) if match else None
    return times


def test_opens_with_the_picture_the_question_and_the_run_times(notebook):
    """The first cell says what the chapter is for, what the student will be able to do, what it
    needs and how long each profile runs; a figure comes before the first numbered section."""
    _, nb = notebook
    first = nb.cells[0].source
    assert "you will be able to" in first.lower() and "you need" in first.lower(), \
        "the first cell says what the student will be able to do and what it needs"
    times = stated_run_times(first)
    assert all(times.values()), f"the first cell states a run time for every profile: {times}"
    section = next(i for i, c in enumerate(nb.cells)
                   if c.cell_type == "markdown" and re.match(r"##\s+1\.", c.source))
    assert any(c.cell_type == "code" and "show(" in c.source for c in nb.cells[2:section]), \
        "a figure of what the chapter makes happen comes before section 1"


def test_story_fits_an_evening(notebook):
    """At most 3,000 words and 15 numbers in the story, at most 20 knobs; the rest, measurements
    and "what you should see" lists included, waits in collapsed parts (diffusion_course.course.story)."""
    path, nb = notebook
    assert story.story_words(nb) <= story.MAX_STORY_WORDS, f"{story.story_words(nb)} words in the story"
    numbers = story.story_numbers(nb)
    assert len(numbers) <= story.MAX_STORY_NUMBERS, f"{len(numbers)} numbers in the story: {numbers}"
    assert len(story.knobs(nb)) <= story.MAX_KNOBS, story.knobs(nb)
    assert not any("what you should see" in text.lower() for _, text in story.story_cells(nb))
    assert not story.forward_references(nb, path.stem[:2]), \
        "a later chapter is named outside a **Primer** paragraph, the recap or the appendix"


def test_measurements_wait_in_a_collapsed_appendix(notebook):
    _, nb = notebook
    titles = [nb.cells[start].source.lstrip("# ") for start, _ in story.collapsed_sections(nb)]
    assert any(t.lower().startswith("appendix: measurements") for t in titles), f"collapsed sections: {titles}"
    assert all("\n" not in t.strip() for t in titles), \
        "a collapsed heading cell holds the heading only: JupyterLab folds the cells after it, not its own text"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "what you should see" in text


def test_folded_cells_and_solutions_are_folded_everywhere(notebook):
    """A folded cell is hidden in JupyterLab, Colab and on the website alike; every solution is
    folded in the full edition too, so scrolling does not give an exercise away."""
    _, nb = notebook
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata
        marks = ["hide-input" in meta.get("tags", []), meta.get("jupyter", {}).get("source_hidden", False),
                 meta.get("cellView") == "form"]
        assert all(marks) or not any(marks), f"cell {i}: fold it with story.fold (all three marks)"
        if story.is_solution(cell):
            assert story.is_folded_solution(cell), f"cell {i}: fold the solution with story.fold_solution"


def test_stated_run_times_parser():
    assert all(stated_run_times("`ci` ≈ 10 s · `cpu` ≈ 15 s · `gpu`: a few minutes").values())
    assert stated_run_times("we decide the `cpu` profile later")["cpu"] is None
    assert stated_run_times("`ci` ~30 s · `cpu` ~3-3.5 min")["gpu"] is None


def stated_defaults(comment: str) -> dict:
    """The per-profile defaults a parameter comment states in its closing "(None: ...)":
    "(None: 4)" for every profile, or "(None: ci 60, cpu/gpu 6_000)" per profile."""
    match = re.search(r"\(None: (.*)\)\s*$", comment)
    assert match, f"the comment should end with the defaults, as in '(None: ci 1, cpu 2, gpu 3)': {comment!r}"
    text, value = match.group(1), r"(\"[^\"]*\"|[-+\w.]+)"
    per_profile = re.findall(r"\b((?:ci|cpu|gpu)(?:/(?:ci|cpu|gpu))*) " + value, text)
    if not per_profile:
        single = re.match(value, text)
        assert single, f"no default value in {comment!r}"
        per_profile = [("ci/cpu/gpu", single.group(1))]
    return {p: ast.literal_eval(v) for profiles, v in per_profile for p in profiles.split("/")}


def test_parameter_comments_state_the_real_defaults(notebook):
    """A student reads the defaults in the parameters cell: they must be the knobs' values."""
    path, nb = notebook
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    knobs = {name.lower(): knob for name, knob in settings.CHAPTERS[path.stem[:2]].items()}
    for name, comment in re.findall(r"^([A-Z][A-Z0-9_]*) = None\s*#(.*)$", cell.source, re.M):
        for profile, value in stated_defaults(comment).items():
            assert getattr(knobs[name.lower()], profile) == value, \
                f"{name}: the comment says {value!r} for {profile}, settings.py has {getattr(knobs[name.lower()], profile)!r}"


def test_stated_defaults_parser():
    assert stated_defaults(" steps (None: ci 60, cpu/gpu 6_000)") == {"ci": 60, "cpu": 6000, "gpu": 6000}
    assert stated_defaults(" split (None: ci \"test\", cpu/gpu \"train\")") == {"ci": "test", "cpu": "train", "gpu": "train"}
    assert stated_defaults(" channels (None: 4, i.e. 196 numbers)") == {"ci": 4, "cpu": 4, "gpu": 4}


# Words for the project's own process, which mean nothing to a reader of the course.
INTERNAL_WORDS = re.compile(r"\bissues? \d+|source documents?|closing note|planned chapter|not written yet"
                            r"|build machines?|the source's", re.IGNORECASE)


def test_the_course_speaks_to_its_readers_only():
    """Chapters, the README, the package and the benchmarks: no issue numbers, no "the course's
    source documents" (readers do not have them: a claim from a source is cited like a paper),
    no "build machine"; a test file may name these words, the course may not."""
    places = [REPO_ROOT / "README.md", *CHAPTERS, *sorted((REPO_ROOT / "src").rglob("*.py")),
              *sorted((REPO_ROOT / "benchmarks").glob("*.py"))]
    found = [f"{p.relative_to(REPO_ROOT)}: {m.group(0)!r}"
             for p in places for m in INTERNAL_WORDS.finditer(p.read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)
