"""Every benchmark command runs end to end at toy size and writes sane JSON, so none of them
rots between the long runs whose numbers the chapters quote. The numbers here mean nothing;
the point is that the commands still work. The MNIST ones score with the `ci` judge and use
a toy student model; one test scores the shipped reference, running the script as a command
(the others call its ``main(argv)`` in this process)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, seed_cache
from diffusion_course.evaluation import judge as judge_module
from diffusion_course.recipes.mnist_ddpm import REFERENCE_RECIPES

MNIST_TOY = ["--profile", "ci", "--model", "student", "--set", "n_train=300"]


def load_benchmark(name):
    """The command ``benchmarks/<name>.py`` as a module, so its ``main(argv)`` runs in this
    process (a subprocess per test would import torch again and reload the judge: ~8 s each)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(name, args, tmp_path, data_root, judge_cache=None, subprocess_run=False):
    """Run a benchmark with ``args`` in an empty cache; with ``judge_cache`` (the session's
    `ci` judge) that judge is the one ``load_judge`` returns. In this process by default;
    ``subprocess_run`` runs the script as a command instead."""
    out = tmp_path / f"{name}.json"
    env = {"COURSE_DATA_ROOT": str(data_root), "COURSE_CACHE": str(tmp_path / "cache"), "COURSE_DEVICE": "cpu"}
    if judge_cache is not None:
        seed_cache(tmp_path / "cache", judge_cache)
    if subprocess_run:
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args, "--out", str(out)],
                              cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.chdir(tmp_path)
        mp.setattr(judge_module, "_JUDGES", {} if judge_cache is None else {"ci": judge_cache[1]})
        load_benchmark(name).main([*args, "--out", str(out)])
    return json.loads(out.read_text())


def check_report(report, n):
    assert report["n_samples"] == n and report["floor_n"] == n and report["floor_draws"] == 10
    assert report["frechet"] >= 0 and report["frechet_floor"] > 0 and report["frechet_ratio"] > 0
    assert report["frechet_ratio"] == pytest.approx(report["frechet"] / report["frechet_floor"])
    assert 0 <= report["confident_fraction"] <= 1
    assert sum(report["class_histogram"]) == pytest.approx(1)


def check_judge(judge):
    """The course judge's entry: the ci recipe, scored on the whole test split."""
    assert judge["profile"] == "ci" and judge["reference"] == "test[0:10000]"
    assert 0 <= judge["held_out_accuracy"] <= 1 and 0 <= judge["held_out_confident_fraction"] <= 1


def test_ddpm_mnist(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("ddpm_mnist", [*MNIST_TOY, "--n-samples", "40", "--sample-steps", "4",
                                          "--sample-batch", "16", "--note", "toy"],
                           tmp_path, real_data_root, ci_judge_cache)
    assert result["model"] == "student" and result["note"] == "toy" and "cpu" in result["machine"]
    assert result["train_complete"] and result["train_steps_done"] == result["settings"]["train_steps"]
    assert result["data"]["train_images"] == "train[0:300]" and result["sampler"]["steps"] == 4
    check_report(result["evaluation"], 40)
    check_judge(result["judge"])
    assert not any((tmp_path / "cache").glob("mnist-ddpm-*"))  # trained in a temporary cache


def test_ddpm_mnist_scores_the_reference(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("ddpm_mnist", ["--profile", "ci", "--model", "reference", "--n-samples", "40",
                                          "--sample-steps", "4", "--sample-batch", "16"],
                           tmp_path, real_data_root, ci_judge_cache, subprocess_run=True)  # as a command
    assert result["model"] == "reference" and not result["trained_now"] and result["train_complete"]
    assert result["train_steps_done"] == REFERENCE_RECIPES["mnist-ddpm"]["overrides"]["train_steps"]
    assert result["train_command"] == "python -m diffusion_course.recipes.references mnist-ddpm"
    assert result["train_seconds"] > 0 and result["train_machine"]["cpu"]
    check_report(result["evaluation"], 40)
    check_judge(result["judge"])
    assert not any((tmp_path / "cache").glob("mnist-ddpm-*"))  # nothing trained


def test_judge_strength(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("judge_strength", [*MNIST_TOY, "--epochs", "1", "2", "--judge-n-train", "300",
                                              "--n-samples", "40", "--sample-steps", "4"],
                           tmp_path, real_data_root, ci_judge_cache)
    assert result["model"]["source"] == "student"
    check_judge(result["course_judge"])
    assert [j["epochs"] for j in result["judges"]] == [1, 2]
    for judge in (result["course_judge"], *result["judges"]):
        assert 0 <= judge["held_out_accuracy"] <= 1 and 0 <= judge["held_out_confident_fraction"] <= 1
        assert judge["samples"]["frechet_floor"] > 0 and judge["samples"]["frechet_ratio"] > 0
    assert all(j["trained_now"] and j["n_train"] == 300 for j in result["judges"])


def test_sampling_steps(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("sampling_steps", [*MNIST_TOY, "--steps", "2", "4", "--samplers", "ddpm", "ddim",
                                              "ode", "dpm2m", "--n-samples", "20", "--seeds", "2"],
                           tmp_path, real_data_root, ci_judge_cache)
    settings = {(r["sampler"], r["steps"]) for r in result["results"]}
    assert settings == {(s, k) for s in ("ddpm", "ddim", "ode", "dpm2m") for k in (2, 4)}
    assert all(r["frechet"] >= 0 and r["frechet_ratio"] > 0 and r["seconds_per_image"] > 0
               for r in result["results"])
    for row in result["results"]:        # two seeds of x_T: each seed's figures, the row their mean
        assert [b["seed"] for b in row["by_seed"]] == [0, 1] == result["seeds"]
        assert row["frechet"] == pytest.approx(sum(b["frechet"] for b in row["by_seed"]) / 2)
        assert row["frechet_sd"] >= 0
    ddim = [r for r in result["results"] if r["sampler"] == "ddim"][0]["by_seed"]
    assert ddim[0]["frechet"] != ddim[1]["frechet"], "another seed, other digits"
    assert result["model"] == "student" and result["data"]["train_images"] == "train[0:300]"
    check_judge(result["judge"])


def test_quality_vs_compute(tmp_path, real_data_root, ci_judge_cache):
    chosen = ["T=100", "T=100, linear not rescaled"]           # the other T variants only sample longer
    result = run_benchmark("quality_vs_compute", ["--profile", "ci", "--n-eval", "20", "--parts", "t_study",
                                                  "seed_spread", "gan_study", "--variants", *chosen],
                           tmp_path, real_data_root, ci_judge_cache)
    rows = {r["variant"]: r for r in result["t_study"]}
    assert list(rows) == chosen and result["parts"] == ["t_study", "seed_spread", "gan_study"]
    for r in rows.values():
        assert r["at_common_steps"]["steps"] == 10 and r["at_T_steps"]["steps"] == r["T"] == 100
        assert r["train_steps"] == 30 and r["at_T_steps"]["frechet_ratio"] > 0
    assert rows["T=100, linear not rescaled"]["alpha_bar_T"] > 0.3 > rows["T=100"]["alpha_bar_T"]
    assert len(result["seed_spread"]["frechet_ratio_by_seed"]) == 2 and result["seed_spread"]["frechet_ratio_sd"] >= 0
    gan = result["gan_study"]
    assert gan["gan"]["train_seconds"] >= gan["train_seconds_budget"] > 0 and gan["gan"]["train_steps"] >= 1
    assert gan["diffusion"]["network_calls_per_image"] == 10 and "samples" not in gan
    assert {p["family"] for p in result["pareto"]} == {"T", "GAN"} and any(p["on_front"] for p in result["pareto"])
    assert set(result["claims"]) == {"the GAN beats the diffusion model"}   # the T claim needs T = 1000 too
    card = result["report_card"]
    assert card["n_samples"] == 20 and card["steps"] == 10 and card["versions"]["torch"] and card["hardware"]["cpu"]
    check_judge(card["judge"])


def test_guidance(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("guidance", [*MNIST_TOY, "--weights", "0,2", "--n-samples", "20",
                                        "--sample-steps", "4"], tmp_path, real_data_root, ci_judge_cache)
    assert [r["w"] for r in result["weights"]] == [0.0, 2.0]
    assert all(0 <= r["accuracy"] <= 1 and r["frechet_floor"] > 0 and r["frechet_ratio"] > 0
               for r in result["weights"])
    assert result["model"] == "student" and result["train_config"]["label_dropout"] > 0
    check_judge(result["judge"])


def test_latent(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("latent", ["--profile", "ci", "--model", "student", "--set", "n_train=300",
                                      "--n-samples", "20", "--timing-images", "4", "--timing-repeats", "1"],
                           tmp_path, real_data_root, ci_judge_cache)
    for model in ("pixel", "latent"):
        check_report(result[model]["evaluation"], 20)
        assert result[model]["seconds_per_image"] > 0
    assert result["pixel"]["model"] == "student" and result["data"]["train_images"] == "train[0:300]"
    check_judge(result["judge"])


def test_audio_digits(tmp_path, fsdd_root):
    result = run_benchmark("audio_digits", ["--profile", "ci", "--n-per-digit", "1",
                                            "--ancestral-per-digit", "1"], tmp_path, fsdd_root)
    assert result["real"]["bursts"]["one"] > 0.9                    # real digits: one voiced burst
    for name in ("reference", "student"):
        row = result[name]
        assert row["model"]["source"] == name and row["model"]["train_complete"]
        for sampler in ("ddim", "ancestral"):
            r = row[sampler]
            assert r["n_samples"] == 10 and 0 <= r["accuracy"] <= 1 and r["floor_n"] == 10
            assert r["frechet_ratio"] == pytest.approx(r["frechet"] / r["frechet_floor"])
            assert r["sampler"]["guidance"] == row["model"]["guidance"] and r["bursts"]["mean"] >= 0
        assert set(row["targets"]) >= {"accuracy", "frechet_ratio"}
    assert not result["reference"]["model"]["trained_now"] and result["reference"]["model"]["train_steps_done"] >= 1000
    assert "burst_gap" in result["reference"]["targets"] and "train_minutes" in result["student"]["targets"]


@pytest.mark.parametrize("bad, message", [(["--epochs", "0"], "--epochs must be positive"),
                                          (["--n-samples", "5"], "--n-samples must lie in 10..10000"),
                                          (["--n-samples", "10001"], "--n-samples must lie in 10..10000"),
                                          (["--judge-n-train", "50"], "--judge-n-train must lie in"),
                                          (["--model", "teacher"], "invalid choice")])
def test_judge_strength_rejects_bad_arguments(capsys, bad, message):
    with pytest.raises(SystemExit) as stopped:
        load_benchmark("judge_strength").main(bad)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_inverse_problems(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("inverse_problems", ["--profile", "ci", "--n-images", "3", "--steps", "3",
                                                "--problems", "inpaint-box", "sr2",
                                                "--methods", "pseudo-inverse", "tv", "dps", "ddrm"],
                           tmp_path, real_data_root, ci_judge_cache)
    assert result["model"] == "reference" and result["settings"]["n_images"] == 3
    box, sr = result["results"]["inpaint-box"], result["results"]["sr2"]
    assert set(box["methods"]) == {"pseudo-inverse", "tv", "dps", "ddrm"}
    assert "ddrm" not in sr["methods"], "DDRM needs a decomposable physics"
    for row in box["methods"].values():
        assert row["psnr"] > 0 and 0 <= row["judge_accuracy"] <= 1 and row["seconds_per_image"] > 0
    assert box["noise_sigma"] == 0.02 and box["settings"]["steps"] == 3
    assert set(result["summary"]) == {"inpaint-box", "sr2"}
    check_judge(result["judge"])


def test_few_step_sampling(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("few_step_sampling", ["--profile", "ci", "--n-samples", "20", "--seeds", "2", "--calls", "1", "3",
                                                 "--stochastic-calls", "4", "--reference-steps", "8", "--tolerances", "0.2"],
                           tmp_path, real_data_root, ci_judge_cache)
    rows = {(r["method"], r["budget"]): r for r in result["results"]}
    assert ("ddim", 8) in rows and ("pd", 1) in rows and ("cd", 1) in rows and ("heun", 3) in rows
    assert ("dpm2m-sde", 4) in rows and ("adaptive", 0.2) in rows and ("pd", 3) not in rows
    assert all(r["frechet_ratio"] > 0 and len(r["by_seed"]) == 2 for r in rows.values())
    assert rows["heun", 3]["calls"] == 3 and rows["adaptive", 0.2]["calls"] >= 2
    assert set(result["distillation_cost"]) == {"mnist-pd-8", "mnist-pd-4", "mnist-pd-2", "mnist-pd-1", "mnist-cd"}
    assert set(result["summary"]["targets_met"]) >= {"dpm2m_20_within_10pct", "distilled_1_at_most_2.5x_ode"}
    check_judge(result["judge"])


def test_control(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("control", ["--profile", "ci", "--seeds", "2", "--ranks", "2", "--set", "per_class=3",
                                       "--set", "n_structure=6", "--set", "n_concept=4", "--set", "n_prior=10"],
                           tmp_path, real_data_root, ci_judge_cache)
    assert [s["seed"] for s in result["seeds"]] == [0, 1] and result["controlnet"]["source"] == "reference"
    first = result["seeds"][0]
    assert first["inversion"]["base_unchanged"] and first["inversion"]["trainable"] == 128
    assert first["lora2_prior"]["trainable"] < first["full_prior"]["trainable"] / 20
    assert len(first["full"]["drift"]["per_class"]) == 10 and not first["full"]["prior"] and first["full_prior"]["prior"]
    assert all(0 <= first["structure"][m]["agreement"] <= 1 for m in ("controlnet", "unconditioned", "sdedit", "dps"))
    summary = result["summary"]
    assert summary["controlnet"]["agreement"]["sd"] >= 0 and "lora2_prior" in summary
    assert {"prior_drift_within_3_points", "controlnet_agreement_2x_unconditioned"} <= set(summary["targets_met"])
    check_judge(result["judge"])


def test_text_to_image(tmp_path, real_data_root, ci_judge_cache):
    result = run_benchmark("text_to_image", ["--profile", "ci", "--seeds", "2", "--set", "per_class=2",
                                             "--set", "guidance_weights='1,3'", "--set", "sample_steps=4"],
                           tmp_path, real_data_root, ci_judge_cache)
    assert [s["seed"] for s in result["seeds"]] == [0, 1] and result["models"]["source"] == "reference"
    first = result["seeds"][0]
    assert set(first["text"]) == set(first["label"]) == set(first["held_out"]) == {"1.0", "3.0"}
    assert all(0 <= first["text"][w]["attributes"][a]["matched"] <= 1 for w in first["text"] for a in ("thickness", "slant"))
    assert result["encoder_pair"]["targets"]["zero_shot_90"] and result["encoder_pair"]["chance_top1"] == 1 / 64
    summary = result["summary"]
    assert summary["per_weight"]["3.0"]["text_accuracy"]["n"] == 2 and summary["text_best_weight"] in (1.0, 3.0)
    memory = result["cost"]["memory"]
    assert memory["bf16"]["peak_mib"] > 0 and memory["fp16"]["weights_mib"] == memory["fp32"]["weights_mib"] / 2
    check_judge(result["judge"])
