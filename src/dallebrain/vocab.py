"""The project's vocabulary, defined once: planes, contrasts, field strengths, the field of view of a
prepared slice, weight file names and the suffixes of pickled weights that loaders refuse."""

ORIENTATIONS = ("axial", "coronal", "sagittal")
ORIENTATION_AXIS = {"axial": "z", "coronal": "y", "sagittal": "x"}  # the MNI axis a plane's level is on
MODALITIES = ("T1w", "T2w", "PDw", "FLAIR")  # BIDS suffixes of the contrasts
CONTRAST_LONG = {"T1w": "T1-weighted", "T2w": "T2-weighted", "PDw": "PD-weighted", "FLAIR": "FLAIR"}
CONTRAST_SHORT = {"T1w": "T1", "T2w": "T2", "PDw": "PD", "FLAIR": "FLAIR"}
FIELD_STRENGTHS = (1.5, 3.0)  # tesla, the simulated cohort's scanners
SEXES = ("F", "M")
FIELD_OF_VIEW_MM = 192.0  # a prepared slice spans 192 mm whatever its pixel count
# Centre of the prepared grid (MNI mm): the brain's bounding box, cerebellum included, fits 192 mm.
BRAIN_CENTRE_MNI = (0.0, -18.0, 9.0)
# Sampler names -> the diffusers scheduler class that implements them (every entry point also takes AUTO_SAMPLER).
SAMPLERS = {
    "dpm": "DPMSolverMultistepScheduler",  # DPM-Solver++ (Lu et al. 2022)
    "dpm-karras": "DPMSolverMultistepScheduler",  # the same on Karras et al.'s levels from the spaced start (karras.py)
    "dpm-sde": "DPMSolverMultistepScheduler",  # its SDE form: fresh noise at every step (algorithm "sde-dpmsolver++")
    "ddim": "DDIMScheduler",  # Song et al. 2021
    "euler": "EulerDiscreteScheduler",  # Karras et al. 2022
    "unipc": "UniPCMultistepScheduler",  # UniPC (Zhao et al. 2023): a predictor-corrector for few steps
}
STOCHASTIC_SAMPLERS = ("dpm-sde",)  # samplers that draw noise at every step (from each image's own generator)
# The default: the sampler (and steps multiple) the model's dallebrain.json records for the prompt's contrast
# (sampling.sampler_by_contrast), else AUTO_FALLBACK.
AUTO_SAMPLER = "auto"
AUTO_FALLBACK = "dpm"
SAMPLER_CHOICES = (AUTO_SAMPLER, *SAMPLERS)  # what every entry point accepts

VARIATION_PREFIX = "variation-seed"  # file names of variations, apart from generated slices of the same seed
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' file name for LoRA adapters
# Weights in these formats can run code when loaded: every loader refuses them (safetensors only).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_sampler(sampler: str) -> str:
    """sampler itself if an entry point accepts it, else a one-line ValueError."""
    if sampler not in SAMPLER_CHOICES:
        raise ValueError(f"unknown sampler {sampler!r}: choose from {', '.join(SAMPLER_CHOICES)}")
    return sampler


def concrete_sampler(sampler: str) -> str:
    """A sampler name that names a scheduler: AUTO_SAMPLER without a per-contrast choice is AUTO_FALLBACK."""
    return AUTO_FALLBACK if check_sampler(sampler) == AUTO_SAMPLER else sampler
