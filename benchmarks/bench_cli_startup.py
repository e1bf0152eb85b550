"""How fast the command starts: `dallebrain --help` (median of --runs, wall time of the whole process), the bare
interpreter beside it, and what `python -X importtime` says the CLI imports (no torch, no numpy).

    python benchmarks/bench_cli_startup.py --runs 7
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from _bench import check_at_least  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def wall(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    check_at_least(1, runs=args.runs)
    help_s = wall([sys.executable, "-m", "dallebrain.cli", "--help"], args.runs)
    bare_s = wall([sys.executable, "-c", "pass"], args.runs)
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import dallebrain.cli"], capture_output=True,
                           text=True, check=True).stderr
    code = ("import sys, dallebrain.cli; print([m for m in ('torch', 'numpy', 'diffusers', 'transformers', "
            "'gradio', 'pandas', 'rich') if m in sys.modules])")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    own = [line for line in trace.splitlines() if line.rstrip().endswith("dallebrain.cli")]
    print("| what | median wall time (s) |\n|---|---|")
    print(f"| `dallebrain --help` | {help_s:.3f} |")
    print(f"| `python -c pass` (the interpreter alone) | {bare_s:.3f} |")
    print(f"\nimport dallebrain.cli: {own[-1].split('|')[1].strip() if own else '?'} us cumulative; "
          f"heavy modules imported: {heavy}")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
