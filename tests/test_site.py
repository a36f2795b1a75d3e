"""The course website, built from CI's own run of the notebooks and opened in a real browser.

`make test` runs pytest with `-p diffusion_course.course.nbval_record --record-executed build/test`,
so nbval's execution of every chapter is kept and these tests (which that plugin runs last)
build the site from it. Run alone, they execute the chapters in the `ci` profile first.
Headless Chromium is Debian's `chromium` (`.ci/run` installs it when missing), driven by
Playwright; without it the browser tests skip, unless $COURSE_REQUIRE_BROWSER is set (CI).
"""
import functools
import http.server
import os
import re
import shutil
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

from diffusion_course.course import colab
from diffusion_course.course import editions
from diffusion_course.course import runner
from diffusion_course.course import site
from diffusion_course.course import story

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "build" / "test"
CHAPTERS = [p.stem for p in runner.list_chapters()]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a machine without a network: no background connections, no sandbox as root.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO / "build" / "site-screenshot.png"


def _recorded_run_is_complete() -> bool:
    return all((RECORDED / "executed" / f"{c}.ipynb").exists()
               and (RECORDED / "executed" / f"{c}.ipynb").stat().st_mtime
               >= (runner.NOTEBOOKS / f"{c}.ipynb").stat().st_mtime for c in CHAPTERS)


@pytest.fixture(scope="module")
def built_site(request, tmp_path_factory) -> Path:
    build = RECORDED
    if not _recorded_run_is_complete():
        if getattr(request.config, "_nbval_recorder", None) is not None:
            pytest.fail(f"nbval did not record every chapter into {RECORDED} (a notebook failed)")
        build = tmp_path_factory.mktemp("ci-run")      # run alone: execute the chapters now
        shared = REPO.parent / "shared" / "data"        # as the Makefile does, offline machines' copy
        if "COURSE_DATA_ROOT" not in os.environ and shared.is_dir():
            os.environ["COURSE_DATA_ROOT"] = str(shared)
        assert runner.main(["--profile", "ci", "--build", str(build)]) == 0
    return site.build_site(build, tmp_path_factory.mktemp("site") / "site")


@pytest.fixture(scope="module")
def server(built_site):
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("COURSE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_every_chapter_has_a_page_and_sphinx_did_not_warn(built_site):
    for chapter in CHAPTERS:
        assert (built_site / f"{chapter}.html").exists()
    warnings = site.warnings_file(built_site).read_text().strip()
    assert warnings == "", f"sphinx warned:\n{warnings}"


def _plain_text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def test_pages_state_profile_and_measured_numbers(built_site):
    for chapter in CHAPTERS:
        text = _plain_text((built_site / f"{chapter}.html").read_text())
        assert re.search(r"This page shows the (ci|cpu|gpu) profile run of \d{4}-\d\d-\d\d", text), chapter
        assert "Numbers measured in this run" in text
    home = (built_site / "index.html").read_text()
    assert re.search(r"These pages show the chapters as executed in the (ci|cpu|gpu)", _plain_text(home))
    assert all(f'href="{c}.html"' in home for c in CHAPTERS), "the chapter table links every page"


def test_fold_solutions_puts_each_run_of_solutions_in_one_toggle():
    def cell(source, solution=False):
        new = nbformat.v4.new_code_cell(source)
        new.metadata["tags"] = ["solution"] if solution else []
        return new

    cells = [cell("a"), cell("s1", True), cell("s2", True), cell("b"), cell("s3", True)]
    shown = [c.source for c in site.fold_solutions(cells)]
    assert shown == ["a", site.SOLUTION_OPEN, "s1", "s2", site.SOLUTION_CLOSE, "b",
                     site.SOLUTION_OPEN, "s3", site.SOLUTION_CLOSE]


def _solution_runs(chapter: str) -> int:
    """How many runs of consecutive solution cells (other than markdown ``<details>`` blocks,
    folded on their own) the chapter has: one toggle each."""
    flags = [editions.is_solution(c) and not c.source.startswith("<details")
             for c in nbformat.read(runner.NOTEBOOKS / f"{chapter}.ipynb", 4).cells]
    return sum(flag and not before for flag, before in zip(flags, [False] + flags))


def test_collapsed_sections_become_a_heading_and_a_closed_toggle():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s) for s in
                ("## 1. Story", "## Measurements", "### Seeds\n\ntext", "## Recap")]
    nb.cells[1].metadata[story.COLLAPSED] = True
    site.fold_collapsed_sections(nb)
    assert [c.source for c in nb.cells] == [
        "## 1. Story", "## Measurements", '<details class="appendix">\n<summary>Show: Measurements</summary>',
        "**Seeds**\n\ntext", site.SOLUTION_CLOSE, "## Recap"]


def test_solutions_are_folded_and_both_editions_are_in_colab(built_site):
    for chapter in CHAPTERS:
        html = (built_site / f"{chapter}.html").read_text()
        assert html.count('<details class="solution">') == _solution_runs(chapter) > 0, chapter
        assert html.count('<details class="appendix">') == len(story.collapsed_sections(
            nbformat.read(runner.NOTEBOOKS / f"{chapter}.ipynb", 4))) > 0, chapter
        assert html.count("</details>") >= html.count("<details"), chapter
        name = f"{chapter}.ipynb"
        for path in (f"notebooks/{name}", editions.student_path(name)):
            assert f'href="{colab.colab_url(path)}"' in html, f"{chapter}: no Colab link to {path}"
            assert (REPO / path).exists(), f"{chapter}'s Colab link names {path}, not in the repository"


def _wait_for_maths(page) -> None:
    if page.evaluate("() => document.querySelectorAll('.math').length") == 0:
        return                       # Sphinx loads MathJax only on pages with maths
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise")


def _check_page(page, url: str) -> dict:
    response = page.goto(url)
    assert response is not None and response.ok, f"{url}: {response and response.status}"
    _wait_for_maths(page)
    found = page.evaluate("""() => ({
        rendered: document.querySelectorAll('mjx-container').length,
        unrendered: Array.from(document.querySelectorAll('.math'))
            .filter(m => !m.querySelector('mjx-container') && !m.closest('mjx-container')).length,
        text: document.querySelector('main').innerText,
        images: document.images.length,
        broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
        audio: document.querySelectorAll('audio').length,
    })""")
    assert found["broken"] == [], f"{url}: broken images {found['broken'][:3]}"
    assert found["unrendered"] == 0 and "$$" not in found["text"], f"{url}: maths left unrendered"
    _check_links(page, url, found["links"])
    return found


def _check_links(page, url: str, links: list[str]) -> None:
    """Every link inside the site resolves: the file is served and the #anchor exists."""
    origin = urllib.parse.urlsplit(url)
    for link in set(links):
        parts = urllib.parse.urlsplit(link)
        if parts.netloc != origin.netloc:
            continue
        target = parts._replace(fragment="").geturl()
        with urllib.request.urlopen(target) as answer:
            assert answer.status == 200, f"{url}: {link} -> {answer.status}"
            body = answer.read().decode("utf-8", "replace")
        if parts.fragment and target.endswith(".html"):
            anchor = urllib.parse.unquote(parts.fragment)
            assert f'id="{anchor}"' in body, f"{url}: link {link} names a missing anchor"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_in_a_browser(page, server, chapter):
    found = _check_page(page, server + f"{chapter}.html")
    assert found["rendered"] > 0, "every chapter has maths"
    assert found["images"] > 0, "every chapter shows figures"
    assert "Numbers measured in this run" in found["text"]
    _check_solutions_folded(page, chapter)
    if chapter == "02_forward_process":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))


def _check_solutions_folded(page, chapter: str) -> None:
    """Every solution sits in a closed toggle that hides it (one inside the closed appendix
    too); a click on "Solution" shows it. The appendix is closed until its summary is clicked."""
    shown = """() => Array.from(document.querySelectorAll('details.solution')).map(d =>
        ({open: d.open, summary: d.querySelector('summary').textContent.trim(),
          visible: Array.from(d.children).filter(c => c.tagName !== 'SUMMARY')
                        .map(c => c.checkVisibility())}))"""
    folded = page.evaluate(shown)
    assert len(folded) == _solution_runs(chapter)
    for toggle in folded:
        assert toggle["summary"] == "Solution" and toggle["visible"], f"{chapter}: an empty toggle {toggle}"
        assert not toggle["open"] and not any(toggle["visible"]), f"{chapter}: a solution is shown unasked"
    page.click("details.solution > summary")
    first = page.evaluate(shown)[0]
    assert first["open"] and all(first["visible"]), f"{chapter}: the first toggle does not open"
    appendix = """() => Array.from(document.querySelectorAll('details.appendix')).map(d =>
        ({open: d.open, visible: Array.from(d.children).filter(c => c.tagName !== 'SUMMARY')
                                     .some(c => c.checkVisibility())}))"""
    closed = page.evaluate(appendix)
    assert closed and not any(a["open"] or a["visible"] for a in closed), f"{chapter}: appendix shown {closed}"
    page.click("details.appendix > summary")
    assert page.evaluate(appendix)[0] == {"open": True, "visible": True}, f"{chapter}: the appendix does not open"


def test_home_page_in_a_browser(page, server):
    found = _check_page(page, server + "index.html")
    assert "Open in Colab" in found["text"]
    assert {server + "notation.html", server + "references.html"} <= set(found["links"]), \
        "the README's links to docs/ lead to the site's own pages"


def test_notation_page_in_a_browser(page, server):
    found = _check_page(page, server + "notation.html")
    assert found["rendered"] > 0, "the notation table's maths"


def test_chapter_11_audio_plays(page, server):
    chapter = next(c for c in CHAPTERS if c.startswith("11_"))
    page.goto(server + f"{chapter}.html")
    assert page.evaluate("() => document.querySelectorAll('audio').length") > 0
    assert page.evaluate("() => document.querySelector('audio').canPlayType('audio/wav')") in ("maybe", "probably")
    duration = page.evaluate("""() => new Promise((done, fail) => {
        const a = document.querySelector('audio');
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => fail('audio error ' + (a.error && a.error.code)));
        a.preload = 'auto'; a.load();
    })""")
    assert duration > 0.1, f"the first clip decodes to {duration} s"
