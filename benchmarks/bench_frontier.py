"""The frontier of UNet size x training steps on this machine: which LDM to train for a given CPU budget.

    python benchmarks/bench_frontier.py --data PREPARED --eval EVAL_OUT --work W \
        --sizes 48,96,192 16,32,64 32,64,128 --steps 1000 --at 250,500,1000 --n 64 [--lanes 2 --threads 1]

Each size is one `dallebrain train ldm` run from scratch (configs/ldm.cpu.json with unet.block_out_channels
replaced, GroupNorm groups 32 or the largest power of two dividing every width; attribute-conditioned as the shipped
model is), on the shipped model's VAE and Brain-CLIP text tower so that only the UNet differs; the runs share one
latent cache (built first) and train --lanes at a time with --threads each, as the shipped recipe's lanes do. The
EMA weights of the checkpoints at --at steps are scored like `bench_sampling.py --data --eval`: Frechet distance of
--n generated slices to the --n held-out test slices whose captions prompted them, in the evaluation encoder's space
(trained by `dallebrain evaluate ... --out EVAL_OUT`, read from EVAL_OUT/encoder) and in Brain-CLIP's, at the
default sampler, steps and guidance and the shipped model's attribute guidance. The shipped model is scored the same
way as a reference point. Training seconds are steps x the run's median seconds per step from its losses.csv
(optimiser steps only: cache building and checkpoints left out), so the x axis is what a step costs on this machine.

Writes W/frontier.csv, W/frontier.png (distance against training minutes, one line per size) and prints a
markdown table. A finished run or score is reused on a rerun (W/scores.json), so a killed benchmark continues.
Note: checkpoints before the last are mid-schedule (the cosine decays to --steps), as in any single-run frontier.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "dallebrain" / "weights" / "default"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import check_at_least, check_holds, check_prepared  # noqa: E402  (benchmarks/_bench.py)
from bench_sampling import Scorer  # noqa: E402  (the quality half of the sampling benchmark)

from dallebrain.data.io import atomic_path  # noqa: E402

LOADING = threading.Lock()  # one pipeline loaded at a time, whichever lane asks


def run_name(widths: list[int]) -> str:
    return "unet-" + "-".join(map(str, widths))


def groups(widths: list[int]) -> int:
    """GroupNorm groups: the shipped 32 where every width divides by it, else the largest power of two that
    divides them all (16 for 16,32,64 or 48,96,192)."""
    g = 32
    while any(w % g for w in widths):
        g //= 2
    return g


def build_cache(data: Path, work: Path) -> Path:
    """The latent + text-state cache every run reads (what `train ldm` would build in each run's folder), made once
    here so the runs can train side by side from the start."""
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.vae import load_vae
    from dallebrain.training.cache import build_latent_cache
    from dallebrain.training.config import load_config
    from dallebrain.training.ldm import LdmTrainConfig, load_conditioning

    config = load_config(LdmTrainConfig, ROOT / "configs" / "ldm.cpu.json")
    dataset = SliceDataset(data, "train", max_rows=config.max_rows or None, seed=config.seed)
    encoder, tokenizer = load_conditioning(SHIPPED / "clip")
    build_latent_cache(dataset, load_vae(SHIPPED / "vae").eval(), encoder, tokenizer, work / "cache",
                       config.phrasings)
    return work / "cache"


def train(data: Path, work: Path, widths: list[int], steps: int, at: list[int], threads: int) -> Path:
    """One from-scratch LDM run of this width into work/<name> (skipped when it has exported)."""
    out = work / run_name(widths)
    if (out / "unet" / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "cache").exists():
        (out / "cache").symlink_to((work / "cache").resolve(), target_is_directory=True)
    from dallebrain.training.checkpoint import holds_run

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "dallebrain.cli", "train", "ldm", "--data", str(data), "--out", str(out),
               "--vae", str(SHIPPED / "vae"), "--clip", str(SHIPPED / "clip"),
               "--config", str(ROOT / "configs" / "ldm.cpu.json"), "--max-steps", str(steps), "--no-progress",
               "--set", f"unet.block_out_channels={json.dumps(widths)}",
               "--set", f"unet.norm_num_groups={groups(widths)}", "--set", f"checkpoint_every={min(at)}",
               "--set", f"keep_checkpoints={steps // min(at)}", "--set", f"log_every={min(at) // 5}",
               *(["--resume"] if holds_run(out / "checkpoints") else [])]
    print("+", " ".join(command[2:]), flush=True)
    with open(out / "bench.log", "a") as log:  # the lanes' output apart, not interleaved on the terminal
        subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return out


def seconds_to(out: Path, step: int) -> float:
    """Training seconds up to `step`: step x the run's median seconds per step over the windows of losses.csv (its
    throughput column), so a stretch with other work sharing the cores does not bend the curve."""
    import statistics

    config = json.loads((out / "train_config.json").read_text())
    with open(out / "losses.csv") as f:
        rates = [float(row["images_per_second"]) for row in csv.DictReader(f) if int(row["step"]) > 1]
    if not rates:
        raise ValueError(f"{out}/losses.csv has no throughput rows")
    return step * config["batch_size"] / statistics.median(rates)


def score_run(out: Path, at: list[int], scorer: Scorer, attribute_guidance: float | None, scores: dict,
              record) -> None:
    """Score the EMA weights of each checkpoint in --at not yet in `scores` (the last first: it says the most),
    handing each to `record` as it comes, so a killed benchmark keeps what it measured."""
    from safetensors.torch import load_file

    from dallebrain.api import load_pipeline

    with LOADING:  # transformers' loading is not thread-safe (its meta-device init is process-wide)
        pipe = load_pipeline(out)
    pipe.attribute_guidance = attribute_guidance
    for step in sorted(at, reverse=True):
        if str(step) in scores:
            continue
        checkpoint = out / "checkpoints" / f"step-{step:07d}" / "ema.safetensors"
        pipe.unet.load_state_dict(load_file(checkpoint))
        scores[str(step)] = scorer.score(pipe.sample(scorer.prompts, scorer.seeds))
        print(f"{out.name} step {step}: {scores[str(step)]}", flush=True)
        record(out.name, scores)


def plot(rows: list[dict], shipped: dict, floor: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = [s for s in ("encoder", "clip") if s in floor]
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.5 * len(spaces), 4))
    for ax, space in zip([axes] if len(spaces) == 1 else axes, spaces, strict=True):
        for name in dict.fromkeys(r["run"] for r in rows):
            mine = [r for r in rows if r["run"] == name]
            ax.plot([r["minutes"] for r in mine], [r[space] for r in mine], "o-",
                    label=f"{name[5:]} ({mine[0]['params_m']:.1f} M)")
        ax.axhline(shipped[space], color="k", ls="--", lw=1, label="shipped model")
        ax.axhline(floor[space], color="grey", ls=":", lw=1, label="real/real floor")
        ax.set(xlabel="training minutes on this machine", ylabel=f"Frechet distance ({space})", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def load_unet_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


def measure(args, sizes: list[list[int]], at: list[int], done: dict) -> list[Path]:
    """Train every size (skipping exported runs) and score its checkpoints, lanes side by side; scores go to
    W/scores.json as they come."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from dallebrain.api import load_pipeline
    from dallebrain.data.io import write_json_atomic

    build_cache(args.data, args.work)
    lock = threading.Lock()

    def record(key: str, value: dict) -> None:
        with lock:
            done[key] = dict(value)
            write_json_atomic(args.work / "scores.json", done)

    torch.set_num_threads(args.threads)
    scorer = Scorer(args.data, args.eval, SHIPPED, args.n)
    record("floor", scorer.floor)
    guidance = load_pipeline(SHIPPED).attribute_scale(2.0)
    if "shipped" not in done:
        record("shipped", scorer.score(load_pipeline(SHIPPED).sample(scorer.prompts, scorer.seeds)))

    def lane(widths: list[int]) -> Path:  # train, then score while the other lane may still be training
        torch.set_num_threads(args.threads)  # in this thread too: OpenMP's thread count is set per calling thread
        out = train(args.data, args.work, widths, args.steps, at, args.threads)
        score_run(out, at, scorer, guidance, dict(done.get(out.name, {})), record)
        return out

    with ThreadPoolExecutor(args.lanes) as pool:  # runs side by side (in --sizes order)
        return list(pool.map(lane, sizes))


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set")
    parser.add_argument("--eval", type=Path, required=True, help="a `dallebrain evaluate --out` folder (its encoder)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs, the cache and the results")
    parser.add_argument("--sizes", nargs="+", required=True, help="UNet widths, e.g. 32,64,128 (one per run)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--at", default="250,500,1000", help="checkpoint steps scored (multiples of the first)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run and of its scoring")
    parser.add_argument("--lanes", type=int, default=2, help="runs trained side by side (the recipe's way on 2 cores: "
                        "small UNets use 2 threads poorly); list the largest first so the lanes end together")
    parser.add_argument("--report", action="store_true", help="only the table and plot of what W/scores.json holds "
                        "(e.g. after a killed run)")
    args = parser.parse_args(argv)
    check_prepared("data", args.data)  # before the train split is encoded
    check_holds("--eval", args.eval, "encoder/config.json", "an evaluate folder with its encoder")
    check_at_least(1, steps=args.steps, n=args.n, threads=args.threads, lanes=args.lanes)
    at = sorted({int(s) for s in args.at.split(",")})
    if at[-1] != args.steps or any(s % at[0] for s in at):
        raise SystemExit(f"error: --at must end at --steps ({args.steps}) and hold multiples of its first step")
    sizes = [[int(w) for w in s.split(",")] for s in args.sizes]
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / "scores.json"
    done = json.loads(saved.read_text()) if saved.exists() else {}
    runs = [args.work / run_name(w) for w in sizes] if args.report else measure(args, sizes, at, done)
    if "floor" not in done:  # a scores.json from before the floor was stored
        done["floor"] = Scorer(args.data, args.eval, SHIPPED, args.n).floor
    rows = []
    for out in runs:
        if not (out / "unet" / "diffusion_pytorch_model.safetensors").exists():  # --report: not yet trained
            continue
        params = sum(p.numel() for p in load_unet_weights(out).values()) / 1e6
        for step in at:
            if str(step) in done.get(out.name, {}):  # --report: what a killed benchmark scored
                rows.append({"run": out.name, "params_m": params, "step": step,
                             "minutes": seconds_to(out, step) / 60, **done[out.name][str(step)]})
    if not rows or "shipped" not in done:
        raise SystemExit(f"error: {saved} holds no scores of these runs yet")
    with atomic_path(args.work / "frontier.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, done["shipped"], done["floor"], args.work / "frontier.png")
    spaces = [s for s in ("encoder", "clip") if s in done["floor"]]
    print("| UNet widths | parameters (M) | steps | training minutes |" + "".join(f" FD ({s}) |" for s in spaces))
    print("|---|---|---|---|" + "---|" * len(spaces))
    for r in rows:
        print(f"| {r['run'][5:]} | {r['params_m']:.2f} | {r['step']} | {r['minutes']:.1f} |"
              + "".join(f" {r[s]:.3f} |" for s in spaces))
    print("| shipped model (v1 3000 steps + v2 fine-tune 4500) | 4.61 | | |"
          + "".join(f" {done['shipped'][s]:.3f} |" for s in spaces))
    print("| real/real floor | | | |" + "".join(f" {done['floor'][s]:.3f} |" for s in spaces))
    print(f"\nwrote {args.work / 'frontier.csv'} and {args.work / 'frontier.png'}")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
