"""Ageing benchmark (issue 14): `evaluate-ageing` on a prepared longitudinal cohort with the shipped (or a given)
ageing network; prints the report's tables (per gap: network / copy / cohort-mean [/ sdedit] x SSIM, PSNR,
tissue-fraction errors, ventricle error as a share of the true change, identity retrieval), the monotone
sequences and the issue's targets, plus the wall time. Asserts nothing.

  OMP_NUM_THREADS=1 python benchmarks/bench_ageing.py --data PREPARED_LONGITUDINAL [--model AGEING_FOLDER]
      [--out DIR] [--split val,test] [--max-people 8] [--slice-stride 6] [--ldm MODEL --ldm-pairs 48]

On one CPU thread a 128-pixel pair costs about 0.35 s (the network ~0.12 s, four tissue-judge passes ~0.06 s
each), so --slice-stride keeps a run of 8 people within minutes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from dallebrain.cli._common import OneLineParser


def main(argv: list[str] | None = None) -> None:
    from dallebrain.ageing.evaluate import AgeingEvalOptions, evaluate_ageing
    from dallebrain.ageing.evaluate_report import REPORT_MD

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="ageing network folder (default: shipped)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: a temporary one)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-people", type=int, default=None)
    parser.add_argument("--slice-stride", type=int, default=1)
    parser.add_argument("--ldm", type=Path, default=None)
    parser.add_argument("--ldm-pairs", type=int, default=48)
    parser.add_argument("--strength", type=float, default=0.3)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier report in --out (as the CLI's evaluate-ageing --overwrite)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "ageing"
        options = AgeingEvalOptions(args.data, out, args.model, tuple(args.split.split(",")), args.max_people,
                                    args.slice_stride, args.ldm, args.ldm_pairs, args.strength,
                                    overwrite=args.overwrite or args.out is None)  # a temporary --out is new
        started = time.time()
        evaluate_ageing(options, progress=True)
        print((out / REPORT_MD).read_text())
        print(f"wall time {time.time() - started:.0f} s; report in {out if args.out else '(temporary)'}")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
