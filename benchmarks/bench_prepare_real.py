"""Throughput of `data prepare --source ixi` on IXI-size T1 volumes (256x256x150, 0.94x0.94x1.2 mm, stored
sagittally like IXI-T1): the MNI152 template in a fake skull, each under its own affine, with noise and bias.

    python benchmarks/bench_prepare_real.py --subjects 12 --workers 2 --out /tmp/bench-ixi

Prints volumes per minute (wall and CPU) and the projected time for 500 volumes. The issue's target is 500 in
under 30 minutes on 2 cores. Writing the cohort is not timed.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from _bench import check_at_least, fresh_scratch  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

IXI_SHAPE = (256, 150, 256)  # A, R(150 sagittal slices), S after the axis codes below
IXI_VOXEL = (0.9375, 1.2, 0.9375)


def write_cohort(root: Path, n: int) -> None:
    import nibabel as nib
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
    from fixtures_cohorts import IXI_COLUMNS, _ixi_row, known_transform, native_grid, native_head

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        to_mni = known_transform(tuple(rng.uniform(-8, 8, 3)), tuple(rng.uniform(0.9, 1.1, 3)),
                                 tuple(rng.uniform(-15, 15, 3)))
        affine = native_grid(to_mni, IXI_SHAPE, IXI_VOXEL, ("A", "R", "S"))
        img = native_head(to_mni, IXI_SHAPE, affine, bias=0.15, noise=3.0, seed=i)
        data = np.clip(np.asarray(img.dataobj) * 4, 0, 32767).astype(np.int16)  # IXI files are int16
        number = 100 + i
        path = root / "IXI-T1" / f"IXI{number:03d}-Guys-{1000 + i:04d}-T1.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), path)
        rows.append(_ixi_row(number, 1 + i % 2, round(float(rng.uniform(20, 86)), 2)))
    pd.DataFrame(rows, columns=IXI_COLUMNS).to_csv(root / "IXI.csv", index=False)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dallebrain-bench-ixi"))
    args = parser.parse_args(argv)
    check_at_least(1, subjects=args.subjects, workers=args.workers)
    check_at_least(16, size=args.size)  # smaller fails every subject, after the volumes are written

    from dallebrain.data.prepare import PrepareOptions, prepare

    fresh_scratch(args.out)
    cohort, prepared = args.out / "cohort", args.out / "prepared"
    start = time.time()
    write_cohort(cohort, args.subjects)
    print(f"wrote {args.subjects} IXI-size T1 volumes in {time.time() - start:.0f} s")
    load_before = os.getloadavg()[0]
    start = time.time()
    result = prepare(PrepareOptions("ixi", cohort, prepared, size=args.size, workers=args.workers), progress=False)
    wall = time.time() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_utime
    n = result.n_subjects
    print(f"prepared {n} subjects ({len(result.failures)} failed), {result.n_slices} slices, size {args.size}, "
          f"{args.workers} workers on {os.cpu_count()} cores (load average {load_before:.1f} at start)")
    print(f"wall {wall:.0f} s: {60 * n / wall:.1f} volumes/min -> 500 volumes in {500 * wall / n / 60:.0f} min")
    print(f"CPU {cpu:.0f} s: {cpu / n:.1f} CPU s/volume -> 500 volumes on 2 idle cores in "
          f"{500 * cpu / n / 2 / 60:.0f} min")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
