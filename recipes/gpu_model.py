"""The whole model on one lent GPU machine in under ten minutes: simulate, prepare, train every stage at base size
(the VAE, the attribute-conditioned LDM, Brain-CLIP, the unCLIP prior and decoder; optionally the VAE's decoder
sharpened against a patch discriminator), and pack the fp16 release folder as at most 8 files of at most 16 MiB
(what the device tool brings back).

    python recipes/gpu_model.py train --work /tmp/w --out "$OUT" [--minutes 9] [--subjects 120]
    python recipes/gpu_model.py unpack FILES_FOLDER --into MODEL_FOLDER    # here, on what came back

Timing: the cohort and the prepared slices take their time first (every core; measured here ~15 s per subject
and worker to simulate); what is left of --minutes, less a reserve for export and packing, is shared among the
stages, lanes side by side on the one GPU: vae -> ldm, clip -> prior -> decoder, and with --sharpen-vae (once
the VAE is there) the decoder sharpening. Each stage is handed its share as `time_budget_s` when it starts (the
lane's time left times the stage's share of the lane's remaining shares), so a slow stage leaves less to the
ones after it and every stage ends with a finished, exported model (training/loop.py cuts max_steps after
timing a few steps). The stage's start-up (loading, the LDM's latent cache) is inside its budget (counted from
the command's start); BUDGET_USE keeps a margin for the process start and the export.

The LDM gets the attribute path from step 0 with the dropouts that made the CPU fine-tune listen
(recipes/attribute_finetune.py: attribute_dropout 0.1, caption_only_dropout 0.3), predicts the velocity as the
shipped UNet does (recipes/v_prediction_finetune.py), and the shipped sampling default (attribute guidance 6).
With --sharpen-vae the release's VAE is the sharpened one (the same encoder, so the same latents); off by default:
on the CPU model it reconstructed better but made the LDM's slices score slightly worse (README "Where blur comes
from").
`--configs tiny --minutes 3` runs the whole chain on a CPU (a slow test does so).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from attribute_finetune import SAMPLING  # noqa: E402  (the shipped sampling default)
from shipped_model import _wait_for, run, run_lanes, stage  # noqa: E402  (one lane runner for both recipes)

PART_BYTES = 15 * 2 ** 20  # under the device tool's 16 MiB per file
MAX_FILES = 8  # the device tool brings back at most 8 files: the parts and the manifest
MANIFEST = "release_manifest.json"
RESERVE_S = 60  # left at the end for the release folder, fp16 conversion and packing
BUDGET_USE = 0.85  # share of a stage's slot given to the stage's command (the rest: process start, export)
# (stage, share of its lane); the lanes run side by side
LANES = {
    "ldm": (("vae", 0.25), ("ldm", 0.75)),
    "unclip": (("clip", 0.3), ("prior", 0.3), ("decoder", 0.4)),
    "sharpen": (("sharpen", 1.0),),
}
# v-prediction: with noise prediction PD-weighted slices came out with clipped white patches, born in the first
# sampling steps (BENCHMARKS.md, "Where in sampling the white patches appear"); the CPU model was fine-tuned to it
LDM_SETTINGS = ["unet.attributes=true", "attribute_dropout=0.1", "caption_only_dropout=0.3",
                "compact_text_encoder=true", "prediction_type=v_prediction"]


class Clock:
    """The run's deadline; each stage's budget is its share of its lane's time left."""

    def __init__(self, minutes: float):
        self.deadline = time.time() + minutes * 60 - RESERVE_S

    def budget(self, lane: str, stage: str) -> float:
        shares = [share for _, share in LANES[lane]]
        names = [name for name, _ in LANES[lane]]
        left_shares = sum(shares[names.index(stage):])
        mine = shares[names.index(stage)]
        left = self.deadline - time.time()
        if left < 10:
            raise RuntimeError(f"no time left for the {stage} stage: raise --minutes or lower --subjects")
        return round(BUDGET_USE * left * mine / left_shares, 1)


def train(args) -> Path:
    clock = Clock(args.minutes)
    work, log = args.work, []
    cohort, data, runs, model = work / "cohort", work / "prepared", work / "runs", work / "model"
    workers = str(args.workers or os.cpu_count() or 2)
    if not (cohort / "participants.tsv").exists():
        run(["data", "simulate", "--subjects", str(args.subjects), "--out", str(cohort), "--workers", workers], log)
    if not (data / "metadata.parquet").exists():
        run(["data", "prepare", "--source", "simulated", "--input", str(cohort), "--out", str(data),
             "--size", str(args.size), "--workers", workers], log)
    d = ["--data", str(data)]
    vae, clip = ["--vae", str(runs / "vae")], ["--clip", str(runs / "clip")]
    vae_done = runs / "vae" / "metrics.json"  # written last by the VAE's export

    def step(lane: str, name: str, out: Path, extra: list[str], configs: str = args.configs,
             wait: Path | None = None, budget_name: str | None = None):
        """A lane step: `dallebrain train NAME` (configs/NAME.CONFIGS.json) with the stage's share of the time left
        when it starts; shipped_model.stage skips a finished stage and resumes a killed one."""
        def go():
            if wait is not None:
                _wait_for(wait, poll_s=2.0)  # raises once another lane failed (run_lanes marks it)
            budget = clock.budget(lane, budget_name or name)
            stage(name, out, [*extra, "--set", f"time_budget_s={budget}"], configs, log,
                  done_marker="model_index.json" if name == "ldm" else "config.json")
        return go

    sharpen = [*d, "--set", f"init_from={runs / 'vae'}"]
    if args.configs == "tiny":  # the tiny VAE's architecture, under the sharpening losses
        sharpen += ["--set", "block_out_channels=[8,16]", "--set", "norm_num_groups=4",
                    "--set", "mid_block_attention=false", "--set", "crop_size=32", "--set", "batch_size=4",
                    "--set", "discriminator.channels=8", "--set", "discriminator.layers=2"]
    lanes = [
        [step("ldm", "vae", runs / "vae", d),
         step("ldm", "ldm", model, [*d, *vae, *[a for s in LDM_SETTINGS for a in ("--set", s)]])],
        [step("unclip", "clip", runs / "clip", d),
         step("unclip", "prior", runs / "prior", [*d, *clip, "--into", str(model)]),
         step("unclip", "decoder", runs / "decoder", [*d, *clip, *vae, "--into", str(model)], wait=vae_done)],
    ]
    if args.sharpen_vae:  # configs/vae.sharpen.json
        lanes.append([step("sharpen", "vae", runs / "vae_sharp", sharpen, configs="sharpen", wait=vae_done,
                           budget_name="sharpen")])
    run_lanes(lanes, parallel=True)
    from dallebrain.pipelines.export import release_folder, update_model_info

    info = {"sampling": SAMPLING, "recipe": "recipes/gpu_model.py"}
    if args.sharpen_vae:  # the sharpened decoder, with the encoder (and latents) the LDM was trained on
        shutil.rmtree(model / "vae")
        shutil.copytree(runs / "vae_sharp", model / "vae",
                        ignore=shutil.ignore_patterns("checkpoints", "samples", "losses.csv", "train_config.json"))
        info["vae_sharpened"] = json.loads((runs / "vae_sharp" / "metrics.json").read_text())
    update_model_info(model, info)
    release = release_folder(model, work / "release")
    (release / "recipe_log.json").write_text(json.dumps({"subjects": args.subjects, "configs": args.configs,
                                                         "minutes": args.minutes, "steps": log}, indent=2))
    pack(release, args.out)
    return release


def pack(release: Path, out: Path) -> list[Path]:
    """The release folder as one uncompressed tar (fp16 weights hardly compress) cut into parts of PART_BYTES,
    plus a manifest with each part's sha256; refused when it would need more than MAX_FILES files."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out.parent / f".{out.name}.release.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(release, arcname="release")
    size = archive.stat().st_size
    count = -(-size // PART_BYTES)
    if count + 1 > MAX_FILES:
        archive.unlink()
        raise SystemExit(f"error: the release is {size / 2 ** 20:.1f} MiB: more than {MAX_FILES - 1} parts of "
                         f"{PART_BYTES // 2 ** 20} MiB; use smaller models")
    parts = []
    with open(archive, "rb") as f:
        for i in range(count):
            part = out / f"release.tar.part{i:02d}"
            chunk = f.read(PART_BYTES)
            tmp = part.with_name(part.name + ".tmp")
            tmp.write_bytes(chunk)
            tmp.replace(part)
            parts.append(part)
    archive.unlink()
    manifest = {"parts": [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                           "bytes": p.stat().st_size} for p in parts], "bytes": size,
                "unpack": "python recipes/gpu_model.py unpack FOLDER --into MODEL"}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out / MANIFEST)
    print(f"release packed: {len(parts)} parts, {size / 2 ** 20:.1f} MiB, in {out}", flush=True)
    return parts


def unpack(folder: Path, into: Path) -> Path:
    """Check every part against the manifest, join them and unpack the release folder as `into` (which must not
    exist); a missing or altered part is a one-line error and nothing is written."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise SystemExit(f"error: no {MANIFEST} in {folder}")
    if into.exists():
        raise SystemExit(f"error: {into} exists: choose a new folder")
    manifest = json.loads(manifest_path.read_text())
    chunks = []
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.is_file():
            raise SystemExit(f"error: part {part['name']} is missing from {folder}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise SystemExit(f"error: part {part['name']} does not match its sha256 in {MANIFEST}")
        chunks.append(data)
    staging = into.with_name(f".{into.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    import io

    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        tar.extractall(staging, filter="data")  # "data": no links out of the folder, no absolute paths
    (staging / "release").replace(into)
    staging.rmdir()
    print(f"model unpacked: {into}")
    return into


def main(argv: list[str] | None = None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="simulate, prepare, train every stage, pack the release")
    t.add_argument("--work", type=Path, required=True, help="working folder (cohort, data, runs)")
    t.add_argument("--out", type=Path, required=True, help="where the packed release goes ($OUT on the device)")
    t.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of the whole run")
    t.add_argument("--subjects", type=int, default=120)
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--configs", default="base", help="config set: base (the GPU run) or tiny (a CPU smoke test)")
    t.add_argument("--workers", type=int, default=0, help="data workers (default: every core)")
    t.add_argument("--sharpen-vae", action="store_true",
                   help="also sharpen the VAE's decoder against a patch discriminator and ship it")
    u = sub.add_parser("unpack", help="join and check the parts that came back; unpack the model folder")
    u.add_argument("folder", type=Path)
    u.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "unpack":
        return unpack(args.folder, args.into)
    if args.minutes <= RESERVE_S / 60:
        raise SystemExit(f"error: --minutes must leave time beyond the {RESERVE_S} s reserve, got {args.minutes}")
    return train(args)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
