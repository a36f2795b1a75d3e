"""The papermill runner: outputs on success, clear errors and nothing partial on failure."""
import json
import os
import subprocess
import sys

import pytest

from diffusion_course.course import runner
from diffusion_course.course.runner import parse_value, REPO_ROOT, scope_parameters, select_chapters

pytestmark = pytest.mark.notebooks
CHAPTER = "01_gaussian_noise_and_kl"


def run(*args, build):
    return subprocess.run([sys.executable, "-m", "diffusion_course", *args,
                           "--build", str(build)], capture_output=True, text=True, cwd=REPO_ROOT)


def run_here(capsys, *args, build):
    """(exit code, stdout, stderr) of the runner's main in this process: for the requests it
    refuses before starting a kernel (no second interpreter to start)."""
    message = ""
    try:
        code = runner.main([*args, "--build", str(build)])
    except SystemExit as stop:                 # sys.exit("text") prints text and exits 1
        code, message = (1, stop.code) if isinstance(stop.code, str) else (stop.code, "")
    out, err = capsys.readouterr()
    return code, out, err + message


def test_runs_a_chapter_with_an_override(tmp_path):
    result = run("01", "--profile", "ci", "-p", "N_SAMPLES", "5000", build=tmp_path)
    assert result.returncode == 0, result.stderr
    assert CHAPTER in result.stdout and " ok " in result.stdout
    summary = json.loads((tmp_path / "metrics" / f"{CHAPTER}.json").read_text())
    assert summary["profile"] == "ci" and summary["parameters"]["N_SAMPLES"] == 5000
    assert summary["metrics"], "the chapter recorded its measurements"
    assert summary["wall_time_s"] > 0
    pngs = sorted((tmp_path / "figures" / CHAPTER).glob("*.png"))
    assert pngs and pngs == sorted(tmp_path / "figures" / CHAPTER / f for f in summary["figures"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (tmp_path / "executed" / f"{CHAPTER}.ipynb").exists()
    assert not list(tmp_path.glob(".*")), "scratch folders are cleaned up"
    assert "without encryption" not in result.stderr + result.stdout, "kernels talk over local sockets"


def test_unknown_parameter_fails_before_running(tmp_path, capsys):
    code, _, err = run_here(capsys, "01", "--profile", "ci", "-p", "N_SAMPELS", "5", build=tmp_path)
    assert code != 0
    assert "unknown parameter(s) N_SAMPELS" in err and "N_SAMPLES" in err
    assert not (tmp_path / "executed").exists() and not (tmp_path / "figures").exists()


def test_bad_value_names_the_cell_and_leaves_nothing_that_looks_complete(tmp_path):
    # outputs of an earlier complete run of this chapter (the files a run publishes)
    (tmp_path / "executed").mkdir()
    (tmp_path / "executed" / f"{CHAPTER}.ipynb").write_text("{}")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / f"{CHAPTER}.json").write_text("{}")
    (tmp_path / "figures" / CHAPTER).mkdir(parents=True)
    (tmp_path / "figures" / CHAPTER / "old.png").write_bytes(b"\x89PNG")
    result = run("01", "--profile", "ci", "-p", "N_SAMPLES", "-5", build=tmp_path)
    assert result.returncode == 1
    assert f"{CHAPTER} failed in cell" in result.stderr
    assert "bad value -5 for n_samples; allowed: int >= 100" in result.stderr
    # The earlier complete outputs of this chapter are gone (they would be stale)...
    assert not (tmp_path / "executed" / f"{CHAPTER}.ipynb").exists()
    assert not (tmp_path / "metrics" / f"{CHAPTER}.json").exists()
    assert not (tmp_path / "figures" / CHAPTER).exists()
    # ...and the failed notebook is kept apart for debugging.
    assert (tmp_path / "failed" / f"{CHAPTER}.ipynb").exists()
    assert json.loads((tmp_path / "summary.json").read_text())[0]["status"] == "FAILED"


def test_unknown_profile_and_chapter(tmp_path, capsys):
    code, _, err = run_here(capsys, "01", "--profile", "turbo", build=tmp_path)
    assert code == 2 and "allowed: auto, ci, cpu, gpu" in err
    code, _, err = run_here(capsys, "42", "--profile", "ci", build=tmp_path)
    assert code != 0 and "no chapter '42'" in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_helpers():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("cosine") == "cosine"
    assert parse_value("None") is None
    assert [p.stem for p in select_chapters(["1"])] == [CHAPTER]


def test_parameters_are_scoped_to_one_chapter():
    two = select_chapters(["01", "02"])
    assert scope_parameters([("02:N_DRAWS", "500"), ("1:SEED", "3")], two) == {"02": {"N_DRAWS": 500},
                                                                                 "01": {"SEED": 3}}
    with pytest.raises(ValueError, match="ambiguous with 2 chapters: scope it to one, e.g. -p 01:SEED 3"):
        scope_parameters([("SEED", "3")], two)
    assert scope_parameters([("SEED", "3")], select_chapters(["02"])) == {"02": {"SEED": 3}}
    with pytest.raises(ValueError, match="chapter 05 is not among the chapters run"):
        scope_parameters([("05:TRAIN_STEPS", "3")], two)
    with pytest.raises(runner.ChapterFailed, match="unknown parameter"):
        scope_parameters([("02:TRAIN_STEPS", "3")], two)
    with pytest.raises(ValueError, match="--profile"):
        scope_parameters([("01:PROFILE", "cpu")], two)


def test_every_kernel_sees_the_scoped_overrides(tmp_path, monkeypatch):
    from diffusion_course.course.settings import OVERRIDES_ENV

    seen = {}

    def fake_run_chapter(nb, build, profile, overrides, log_output=False):
        seen[nb.stem[:2]] = (overrides, json.loads(os.environ[OVERRIDES_ENV]))
        return {"wall_time_s": 0.0, "figures": []}

    monkeypatch.delenv(OVERRIDES_ENV, raising=False)
    monkeypatch.setattr(runner, "run_chapter", fake_run_chapter)
    assert runner.main(["01", "02", "--profile", "ci", "-p", "02:N_DRAWS", "500", "--build", str(tmp_path)]) == 0
    assert seen["01"] == ({}, {"02": {"N_DRAWS": 500}})
    assert seen["02"] == ({"N_DRAWS": 500}, {"02": {"N_DRAWS": 500}})
    assert OVERRIDES_ENV not in os.environ, "restored after the run"


SHARED_MODEL_CHAPTER = """from diffusion_course.course.settings import chapter_settings
from diffusion_course.recipes.autoencoder import load_denoising_autoencoder

cfg = chapter_settings("04", "ci", train_steps=40, n_train=200, runner_overrides=False)
model, info = load_denoising_autoencoder(cfg, progress=False)
print("autoencoder", "trained now" if info["trained_now"] else "loaded")
"""


def test_two_jobs_share_a_model_trained_once(tmp_path, real_data_root):
    """Two chapters that both need chapter 04's autoencoder (as chapters 04 and 12 do), run
    with --jobs 2 and a cache without it: both pass, and exactly one of them trains it (the
    cache entry is locked; the other waits and loads). Each job gets half of the cores. Two
    small chapters of this test's own (``--notebooks``), so that the check takes seconds."""
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("01_first", "02_second"):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"},
                                                 "language_info": {"name": "python"}})
        parameters = nbformat.v4.new_code_cell('PROFILE = "auto"', metadata={"tags": ["parameters"]})
        nb.cells = [parameters, nbformat.v4.new_code_cell(SHARED_MODEL_CHAPTER)]
        nbformat.write(nb, notebooks / f"{name}.ipynb")
    env = {**os.environ, "COURSE_CACHE": str(tmp_path / "cache"), "COURSE_DATA_ROOT": str(real_data_root)}
    build = tmp_path / "build"
    result = subprocess.run([sys.executable, "-m", "diffusion_course", "--notebooks", str(notebooks),
                             "--profile", "ci", "--jobs", "2", "--build", str(build)], capture_output=True,
                            text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((build / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok", "ok"]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(r["device"] == f"cpu, {threads} thread{'s' * (threads != 1)}" for r in summary)
    texts = [(build / "executed" / f"{n}.ipynb").read_text() for n in ("01_first", "02_second")]
    assert sorted("autoencoder trained now" in t for t in texts) == [False, True], texts
    assert len(list((tmp_path / "cache").glob("denoising-autoencoder-*.pt"))) == 1


def test_jobs_must_be_positive(tmp_path, capsys):
    code, _, err = run_here(capsys, "01", "--jobs", "0", build=tmp_path)
    assert code == 2 and "--jobs must be at least 1" in err


def _executed_with_players(folder, *grids):
    """A minimal executed notebook whose outputs are player grids (``audio.player_grid``)."""
    import nbformat
    import numpy as np

    from diffusion_course.course import players as audio

    nb = nbformat.v4.new_notebook()
    for name in grids:
        html = audio.player_grid([[np.zeros(400), np.full(400, 0.25)]], ["digit 3"], ["real", "reference 1"],
                                 name=name).data
        cell = nbformat.v4.new_code_cell("grid")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": html, "text/plain": "grid"})]
        nb.cells.append(cell)
    folder.mkdir(parents=True)
    path = folder / "11_audio.ipynb"
    nbformat.write(nb, path)
    return path


def test_named_players_become_wav_files(tmp_path):
    import wave

    executed = _executed_with_players(tmp_path / ".scratch", "listening")
    summary = runner.publish_chapter(executed, tmp_path, "ci", {"PROFILE": "ci"}, 1.0)
    assert summary["audio"] == ["listening/digit-3_real.wav", "listening/digit-3_reference-1.wav"]
    with wave.open(str(tmp_path / "audio" / "11_audio" / "listening" / "digit-3_reference-1.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 1, 400)
        assert np_frames(w.readframes(400)) == [round(0.25 * 32767)] * 400
    # a clip name used twice is an error, not a silent overwrite
    executed = _executed_with_players(tmp_path / ".scratch2", "listening", "listening")
    with pytest.raises(runner.ChapterFailed, match="two clips are named listening/digit-3_real.wav"):
        runner.publish_chapter(executed, tmp_path, "ci", {"PROFILE": "ci"}, 1.0)


def np_frames(raw: bytes) -> list[int]:
    import numpy as np

    return np.frombuffer(raw, dtype="<i2").tolist()
