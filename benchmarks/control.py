"""Benchmark: control and personalisation of the frozen class-conditional reference model
(chapter 16), over several seeds. Writes JSON.

    python benchmarks/control.py                                   # cpu: 3 seeds, everything
    python benchmarks/control.py --profile ci --seeds 1 --set per_class=3 --set n_structure=6 --ranks 4   # smoke test

Per seed (the fine-tunes' draws and every sample's noise), with chapter 16's knobs for the
profile (``--set KNOB=VALUE`` overrides one) and ``recipes.control``'s recipes:

- **textual inversion** of the crossed sevens (the first five of the training split) and of a
  letter A: the concept rate (the judge reads a seven and the concept probe says crossed) and
  the subject fidelity (mean distance in the judge's features to the nearest subject image)
  of samples of the new label (guidance ``CONCEPT_GUIDANCE``), against the base model's sevens;
- **DreamBooth** on the same five images: the full fine-tune without and with the
  prior-preservation loss, and LoRA adapters of ranks --ranks with it; for each the subject
  fidelity, the trainable parameters, the time, and the drift of every class (the judge's
  accuracy and the within-class FD/floor of ``per_class`` samples per digit, against the base;
  summarised over the nine classes other than the subject's seven, which is reported apart),
  with the base against itself at other noise as the yardstick of that measurement;
- **structure**: ``n_structure`` skeletons of test digits given to the ControlNet (shipped, or
  ``--set controlnet=student``), to the base model unconditioned, to SDEdit and to DPS; the
  structure agreement (IoU of dilated skeletons), the judge's agreement with the source digit,
  and FD/floor.

Cost on an idle 2-core CPU: about 8 minutes per seed. The JSON is rewritten after every seed.
"""
from __future__ import annotations

import json

import torch

from diffusion_course.course.cli import benchmark_parser, knob_overrides, spread, write_result
from diffusion_course.course.settings import chapter_settings
from diffusion_course.data.mnist import test_images
from diffusion_course.data.structure import structure_map
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.evaluation.structure import structure_iou
from diffusion_course.recipes import control
from diffusion_course.training.device import pick_device


def concept_row(model, label: int, judge, probe, targets, n: int, seed: int, tcfg) -> dict:
    """Concept rate and subject fidelity of ``n`` samples of ``label``."""
    x = control.draw(model, tcfg, n, seed, torch.full((n,), label), guidance=control.CONCEPT_GUIDANCE)
    return {"concept_rate": probe.concept_rate(x), "distance": control.feature_distance(judge, x, targets),
            "reads_as_digit": judge.classify(x)[2].mean().item()}


def one_seed(seed: int, cfg, ranks: list[int], base, base_weights, tcfg, judge, probe, cn) -> dict:
    subject, letters = control.subject_images(5), control.letter_images("A", 5)
    n, out = cfg.n_concept, {"seed": seed}
    labels = control.class_labels(cfg.per_class)
    base_classes = control.per_class_report(judge, control.draw(base, tcfg, len(labels), seed, labels), labels)
    # the yardstick: the base against itself, drawn with other noise
    again = control.per_class_report(judge, control.draw(base, tcfg, len(labels), seed + 100, labels), labels)
    out["noise_drift"] = control.drift(base_classes, again)
    out["base"] = {"per_class": base_classes, **concept_row(base, control.SUBJECT_DIGIT, judge, probe, subject, n, seed, tcfg),
                   "letter_distance": concept_row(base, control.SUBJECT_DIGIT, judge, probe, letters, n, seed, tcfg)["distance"]}
    # textual inversion: the expressible concept and the letter
    for name, images in (("inversion", subject), ("inversion_letter", letters)):
        model, info = control.textual_inversion(base, tcfg, images, cfg.ti_steps, cfg.batch, seed)
        out[name] = {**concept_row(model, model.new_label(), judge, probe, images, n, seed, tcfg),
                     "seconds": info["seconds"], "trainable": info["trainable"], "final_loss": info["losses"][-1]}
        out[name]["base_unchanged"] = all(torch.equal(v, base_weights[k]) for k, v in base.state_dict().items())
    # DreamBooth
    prior = control.prior_images(base, tcfg, cfg.n_prior, seed + 1000)
    variants = {"full": (None, None), "full_prior": (None, prior),
                **{f"lora{r}_prior": (r, prior) for r in ranks}}
    for name, (rank, pr) in variants.items():
        model, info = control.dreambooth(base, tcfg, subject, cfg.db_steps, cfg.batch, seed, prior=pr, rank=rank)
        classes = control.per_class_report(judge, control.draw(model, tcfg, len(labels), seed, labels), labels)
        out[name] = {**concept_row(model, model.new_label(), judge, probe, subject, n, seed, tcfg),
                     "rank": rank, "prior": pr is not None, "trainable": info["trainable"],
                     "seconds": info["seconds"], "per_class": classes, "drift": control.drift(base_classes, classes)}
        print(f"seed {seed} {name:12s} distance {out[name]['distance']:.2f} concept {out[name]['concept_rate']:.0%} "
              f"other classes: worst {out[name]['drift']['worst_accuracy_points']:+.1f} pts, FD x "
              f"{out[name]['drift']['mean_frechet_factor']:.2f} mean, {out[name]['drift']['worst_frechet_factor']:.2f} worst; "
              f"class 7 FD x{out[name]['drift']['subject_class']['frechet_factor']:.2f}  ({info['seconds']:.0f} s)", flush=True)
    # structure
    tx, ty = test_images()
    idx = torch.arange(seed * cfg.n_structure, (seed + 1) * cfg.n_structure) % len(tx)
    structure, source = structure_map(tx[idx]), ty[idx]
    out["structure"] = {}
    for method in control.STRUCTURE_METHODS:
        x = control.follow_structure(method, structure, base, tcfg, seed, cn)
        report = judge.evaluate(x)
        out["structure"][method] = {"agreement": structure_iou(x, structure).mean().item(),
                                    "class_agreement": (judge.labels(x) == source).double().mean().item(),
                                    "frechet_ratio": report["frechet_ratio"]}
        print(f"seed {seed} {method:13s} IoU {out['structure'][method]['agreement']:.3f}  "
              f"class {out['structure'][method]['class_agreement']:.0%}  FD/floor {report['frechet_ratio']:.2f}", flush=True)
    x = control.draw(base, tcfg, cfg.n_structure, seed, source)       # the base, told the class
    out["structure"]["base_conditional_frechet_ratio"] = judge.evaluate(x)["frechet_ratio"]
    return out



def summary(seeds: list[dict], ranks: list[int]) -> dict:
    """Means and spreads over seeds, and the targets."""
    get = lambda *path: [_dig(s, path) for s in seeds]
    out = {"inversion_concept_rate": spread(get("inversion", "concept_rate")),
           "base_concept_rate": spread(get("base", "concept_rate")),
           "letter_distance": spread(get("inversion_letter", "distance")),
           "base_letter_distance": spread(get("base", "letter_distance"))}
    for name in ["full", "full_prior"] + [f"lora{r}_prior" for r in ranks]:
        out[name] = {"distance": spread(get(name, "distance")), "concept_rate": spread(get(name, "concept_rate")),
                     "worst_accuracy_points": spread(get(name, "drift", "worst_accuracy_points")),
                     "worst_frechet_factor": spread(get(name, "drift", "worst_frechet_factor")),
                     "mean_frechet_factor": spread(get(name, "drift", "mean_frechet_factor")),
                     "subject_class_frechet_factor": spread(get(name, "drift", "subject_class", "frechet_factor")),
                     "trainable": seeds[0][name]["trainable"], "seconds": spread(get(name, "seconds"))}
    out["noise"] = {k: spread(get("noise_drift", k)) for k in ("worst_accuracy_points", "worst_frechet_factor",
                                                                 "mean_frechet_factor")}
    for method in control.STRUCTURE_METHODS:
        out[method] = {k: spread(get("structure", method, k)) for k in ("agreement", "class_agreement", "frechet_ratio")}
    out["base_conditional_frechet_ratio"] = spread(get("structure", "base_conditional_frechet_ratio"))
    checks = {"inversion_concept_at_least_80pct": out["inversion_concept_rate"]["mean"] >= 0.8,
              "prior_drift_within_3_points": out["full_prior"]["worst_accuracy_points"]["mean"] >= -3,
              "prior_frechet_within_1.25x_mean_other_classes": out["full_prior"]["mean_frechet_factor"]["mean"] <= 1.25,
              "prior_frechet_within_1.25x_worst_other_class": out["full_prior"]["worst_frechet_factor"]["mean"] <= 1.25,
              "controlnet_agreement_2x_unconditioned": out["controlnet"]["agreement"]["mean"]
              >= 2 * out["unconditioned"]["agreement"]["mean"],
              "controlnet_class_agreement_90pct": out["controlnet"]["class_agreement"]["mean"] >= 0.9,
              "controlnet_frechet_within_1.5x_base": out["controlnet"]["frechet_ratio"]["mean"]
              <= 1.5 * out["base_conditional_frechet_ratio"]["mean"]}
    if 4 in ranks:
        lora, full = out["lora4_prior"], out["full_prior"]
        checks["lora4_fidelity_within_10pct"] = lora["distance"]["mean"] <= 1.1 * full["distance"]["mean"]
        checks["lora4_at_most_5pct_parameters"] = lora["trainable"] <= 0.05 * full["trainable"]
    out["targets_met"] = checks
    return out


def _dig(d, path):
    for k in path:
        d = d[k]
    return d


def parse(argv):
    p = benchmark_parser(__doc__, "build/benchmarks/control.json", model=None,
                         knob_help="override a chapter-16 knob, e.g. db_steps=800")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8], help="LoRA ranks")
    args = p.parse_args(argv)
    if args.seeds < 1 or min(args.ranks) < 1:
        p.error("--seeds and every rank must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    cfg = chapter_settings("16", args.profile, **knob_overrides(args))
    base, tcfg = control.base_model(progress=False)
    base_weights = {k: v.clone() for k, v in base.state_dict().items()}   # to check that no fine-tune changed it
    judge = load_judge(cfg.profile)
    probe = control.ConceptProbe(judge)
    cn, cn_info = control.controlnet_model(cfg.controlnet, cfg.profile, progress=False)
    result = {"benchmark": "control", "profile": cfg.profile, "settings": cfg.as_dict(), "ranks": args.ranks,
              "base": "reference mnist-cond", "guidance": control.GUIDANCE, "eval_steps": control.EVAL_STEPS,
              "controlnet": {"source": cn_info["source"], "train_steps": cn_info.get("train_steps", cn_info.get("steps")),
                             "train_seconds": cn_info.get("train_seconds", cn_info.get("seconds"))},
              "probe": probe.held_out, "judge": judge.describe(), "seeds": []}
    for seed in range(args.seed, args.seed + args.seeds):
        result["seeds"].append(one_seed(seed, cfg, args.ranks, base, base_weights, tcfg, judge, probe, cn))
        result["summary"] = summary(result["seeds"], args.ranks)
        write_result(args, result, pick_device())
    print(json.dumps(result["summary"]["targets_met"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
