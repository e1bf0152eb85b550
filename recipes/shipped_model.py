"""The recipe of the model that ships inside the package: simulate -> prepare -> two training lanes
(vae -> ldm, and clip -> prior -> decoder) -> fp16 pipeline folder (-> optionally installed as the package's
default model).

    python recipes/shipped_model.py --work runs/shipped --subjects 200 --configs cpu [--install]

The lanes run side by side (`--lanes 2`, one thread each on a 2-core machine): small networks use two cores
poorly, so two one-thread trainings finish sooner than the same trainings one after the other with two
threads. The LDM is conditioned on the pretrained MiniLM token states (as Stable Diffusion is on a frozen text
encoder), so it need not wait for Brain-CLIP; the unCLIP prior and decoder use Brain-CLIP's embeddings.

Every step is a `dallebrain` command, so the recipe is exactly what a user would run; a finished step is
skipped on a rerun (each stage resumes from its checkpoints), so a killed run continues where it stopped.
`--configs tiny --subjects 4` runs the whole chain in a few minutes (a test does so).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "dallebrain" / "weights" / "default"  # the package's default model


def run(args: list[str], log: list, threads: int | None = None) -> None:
    start = time.time()
    print("+ dallebrain " + " ".join(args), flush=True)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-m", "dallebrain.cli", *args], env=env)
    if done.returncode:  # the command said why on stderr, just above: one line more, not a traceback
        raise SystemExit(f"error: `dallebrain {args[0]}{' ' + args[1] if len(args) > 1 else ''} ...` failed "
                         f"(exit {done.returncode}); the recipe stops here and a rerun continues from its finished "
                         "steps")
    log.append({"command": "dallebrain " + " ".join(args), "seconds": round(time.time() - start, 1),
                "threads": threads})


def simulate_and_prepare(work: Path, subjects: int, workers: int, log: list, size: int = 128,
                         seed: int | None = None) -> Path:
    """The simulated cohort (work/cohort) and its prepared slices (work/prepared), each made only if missing."""
    cohort, data = work / "cohort", work / "prepared"
    if not (cohort / "participants.tsv").exists():
        run(["data", "simulate", "--subjects", str(subjects), *(["--seed", str(seed)] if seed is not None else []),
             "--out", str(cohort), "--workers", str(workers)], log)
    if not (data / "metadata.parquet").exists():
        run(["data", "prepare", "--source", "simulated", "--input", str(cohort), "--out", str(data),
             "--size", str(size), "--workers", str(workers)], log)
    return data


def fill_placeholders(argument: str, **values) -> str:
    """A recorded command's placeholders named in `values` ("{model}", "{root}", ...) replaced; not str.format,
    since a --set value may hold braces (unclip_decoder.py, vae_decoder.py)."""
    for key, value in values.items():
        argument = argument.replace("{" + key + "}", str(value))
    return argument


def add_stage_options(parser, base_help: str, steps: int, cohort: str = "the cohort") -> None:
    """The one-stage recipes' own options (v_prediction_finetune.py, contrast_balance_finetune.py,
    unclip_decoder.py, vae_decoder.py): the working folder, the model to start from, a prepared set, the steps."""
    parser.add_argument("--work", type=Path, required=True, help="working folder (cohort, data, run)")
    parser.add_argument("--base", type=Path, default=SHIPPED, help=base_help)
    parser.add_argument("--data", type=Path, default=None,
                        help=f"a prepared set to train on (default: simulate and prepare {cohort} in --work)")
    parser.add_argument("--steps", type=int, default=steps)


def check_work(work: Path) -> None:
    """--work must be a folder or a new path: one line and exit 1 before any work (a file failed in a traceback
    when the first result was written)."""
    if Path(work).exists() and not Path(work).is_dir():
        raise SystemExit(f"error: --work {work} exists and is not a folder")


def check_prepared(data: Path | None) -> None:
    """--data, when given, must be a prepared set: one line and exit 1 before any work."""
    if data is not None and not (data / "metadata.parquet").is_file():
        raise SystemExit(f"error: {data} is not a prepared data set (no metadata.parquet)")


def guidance_table(text: str, option: str) -> dict[str, float]:
    """A per-contrast attribute guidance table from "CONTRAST=SCALE,..." (as dallebrain.json's
    `attribute_guidance_by_contrast`); a malformed one exits in one line naming the option."""
    from dallebrain.pipelines.request import attribute_guidance_by_contrast

    try:
        items = [item.split("=", 1) for item in text.split(",")]
        if any(len(item) != 2 for item in items):
            raise ValueError("each entry is CONTRAST=SCALE")
        table = {k.strip(): float(v) for k, v in items}
        attribute_guidance_by_contrast({"sampling": {"attribute_guidance_by_contrast": table}})
    except ValueError as exc:
        raise SystemExit(f"error: {option} takes CONTRAST=SCALE,... ({text!r}): {exc}") from None
    return table


def add_fine_tune_options(parser) -> None:
    """The options every fine-tune recipe shares (attribute_finetune.py, v_prediction_finetune.py,
    contrast_balance_finetune.py): the cohort it
    simulates, the configs and workers, extra LDM settings, and --install."""
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--configs", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="more LDM settings, key=value")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")


def unet_fine_tune(args, stage_name: str, settings: list[str], record_key: str, sampling: dict,
                   check_base=None, interpolate: float | None = None) -> Path:
    """The fine-tune recipes' one chain (v_prediction_finetune.py, contrast_balance_finetune.py): check the base
    and the data (one line, before any work), simulate and prepare the cohort unless --data is given, train the
    base's UNet `args.steps` more steps with `settings` in work/`stage_name` (resumed when a run is there), and
    release the base with that UNet and its scheduler, the stage recorded under `record_key` and `sampling` (the
    attribute guidance measured for the new UNet) in its dallebrain.json. check_base(base folder) raises
    SystemExit for a base the recipe does not start from. `interpolate` (alpha in [0, 1]): the released UNet is
    (1 - alpha) * base + alpha * fine-tune (WiSE-FT, training/weight_interpolation.py), recorded as
    "interpolated_with_base"; None releases the fine-tune as trained. Returns the release folder."""
    work, base, log = args.work, args.base, []
    check_work(work)
    if not (base / "scheduler" / "scheduler_config.json").is_file() or not (base / "unet").is_dir():
        raise SystemExit(f"error: {base} is not a pipeline folder (no unet/ and scheduler/)")
    check_prepared(args.data)
    if check_base is not None:
        check_base(base)
    data = args.data or simulate_and_prepare(work, args.subjects, args.workers, log, seed=args.seed)
    out = work / stage_name
    if not (out / "model_index.json").exists():  # a pipeline folder: finished when its index is written
        from dallebrain.training.checkpoint import holds_run

        resume = ["--resume"] if holds_run(out / "checkpoints") else []
        sets = [f"init_from={base}", f"max_steps={args.steps}", *settings, *args.set]
        run(["train", "ldm", "--data", str(data), "--vae", str(base / "vae"), "--out", str(out),
             "--config", str(ROOT / "configs" / f"ldm.{args.configs}.json"),
             *[a for s in sets for a in ("--set", s)], *resume], log)
    # the base with the fine-tuned UNet and its scheduler (which says what the UNet predicts)
    model = model_with_parts(base, work, {name: out / name for name in ("unet", "scheduler")})
    trained_info = json.loads((out / "dallebrain.json").read_text())
    # the steps trained, which a time budget (time_budget_s) may have cut below args.steps
    record = {"folder": stage_name, "steps": trained_info.get("ldm_steps", args.steps),
              "settings": [*settings, *args.set]}
    if interpolate is not None:
        from dallebrain.training.weight_interpolation import interpolate_folder

        interpolate_folder(base / "unet", out / "unet", interpolate, model / "unet")
        record["interpolated_with_base"] = {"alpha": interpolate, "method": "WiSE-FT (Wortsman et al. 2022)"}
    from dallebrain.data.io import write_json_atomic
    from dallebrain.pipelines.export import update_model_info

    # a base made by this same stage (a second long stage, say) keeps its record under "earlier", oldest first;
    # the new record replaces it whole rather than merging into it (a key of the old stage must not survive)
    info = json.loads((model / "dallebrain.json").read_text())
    previous = info.pop(record_key, None)
    if isinstance(previous, dict):
        record["earlier"] = [*previous.pop("earlier", []), previous]
        write_json_atomic(model / "dallebrain.json", info)
    update_model_info(model, {record_key: {**record, "trained_on": trained_info.get("trained_on")},
                              "sampling": sampling})
    return release_recipe(model, work, record["steps"], log, args.install)


def train_once(command: list[str], out: Path, log: list) -> None:
    """`dallebrain train COMMAND --out OUT` unless OUT holds a finished stage (its config.json); a stage killed
    midway resumes from any checkpoint it left (the fine-tune recipes' one stage)."""
    if (out / "config.json").exists():
        return
    from dallebrain.training.checkpoint import holds_run

    resume = ["--resume"] if holds_run(out / "checkpoints") else []
    run(["train", *command, "--out", str(out), *resume], log)


def model_with_parts(base: Path, work: Path, parts: dict[str, Path], skip: tuple[str, ...] = ()) -> Path:
    """work/model: the base with each named part replaced by a trained folder (files matching `skip` left out);
    the base's SHA256SUMS.json is not copied, since it no longer describes the folder (the release writes its own)."""
    model = work / "model"
    if model.resolve() == Path(base).resolve() or model.resolve() in Path(base).resolve().parents:
        raise SystemExit(f"error: --base {base} is {model}, which this recipe rebuilds: copy it elsewhere or choose "
                         "another --work")
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(base, model, ignore=shutil.ignore_patterns("SHA256SUMS.json"))
    for name, trained in parts.items():
        shutil.rmtree(model / name, ignore_errors=True)
        shutil.copytree(trained, model / name, ignore=shutil.ignore_patterns(*skip))
    if parts:  # the grey-level maps of the routes that read the replaced weights (pipelines/grey_levels.py)
        from dallebrain.pipelines.grey_levels import drop_grey_level_maps, routes_changed_by

        drop_grey_level_maps(model, routes_changed_by(parts))
    if "vae" in parts:  # the outline head learned the old decoder's halo (models/brain_outline.py)
        from dallebrain.models.brain_outline import drop_brain_outline

        drop_brain_outline(model)
    return model


def release_recipe(model: Path, work: Path, steps: int, log: list, install_it: bool) -> Path:
    """The fine-tune recipes' last steps: the fp16 release of `model` in work/release, the commands run in
    work/recipe_log.json, and the release installed as the package's default when asked."""
    from dallebrain.pipelines.export import release_folder

    release = release_folder(model, work / "release")
    (work / "recipe_log.json").write_text(json.dumps({"steps": steps, "log": log}, indent=2))
    if install_it:
        install(release)
    return release


def install(release: Path) -> Path:
    """Make `release` the package's default model: copied beside it and checked against its SHA256SUMS.json, then
    swapped in by renames (data.io.atomic_dir: the old default is renamed aside, not deleted first), so an
    interrupted or damaged copy never leaves the package without a whole, matching model."""
    from dallebrain.data.io import atomic_dir

    target = SHIPPED
    check_sums(release)
    with atomic_dir(target) as staging:
        shutil.copytree(release, staging, dirs_exist_ok=True)
        check_sums(staging)
    print(f"installed as the package's default model: {target}")
    return target


def check_sums(folder: Path) -> None:
    """Every file of a release folder as its SHA256SUMS.json lists it, and no other (one line and exit 1 else)."""
    import hashlib

    sums_path = folder / "SHA256SUMS.json"
    if not sums_path.is_file():
        raise SystemExit(f"error: {folder} has no SHA256SUMS.json: not a release folder (pipelines/export.py)")
    sums = json.loads(sums_path.read_text())
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p != sums_path}
    wrong = sorted(files ^ set(sums)) or [name for name in sorted(sums)
                                         if hashlib.sha256((folder / name).read_bytes()).hexdigest() != sums[name]]
    if wrong:
        raise SystemExit(f"error: {folder} does not match its SHA256SUMS.json ({', '.join(wrong[:3])}): not installed")


def stage(name: str, out: Path, args: list[str], configs: str, log: list, done_marker: str = "config.json",
          threads: int | None = None) -> None:
    if (out / done_marker).exists() and (out / "losses.csv").exists():
        print(f"= {name}: done ({out})")
        return
    from dallebrain.training.checkpoint import holds_run

    # Any checkpoint folder counts (not only the `latest` pointer): a stage whose pointer was lost still resumes
    # from its newest intact checkpoint instead of refusing to start over.
    resume = ["--resume"] if holds_run(out / "checkpoints") else []
    run(["train", name, *args, "--out", str(out), "--config", str(ROOT / "configs" / f"{name}.{configs}.json"),
         *resume], log, threads)


FAILED = threading.Event()  # set when a lane fails, so a lane waiting on its output stops waiting


def run_lanes(lanes: list[list], parallel: bool) -> None:
    """Run each lane's steps in order; lanes side by side when `parallel`. A lane never waits on another except
    through `_wait_for` (the decoder for the VAE); the first failure is raised once every lane has stopped."""
    if not parallel:
        for lane in lanes:
            for step in lane:
                step()
        return
    from concurrent.futures import ThreadPoolExecutor

    FAILED.clear()  # a failure of an earlier run in this process is not this run's

    def run_lane(lane: list) -> None:
        try:
            for step in lane:
                step()
        except BaseException:
            FAILED.set()
            raise

    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [pool.submit(run_lane, lane) for lane in lanes]
    for future in futures:
        future.result()


def _wait_for(path: Path, poll_s: float = 5.0) -> None:
    while not path.exists():
        if FAILED.is_set():
            raise RuntimeError(f"another lane failed before writing {path}")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (cohort, data, runs)")
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--configs", default="base",
                        help="config set: base (GPU run), cpu (hours on 2 cores) or tiny (smoke test)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=2, choices=(1, 2),
                        help="2: train vae->ldm beside clip->prior->decoder, the cores split between them")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")
    parser.add_argument("--ldm-only", action="store_true",
                        help="VAE + LDM on the pretrained MiniLM only (no brain CLIP, no unCLIP): a CPU-sized run")
    args = parser.parse_args(argv)
    work, log = args.work, []
    runs, model = work / "runs", work / "model"
    data = simulate_and_prepare(work, args.subjects, args.workers, log, size=args.size)
    d = ["--data", str(data)]
    threads = max(1, (os.cpu_count() or 2) // args.lanes) if args.lanes > 1 else None
    vae, clip = ["--vae", str(runs / "vae")], ["--clip", str(runs / "clip")]
    ldm_lane = [lambda: stage("vae", runs / "vae", d, args.configs, log, threads=threads),
                lambda: stage("ldm", model, [*d, *vae, "--set", "compact_text_encoder=true"], args.configs, log,
                              done_marker="model_index.json", threads=threads)]
    unclip_lane = [lambda: stage("clip", runs / "clip", d, args.configs, log, threads=threads),
                   lambda: stage("prior", runs / "prior", [*d, *clip, "--into", str(model)], args.configs, log,
                                 threads=threads),
                   # the decoder needs the VAE: with --lanes 2 it starts long after the VAE (the clip and
                   # prior take longer); wait for it in any case
                   lambda: (_wait_for(runs / "vae" / "config.json"),
                            stage("decoder", runs / "decoder", [*d, *clip, *vae, "--into", str(model)],
                                  args.configs, log, threads=threads))]
    run_lanes([ldm_lane] if args.ldm_only else [ldm_lane, unclip_lane], parallel=args.lanes > 1)
    from dallebrain.pipelines.export import release_folder

    release = release_folder(model, work / "release")
    (work / "recipe_log.json").write_text(json.dumps({"subjects": args.subjects, "configs": args.configs,
                                                      "steps": log}, indent=2))
    if args.install:
        install(release)
    return release


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
