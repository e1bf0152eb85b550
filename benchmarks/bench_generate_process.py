"""Whole-process speed of `dallebrain generate --n N` against stock diffusers on the same weights.

    python benchmarks/bench_generate_process.py [--n 8] [--runs 3] [--model FOLDER]

Each run is a fresh process, timed from start to exit (imports, loading, sampling, writing): ours is the CLI at its
defaults (PNG + NIfTI + JSON per image); stock is `StableDiffusionPipeline.from_pretrained` on `dallebrain export`
of the same model at its defaults (PNDM 50 steps, guidance 7.5, one batch of N), writing N PNGs. The two
alternate, the order flipping each run; medians are printed, with the import time alone (`import torch`, and the
diffusers classes each side needs) so the part no pipeline change can remove is visible.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import check_at_least, check_holds  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"
STOCK = """
import sys
from pathlib import Path
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
out = Path(sys.argv[2])
out.mkdir()
for i, image in enumerate(pipe([sys.argv[3]] * int(sys.argv[4])).images):
    image.save(out / f"{i}.png")
"""
IMPORTS = {"import torch": "import torch",
           "ours: import the pipeline's diffusers classes": "from dallebrain.pipelines.text2mri import "
           "Text2MRIPipeline; from diffusers import UNet2DConditionModel, AutoencoderKL",
           "stock: from diffusers import StableDiffusionPipeline": "from diffusers import StableDiffusionPipeline"}


def timed(command: list[str], env: dict) -> float:
    tick = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - tick


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    args = parser.parse_args(argv)
    check_at_least(1, n=args.n, runs=args.runs)
    check_holds("--model", args.model, "dallebrain.json", "a pipeline folder")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        model = ["--model", str(args.model)] if args.model else []
        subprocess.run([sys.executable, "-m", "dallebrain.cli", "export", *model, "--out", str(tmp / "stock")],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        ours = lambda r: [sys.executable, "-m", "dallebrain.cli", "generate", PROMPT, "--n", str(args.n),  # noqa: E731
                          *model, "--out", str(tmp / f"ours-{r}")]
        stock = lambda r: [sys.executable, "-c", STOCK, str(tmp / "stock"), str(tmp / f"stock-{r}"), PROMPT,  # noqa: E731
                           str(args.n)]
        times = {"ours": [], "stock": []}
        for r in range(args.runs):
            order = [("ours", ours), ("stock", stock)]
            for name, command in order if r % 2 == 0 else order[::-1]:
                times[name].append(timed(command(r), env))
                print(f"run {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
        imports = {k: statistics.median(timed([sys.executable, "-c", code], env) for _ in range(args.runs))
                   for k, code in IMPORTS.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours_s, stock_s = statistics.median(times["ours"]), statistics.median(times["stock"])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end; --n {args.n}, medians of {args.runs} alternating runs")
    print("| process | seconds (median) | runs |\n|---|---|---|")
    print(f"| `dallebrain generate --n {args.n}` (defaults) | {ours_s:.1f} | "
          f"{', '.join(f'{t:.1f}' for t in times['ours'])} |")
    print(f"| stock `StableDiffusionPipeline` defaults, same weights | {stock_s:.1f} | "
          f"{', '.join(f'{t:.1f}' for t in times['stock'])} |")
    for k, v in imports.items():
        print(f"| {k} (a process doing only that) | {v:.1f} | |")
    print(f"\nours is {stock_s / ours_s:.2f}x the stock pipeline's speed, whole process")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
