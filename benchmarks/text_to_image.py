"""Benchmark: text to image at MNIST scale (chapter 17), over several seeds. Writes JSON.

    python benchmarks/text_to_image.py                                  # cpu: 3 seeds
    python benchmarks/text_to_image.py --profile ci --seeds 1 --set per_class=3   # smoke test

With ``recipes.text_to_image``'s shipped models (or ``--set model=student``) and chapter 17's
knobs for the profile (``--set KNOB=VALUE`` overrides one):

- **the encoder pair** on the test split: retrieval top-1 and top-5 in batches of 64, both ways
  (chance 1/64 and 5/64), and the zero-shot classifier "a handwritten <digit>";
- per seed and **guidance weight** w: ``per_class`` prompts per digit asking for a digit and
  drawn thickness and slant levels (combinations training captions name), in varied words;
  the judge's accuracy for the asked digit, each attribute's match rate (the measured value on
  the asked side of its class's training median), FD/floor of the whole set; and the same
  prompts' digits from **chapter 09's label-conditional reference** at the same w (FD/floor
  and accuracy: the yardstick);
- the **held-out combinations** (one thickness-slant pair per digit no training caption names),
  ``per_class`` prompts per digit at every w: accuracy and attribute matches;
- **cost**: median seconds per digit of the text pipeline and of the label model (batch 100,
  same sampler and steps, w = 3), and the pipeline's peak memory in fp32 and bf16.

Cost on an idle 2-core CPU with per_class=50: 1.5 minutes for the encoder pair and the costs,
then about 3 minutes per seed (11 minutes for three). The JSON is rewritten after every seed.
"""
from __future__ import annotations

import json


from diffusion_course.course.cli import benchmark_parser, knob_overrides, spread, write_result
from diffusion_course.course.settings import chapter_settings
from diffusion_course.diffusion.sampling import guidance_weights
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.recipes import control
from diffusion_course.recipes import text_to_image as t2i
from diffusion_course.training.device import pick_device


def one_seed(seed: int, cfg, net, tcfg, base, base_tcfg, judge) -> dict:
    out = {"seed": seed, "text": {}, "label": {}, "held_out": {}}
    labels, levels = t2i.evaluation_requests(cfg.per_class, seed)
    prompts = t2i.prompts_for(labels, levels, seed)
    held_labels, held_levels = t2i.held_out_requests(cfg.per_class)
    held_prompts = t2i.prompts_for(held_labels, held_levels, seed)
    for w in guidance_weights(cfg.guidance_weights):
        row = t2i.guidance_row(judge, net, tcfg, base, base_tcfg, labels, levels, prompts, w, seed, cfg.sample_steps)
        out["text"][str(w)], out["label"][str(w)] = row["text"], row["label"]
        x = t2i.text_to_image(held_prompts, net, tcfg, w, seed, cfg.sample_steps)
        out["held_out"][str(w)] = t2i.score_samples(judge, x, held_labels, held_levels, frechet=False)
    return out



def summary(seeds: list[dict], weights: list[float]) -> dict:
    rows = {}
    for w in map(str, weights):
        rows[w] = {
            "text_accuracy": spread([s["text"][w]["accuracy"] for s in seeds]),
            "text_frechet_ratio": spread([s["text"][w]["frechet_ratio"] for s in seeds]),
            **{f"text_{a}": spread([s["text"][w]["attributes"][a]["matched"] for s in seeds]) for a in t2i.ATTRIBUTES},
            "label_accuracy": spread([s["label"][w]["accuracy"] for s in seeds]),
            "label_frechet_ratio": spread([s["label"][w]["frechet_ratio"] for s in seeds]),
            "held_out_accuracy": spread([s["held_out"][w]["accuracy"] for s in seeds]),
            **{f"held_out_{a}": spread([s["held_out"][w]["attributes"][a]["matched"] for s in seeds])
               for a in t2i.ATTRIBUTES},
        }

    def best(key):          # the weight whose mean is best, and that mean
        pick = (max if "frechet" not in key else min)(rows, key=lambda w: rows[w][key]["mean"])
        return pick, rows[pick][key]["mean"]

    # The text model's best weight: the one with the highest mean of accuracy and both matches
    score = {w: rows[w]["text_accuracy"]["mean"] + sum(rows[w][f"text_{a}"]["mean"] for a in t2i.ATTRIBUTES)
             for w in rows}
    text_w = max(score, key=score.get)
    label_w, label_fd = best("label_frechet_ratio")
    at = rows[text_w]
    targets = {"judge_accuracy_95": at["text_accuracy"]["mean"] >= 0.95,
               **{f"{a}_matched_80": at[f"text_{a}"]["mean"] >= 0.80 for a in t2i.ATTRIBUTES},
               "frechet_within_2x_label_best": at["text_frechet_ratio"]["mean"] <= 2 * label_fd}
    return {"per_weight": rows, "text_best_weight": float(text_w), "label_best_weight": float(label_w),
            "label_best_frechet_ratio": label_fd, "targets": targets,
            "targets_met": [k for k, v in targets.items() if v]}


def encoder_report(pair, n_test: int) -> dict:
    test = t2i.caption_data("test")
    x, ids, y = test["images"][:n_test], test["ids"][0, :n_test], test["labels"][:n_test]
    report = t2i.retrieval(pair, x, ids)
    zero_shot = (t2i.zero_shot(pair, x) == y).double().mean().item()
    return {**report, "zero_shot_accuracy": zero_shot, "n_test": n_test,
            "targets": {"retrieval_top1_5x_chance": report["caption_to_image_top1"] >= 5 * report["chance_top1"],
                        "zero_shot_90": zero_shot >= 0.9}}


def parse(argv):
    p = benchmark_parser(__doc__, "build/benchmarks/text_to_image.json", model=None,
                         knob_help="override a chapter-17 knob, e.g. per_class=50")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    cfg = chapter_settings("17", args.profile, **knob_overrides(args))
    judge = load_judge(cfg.profile)
    pair, pair_info = t2i.encoder_pair(cfg.model, cfg.profile, progress=False)
    net, info = t2i.text_unet(cfg.model, cfg.profile, progress=False)
    tcfg = info["train_config"]
    base, base_tcfg = control.base_model(progress=False)
    result = {"benchmark": "text_to_image", "profile": cfg.profile, "settings": cfg.as_dict(),
              "models": {"source": info["source"], "text_unet_steps": info.get("train_steps", info.get("steps")),
                         "text_unet_seconds": info.get("train_seconds", info.get("seconds")),
                         "clip_steps": pair_info.get("train_steps", pair_info.get("steps"))},
              "label_model": "reference mnist-cond", "sampler": "DPM-Solver++(2M)",
              "judge": judge.describe(), "encoder_pair": encoder_report(pair, cfg.n_test),
              "cost": {**t2i.pipeline_cost(net, tcfg, base, base_tcfg, cfg.sample_steps),
                       "memory": t2i.pipeline_memory(net, tcfg, n=64, steps=cfg.sample_steps)}, "seeds": []}
    write_result(args, result, pick_device())
    for seed in range(args.seed, args.seed + args.seeds):
        result["seeds"].append(one_seed(seed, cfg, net, tcfg, base, base_tcfg, judge))
        result["summary"] = summary(result["seeds"], guidance_weights(cfg.guidance_weights))
        write_result(args, result, pick_device())
    print(json.dumps({"encoder_pair": result["encoder_pair"]["targets"], **result["summary"]["targets"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
