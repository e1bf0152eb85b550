"""The recipe of the shipped model v2: the v1 LDM fine-tuned into an attribute-conditioned one on a fresh
Simulator-v2 cohort, keeping v1's VAE (same latent space), text encoder and unCLIP parts.

    python recipes/attribute_finetune.py --work /path/to/cache/v2 --subjects 120 --steps 2000 [--install]

Why a fine-tune and not `shipped_model.py` from scratch: on this 2-core machine the from-scratch chain takes
hours, while the attribute embedding starts at zero output (models/unet.zero_attribute_output), so step 0 is the
v1 model exactly and every step after only adds what the attributes carry (and the v2 simulator's contrasts).
Every step is a `dallebrain` command; a killed run resumes (the cohort, the prepared set and the LDM stage's
checkpoints are kept in --work).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import run  # noqa: E402  (the recipes' one way of running a dallebrain command)

SHIPPED = ROOT / "src" / "dallebrain" / "weights" / "default"
KEPT = ("vae", "clip", "prior", "decoder")  # copied from the base model unchanged


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (cohort, data, run)")
    parser.add_argument("--base", type=Path, default=SHIPPED, help="the text-only model to start from")
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--configs", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="more LDM settings, key=value")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")
    args = parser.parse_args(argv)
    work, log = args.work, []
    cohort, data, model = work / "cohort", work / "prepared", work / "model"
    if not (cohort / "participants.tsv").exists():
        run(["data", "simulate", "--subjects", str(args.subjects), "--seed", str(args.seed), "--out", str(cohort),
             "--workers", str(args.workers)], log)
    if not (data / "metadata.parquet").exists():
        run(["data", "prepare", "--source", "simulated", "--input", str(cohort), "--out", str(data), "--size", "128",
             "--workers", str(args.workers)], log)
    if not (model / "model_index.json").exists():
        from dallebrain.training.checkpoint import holds_run

        resume = ["--resume"] if holds_run(model / "checkpoints") else []
        sets = [f"init_from={args.base}", f"max_steps={args.steps}", "compact_text_encoder=true",
                "unet.attributes=true", *args.set]
        run(["train", "ldm", "--data", str(data), "--vae", str(args.base / "vae"), "--out", str(model),
             "--config", str(ROOT / "configs" / f"ldm.{args.configs}.json"), *[a for s in sets for a in ("--set", s)],
             *resume], log)
    for name in KEPT:  # the unCLIP route and the VAE stay the base's
        if (args.base / name).is_dir() and not (model / name / "config.json").exists():
            shutil.copytree(args.base / name, model / name, dirs_exist_ok=True)
    from dallebrain.pipelines.export import release_folder, update_model_info

    base_info = json.loads((args.base / "dallebrain.json").read_text())
    update_model_info(model, {"unclip": base_info.get("unclip"),
                              "fine_tuned_from": {"model": "dallebrain shipped v1", "ldm_steps": base_info.get(
                                  "ldm_steps"), "trained_on": base_info.get("trained_on")}})
    release = release_folder(model, work / "release")
    (work / "recipe_log.json").write_text(json.dumps({"subjects": args.subjects, "steps": args.steps, "log": log},
                                                     indent=2))
    if args.install:
        target = SHIPPED
        staging = target.with_name("default.new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(release, staging)
        shutil.rmtree(target)
        staging.rename(target)
        print(f"installed as the package's default model: {target}")
    return release


if __name__ == "__main__":
    main()
