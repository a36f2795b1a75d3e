"""A chapter opened in JupyterLab with the course kernel opens clean.

The course kernel is installed as `make env` installs it (diffusion_course.course.kernel), but
into a temporary folder, as are JupyterLab's settings and runtime files: nothing is written to the
user's home. JupyterLab runs headless on a free port and Debian's Chromium (driven by Playwright,
as in tests/test_site.py) opens chapter 01, a copy of it. The test waits until the kernel has
started and JupyterLab has written the kernel's name and language into the notebook's metadata,
and requires the notebook not to be marked modified; then it runs the first cells, saves, and
requires the saved file to be the committed one once its outputs are stripped (what nbstripout
does at commit time). Without Chromium, Playwright or JupyterLab the test skips, unless
$COURSE_REQUIRE_BROWSER is set (CI).
"""
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from diffusion_course.course import kernel

REPO = Path(__file__).resolve().parents[1]
CHAPTER = "01_gaussian_noise_and_kl.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST_CODE_CELLS = 3          # setup, parameters, imports and settings


def _skip_or_fail(message: str):
    if os.environ.get("COURSE_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the chapter, with the course kernel in a temporary folder:
    yields (its URL with the token, the folder it serves)."""
    if not Path(CHROMIUM).exists():
        _skip_or_fail("Debian's chromium is not installed (apt-get install chromium)")
    for module in ("jupyterlab", "playwright"):
        if importlib.util.find_spec(module) is None:
            _skip_or_fail(f"{module} is not installed")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / CHAPTER, root / CHAPTER)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"),
               JUPYTER_PATH=str(tmp_path / "prefix" / "share" / "jupyter"),   # searched first
               COURSE_PROFILE="ci")
    subprocess.run([sys.executable, "-m", "diffusion_course.course.kernel", "--prefix", str(tmp_path / "prefix")],
                   env=env, check=True, capture_output=True)
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True",          # window.jupyterapp, for the checks below
             "--LabApp.news_url=", *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        yield f"{url}/lab/tree/{CHAPTER}?token={token}", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def _stripped(nb: dict) -> dict:
    """What nbstripout keeps: no outputs, no execution counts."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def test_chapter_opens_clean_in_jupyterlab_with_the_course_kernel(lab):
    from playwright.sync_api import sync_playwright

    url, root = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext",
                                   timeout=60_000)
            # Once the kernel runs, JupyterLab writes its spec and language into the metadata:
            # wait until it has (or found nothing to change), then nothing may be modified.
            opened = page.evaluate("""async () => {
                const panel = window.jupyterapp.shell.currentWidget;
                await panel.context.ready;
                await panel.sessionContext.ready;
                const kernel = panel.sessionContext.session.kernel;
                const info = await kernel.info;
                const same = (a, b) => JSON.stringify(a, Object.keys(a ?? {}).sort())
                                       === JSON.stringify(b, Object.keys(b ?? {}).sort());
                const model = panel.context.model;
                for (let i = 0; i < 100; i++) {
                    if (same(model.getMetadata('language_info'), info.language_info)
                        && model.getMetadata('kernelspec')?.name === kernel.name) break;
                    await new Promise(r => setTimeout(r, 50));
                }
                await new Promise(r => setTimeout(r, 500));   // any later metadata write lands
                const cells = panel.content.widgets, tags = c => c.model.getMetadata('tags') ?? [];
                const appendix = cells.findIndex(c => c.model.getMetadata('jp-MarkdownHeadingCollapsed'));
                return {dirty: model.dirty, tabDirty: !!document.querySelector('.jp-mod-dirty'),
                        kernel: kernel.name, displayName: panel.sessionContext.kernelDisplayName,
                        metadata: model.getMetadata(),
                        solutionsHidden: cells.filter(c => tags(c).includes('solution') && c.model.type === 'code')
                                              .map(c => c.inputHidden && c.outputHidden),
                        foldedHidden: cells.filter(c => tags(c).includes('hide-input')).map(c => c.inputHidden),
                        appendix: appendix < 0 ? null : {collapsed: cells[appendix].headingCollapsed,
                                                         next: cells[appendix + 1]?.isHidden}};
            }""")
            assert (opened["kernel"], opened["displayName"]) == (kernel.NAME, kernel.DISPLAY_NAME)
            assert not opened["dirty"] and not opened["tabDirty"], \
                f"JupyterLab marked the notebook modified on open; its metadata now: {opened['metadata']}"
            # a student scrolling through sees no solution and no appendix until they open it
            assert opened["solutionsHidden"] and all(opened["solutionsHidden"]), opened["solutionsHidden"]
            assert all(opened["foldedHidden"]), opened["foldedHidden"]
            assert opened["appendix"] in (None, {"collapsed": True, "next": True}), opened["appendix"]

            ran = page.evaluate(f"""async () => {{
                const app = window.jupyterapp, panel = app.shell.currentWidget;
                panel.content.activeCellIndex = 0;
                const code = () => panel.content.widgets.filter(c => c.model.type === 'code')
                                                        .slice(0, {FIRST_CODE_CELLS});
                for (let i = 0; i < 20 && code().some(c => c.model.executionCount === null); i++)
                    await app.commands.execute('notebook:run-cell-and-select-next');
                await panel.sessionContext.session.kernel.requestExecute({{code: ''}}).done;  // all done
                const outputs = code().flatMap(c => c.model.outputs.toJSON());
                await panel.context.save();
                return {{counts: code().map(c => c.model.executionCount),
                         errors: outputs.filter(o => o.output_type === 'error').map(o => o.evalue),
                         text: outputs.map(o => [].concat(o.text ?? '').join('')).join('')}};
            }}""")
        finally:
            browser.close()
    assert ran["errors"] == [] and None not in ran["counts"], ran
    assert "profile='ci'" in ran["text"], f"the settings cell ran in the course package: {ran['text'][:500]}"
    saved = json.loads((root / CHAPTER).read_text())
    committed = json.loads((REPO / "notebooks" / CHAPTER).read_text())
    assert saved["metadata"] == committed["metadata"], "JupyterLab's save changed the notebook's metadata"
    changed = [(i, a.get("metadata"), b.get("metadata")) for i, (a, b)
               in enumerate(zip(_stripped(saved)["cells"], committed["cells"])) if a != b]
    assert _stripped(saved) == committed, f"JupyterLab's save changed cells (index, saved, committed): {changed[:3]}"
