"""Default sampling settings of every entry point (CLI, Python API, web page, evaluation), in one place.

Chosen from measurements on the shipped model (`python benchmarks/bench_sampling.py --data ... --eval ...`,
table in BENCHMARKS.md): DPM-Solver++ at 20 steps is within 5.4 % of DDIM-50's Frechet distance in the
evaluation encoder's space and equal in Brain-CLIP's, at 2.6x the speed of stock StableDiffusionPipeline
defaults; 10 steps lose 8 %, 25 gain 1.4 % for 18 % more time. Re-measured on model v2.1 with its grey-level
curves (BENCHMARKS.md, "Karras noise levels for the default sampler"): fewer steps still cost texture (UniPC at 12
steps: 1.6x faster than DPM-Solver++ at 20, GLCM distance 4-12 % further from real over two seeds), so 20 steps
stay; the shipped model's dallebrain.json now picks DPM-Solver++ on Karras noise levels (`dpm-karras`) for every
contrast, closer to real at the same cost. Kept import-free so `dallebrain --help` stays instant.
"""

# "auto": the sampler the model's dallebrain.json chose per contrast (sampling.sampler_by_contrast, e.g. FLAIR with
# SDE DPM-Solver++ at twice the steps; the shipped model: dpm-karras for all four), DPM-Solver++ (2M) where it chose
# none.
SAMPLER = "auto"
STEPS = 20
# The caption's guidance scale. 4 (v1's) broke the attribute-conditioned v2 on captions unlike its training
# ones ("... (z = +23 mm)" without a landmark gave scattered fragments on a grey field; 1-2 a clean slice at
# the ventricles), and at 2, with the model's attribute guidance 6 (its dallebrain.json "sampling"), age
# moves the ventricles most (README, "Model v2"). The unCLIP route was measured at 4 and not re-measured at 2.
GUIDANCE = 2.0
# The unCLIP prior (text -> Brain-CLIP image embedding): its own steps and guidance. Measured against 1.5 (2026-12-07):
# in Brain-CLIP's space the prior's embeddings are closer to the real slices' at 1.5 (Frechet 0.024 against 0.043 at
# 4; `benchmarks/bench_prior_guidance.py`), and evaluate on the val split agreed (encoder distance 0.242 -> 0.204),
# but on the test split the decoded slices were not closer (seeds 0 | 1000: 0.272 -> 0.294 | 0.214 -> 0.221; texture
# and sharpness worse at both), so 4 stays (BENCHMARKS.md, "The prior's guidance").
PRIOR_STEPS = 25
PRIOR_GUIDANCE = 4.0
# The UNet and VAE decoder in bfloat16 where the hardware computes it natively (pipelines/precision.py):
# measured on this CPU (AVX-512 BF16) in BENCHMARKS.md, "Compute precision".
PRECISION = "auto"
