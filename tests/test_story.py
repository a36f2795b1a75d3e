"""The rules that hold a chapter's story to an evening's read (diffusion_course.course.story),
on small notebooks written here."""
import nbformat

from diffusion_course.course import story


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    for kind, source, *meta in cells:
        new = (nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell)(source)
        new.metadata.update(meta[0] if meta else {})
        nb.cells.append(new)
    return nb


CHAPTER = notebook(
    ("md", "# 05 · A chapter\n\nIt trains 4,000 steps in 9.5 min (see chapter 03 and chapter 07)."),
    ("code", "PROFILE = \"auto\"\nSTEPS = None  # steps", {"tags": ["parameters"]}),
    ("md", "## 1. Story\n\nA loss of $0.25$ and `x = 3`; Ho et al. 2020 used 1000 steps."
           "\n\n<details>\n<summary>More</summary>\n\n12 34 56\n</details>"),
    ("md", "**Primer.** Chapter 06 measures quality by a distance between feature clouds."),
    ("md", "## Measurements", {story.COLLAPSED: True}),
    ("md", "### Seeds\n\n1 2 3 4 5 chapter 09"),
    ("code", "assert True"),
    ("md", "## Recap\n\nChapter 08 goes on from here."),
)


def test_collapsed_sections_end_at_a_heading_of_the_same_level():
    assert story.collapsed_sections(CHAPTER) == [(4, 7)]
    assert story.collapsed(CHAPTER) == [False] * 5 + [True] * 2 + [False]


def test_story_leaves_out_collapsed_parts_and_details_blocks():
    texts = " ".join(text for _, text in story.story_cells(CHAPTER))
    assert "Seeds" not in texts and "12 34" not in texts and "Recap" in texts and "## Measurements" in texts
    assert story.story_words(CHAPTER) == len(" ".join(
        ["# 05 · A chapter It trains 4,000 steps in 9.5 min (see chapter 03 and chapter 07).",
         "## 1. Story A loss of $0.25$ and `x = 3`; Ho et al. 2020 used 1000 steps.",
         "**Primer.** Chapter 06 measures quality by a distance between feature clouds.",
         "## Measurements", "## Recap Chapter 08 goes on from here."]).split())


def test_numbers_leave_out_maths_code_names_and_citation_years():
    assert story.story_numbers(CHAPTER) == ["4,000", "9.5", "1000"]


def test_forward_references_outside_primers_recap_and_appendix():
    assert story.forward_references(CHAPTER, "05") == ["cell 0: chapter 07"]
    assert story.forward_references(CHAPTER, "07") == []


def test_knobs_are_the_parameters_cell_names():
    assert story.knobs(CHAPTER) == ["PROFILE", "STEPS"]


def test_fold_marks_a_cell_for_jupyterlab_colab_and_the_site():
    cell = nbformat.v4.new_code_cell("assert 1")
    assert not story.is_folded(cell)
    story.fold(cell)
    story.fold(cell)
    assert story.is_folded(cell) and cell.metadata["tags"] == [story.HIDE_INPUT]


def test_fold_solution_hides_code_with_its_output_and_wraps_markdown_in_details():
    code, text = nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("**Solution.** 42")
    for cell in (code, text):
        assert not story.is_folded_solution(cell)
        story.fold_solution(cell)
        story.fold_solution(cell)
        assert story.is_folded_solution(cell)
    assert text.source.count("<details>") == 1 and "42" not in story.DETAILS.sub("", text.source)
