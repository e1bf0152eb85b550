"""Peak memory (RSS) and time of `dallebrain generate --n N` with the shipped model, printed as a table.

    OMP_NUM_THREADS=1 python benchmarks/bench_generate_memory.py --n 1,1000 --steps 2
    OMP_NUM_THREADS=1 python benchmarks/bench_generate_memory.py --n 1000 --steps 2 --images-per-pass 1,8

Each row is a fresh process, measured by the kernel (wait4's ru_maxrss), so the numbers include Python, torch
and the model. Rows with --images-per-pass other than 1 run the same request through the Python API with
`pipe.images_per_pass` set (the CLI always uses the default, 1): memory grows with the pass, never with n.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import check_at_least  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"
API_RUN = """
import sys
from dallebrain.api import generate_to_folder, load_pipeline
pipe = load_pipeline(device="cpu")
pipe.images_per_pass = int(sys.argv[1])
generate_to_folder(pipe, sys.argv[2], sys.argv[3], n=int(sys.argv[4]), steps=int(sys.argv[5]))
"""


def measure(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one child process; a failing child stops the benchmark."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{child.stderr.read()}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1,1000", help="comma-separated image counts")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images-per-pass", default="1", help="comma-separated pass sizes (1 = the CLI)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the images (default: a temp folder)")
    args = parser.parse_args(argv)

    try:  # every run's numbers before the first run
        passes, counts = ([int(v) for v in text.split(",")] for text in (args.images_per_pass, args.n))
    except ValueError:
        raise SystemExit(f"error: --n and --images-per-pass take comma-separated whole numbers, got {args.n!r} and "
                         f"{args.images_per_pass!r}") from None
    check_at_least(1, n=min(counts), images_per_pass=min(passes), steps=args.steps)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    if args.work is None:  # thousands of PNGs: not left in /tmp
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    rows = []
    for per_pass in passes:
        for n in counts:
            out = work / f"n{n}-pass{per_pass}"
            shutil.rmtree(out, ignore_errors=True)
            if per_pass == 1:
                command = [sys.executable, "-m", "dallebrain.cli", "generate", PROMPT, "--n", str(n), "--steps",
                           str(args.steps), "--out", str(out)]
            else:
                command = [sys.executable, "-c", API_RUN, str(per_pass), PROMPT, str(out), str(n), str(args.steps)]
            peak, seconds = measure(command)
            written = len(list(out.glob("*.png")))
            rows.append((n, per_pass, written, peak, seconds))
            shutil.rmtree(out, ignore_errors=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; shipped model, --steps {args.steps}")
    print("|    n | images per pass | PNGs written | peak RSS (MiB) | seconds | images/s |")
    print("|------|-----------------|--------------|----------------|---------|----------|")
    for n, per_pass, written, peak, seconds in rows:
        print(f"| {n:4d} | {per_pass:15d} | {written:12d} | {peak:14.0f} | {seconds:7.1f} | {n / seconds:8.2f} |")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
