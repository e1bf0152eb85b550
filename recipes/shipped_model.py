"""The recipe of the model that ships inside the package: simulate -> prepare -> clip -> vae -> ldm ->
prior -> decoder -> fp16 pipeline folder (-> optionally installed as the package's default model).

    python recipes/shipped_model.py --work runs/shipped --subjects 200 --configs base [--install]

Every step is a `dallebrain` command, so the recipe is exactly what a user would run; a finished step is
skipped on a rerun (each stage resumes from its checkpoints), so a killed run continues where it stopped.
`--configs tiny --subjects 4` runs the whole chain in a few minutes (a test does so).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], log: list) -> None:
    start = time.time()
    print("+ dallebrain " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "dallebrain.cli", *args], check=True)
    log.append({"command": "dallebrain " + " ".join(args), "seconds": round(time.time() - start, 1)})


def stage(name: str, out: Path, args: list[str], configs: str, log: list, done_marker: str = "config.json") -> None:
    if (out / done_marker).exists() and (out / "losses.csv").exists():
        print(f"= {name}: done ({out})")
        return
    resume = ["--resume"] if (out / "checkpoints" / "latest").exists() else []
    run(["train", name, *args, "--out", str(out), "--config", str(ROOT / "configs" / f"{name}.{configs}.json"),
         *resume], log)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (cohort, data, runs)")
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--configs", default="base", help="config set: base (real run) or tiny (smoke test)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")
    parser.add_argument("--ldm-only", action="store_true",
                        help="VAE + LDM on the pretrained MiniLM only (no brain CLIP, no unCLIP): a CPU-sized run")
    args = parser.parse_args(argv)
    work, log = args.work, []
    cohort, data, runs, model = work / "cohort", work / "prepared", work / "runs", work / "model"
    if not (cohort / "participants.tsv").exists():
        run(["data", "simulate", "--subjects", str(args.subjects), "--out", str(cohort),
             "--workers", str(args.workers)], log)
    if not (data / "metadata.parquet").exists():
        run(["data", "prepare", "--source", "simulated", "--input", str(cohort), "--out", str(data),
             "--size", str(args.size), "--workers", str(args.workers)], log)
    d = ["--data", str(data)]
    clip = [] if args.ldm_only else ["--clip", str(runs / "clip")]
    if not args.ldm_only:
        stage("clip", runs / "clip", d, args.configs, log)
    stage("vae", runs / "vae", d, args.configs, log)
    stage("ldm", model, [*d, "--vae", str(runs / "vae"), *clip, "--set", "compact_text_encoder=true"], args.configs,
          log, done_marker="model_index.json")
    if not args.ldm_only:
        stage("prior", runs / "prior", [*d, *clip, "--into", str(model)], args.configs, log)
        stage("decoder", runs / "decoder", [*d, *clip, "--vae", str(runs / "vae"), "--into", str(model)],
              args.configs, log)
    from dallebrain.pipelines.export import release_folder

    release = release_folder(model, work / "release")
    (work / "recipe_log.json").write_text(json.dumps({"subjects": args.subjects, "configs": args.configs,
                                                      "steps": log}, indent=2))
    if args.install:
        target = ROOT / "src" / "dallebrain" / "weights" / "default"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(release, target)
        print(f"installed as the package's default model: {target}")
    return release


if __name__ == "__main__":
    main()
