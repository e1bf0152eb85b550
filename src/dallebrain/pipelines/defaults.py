"""Default sampling settings of every entry point (CLI, Python API, web page, evaluation), in one place.

Chosen from measurements on the shipped model (`python benchmarks/bench_sampling.py --data ... --eval ...`,
table in BENCHMARKS.md): the fewest DPM-Solver++ steps whose Frechet distances stay close to the best
setting's. Kept import-free so `dallebrain --help` stays instant.
"""

SAMPLER = "dpm"  # DPM-Solver++ (2M)
STEPS = 20
GUIDANCE = 4.0
