"""Settings of a `synthesize` run, and the record of them (synthesize.json) that lets a rerun resume only the
very same data set."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.precision import check_precision
from dallebrain.synthesize.mix import AttributeMix
from dallebrain.vocab import SAMPLER_CHOICES

MAX_SLICES = 10_000_000
MAX_BATCH = 64  # Text2MRIPipeline.MAX_IMAGES_PER_PASS
SETTINGS_FILE = "synthesize.json"
FORMAT = "dallebrain-synthetic-slices"


@dataclass(frozen=True)
class SynthesisOptions:
    """One synthetic data set: how many slices, their attribute mix, and how they are generated."""

    n: int
    out: Path
    mix: AttributeMix | None = None  # explicit attribute mix, or
    like: Path | None = None  # a prepared data set whose joint attribute distribution is matched
    seed: int = 0  # slice i uses noise seed seed + i; the attributes of slice i are drawn from (seed, i)
    steps: int = D.STEPS
    guidance: float = D.GUIDANCE
    sampler: str = D.SAMPLER
    model: Path | None = None  # pipeline folder (None: the shipped model)
    lora: Path | None = None
    lora_scale: float = 1.0
    batch_size: int = 16  # slices denoised together (across prompts); part of the result's bytes
    precision: str = D.PRECISION  # auto, bf16 or fp32: the pipeline's own rule (pipelines/precision.py)
    nifti: bool = False  # also write each slice as NIfTI placed in MNI space
    judge: Path | None = None  # a prepared data set to train the on-prompt judge on (None: no judging)
    judge_steps: int = 600
    reject_off_prompt: bool = False  # leave slices the judge calls off-prompt out of metadata.parquet

    def check(self) -> None:
        """One-line ValueError for settings that cannot make a data set (before any model is loaded)."""
        from dallebrain.pipelines.text2mri import check_seed

        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_SLICES:
            raise ValueError(f"--n must be a whole number between 1 and {MAX_SLICES}, got {self.n!r}")
        if (self.mix is None) == (self.like is None):
            raise ValueError("give the attribute mix either as --like PREPARED or as explicit options, not both")
        check_seed(self.seed, self.n)
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"--steps must be between 1 and 1000, got {self.steps}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"--guidance must be a non-negative number, got {self.guidance}")
        if self.sampler not in SAMPLER_CHOICES:
            raise ValueError(f"unknown --sampler {self.sampler!r}: choose from {', '.join(SAMPLER_CHOICES)}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"--batch-size must be between 1 and {MAX_BATCH}, got {self.batch_size}")
        check_precision(self.precision, "--precision")
        if not 0 <= self.lora_scale <= 4:
            raise ValueError(f"--lora-scale must be between 0 and 4, got {self.lora_scale}")
        if self.reject_off_prompt and self.judge is None:
            raise ValueError("--reject-off-prompt needs a judge: pass --judge PREPARED (or --like PREPARED)")
        if self.judge_steps < 1:
            raise ValueError(f"--judge-steps must be at least 1, got {self.judge_steps}")
        for name in ("like", "judge"):
            folder = getattr(self, name)
            if folder is not None and not (Path(folder) / "metadata.parquet").is_file():
                raise ValueError(f"--{name}: not a prepared data set (no metadata.parquet): {folder}")
        if self.judge is not None:  # the judge is trained on its slices' contrast and plane (synthesize/judge.py)
            from dallebrain.data.dataset import read_metadata

            read_metadata(self.judge, ("split", "image_path", "modality", "orientation"), "--judge")
        if self.lora is not None and not Path(self.lora).is_dir():
            raise ValueError(f"--lora folder not found: {self.lora}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out exists and is not a folder: {self.out}")

    @property
    def n_batches(self) -> int:
        return -(-self.n // self.batch_size)

    def batch(self, b: int) -> range:
        """Slice indices of batch b: fixed by n and batch_size alone, so any process count agrees on them."""
        return range(b * self.batch_size, min((b + 1) * self.batch_size, self.n))


def data_fingerprint(prepared: Path | None) -> str | None:
    if prepared is None:
        return None
    return hashlib.sha256((Path(prepared) / "metadata.parquet").read_bytes()).hexdigest()[:16]


def settings_record(options: SynthesisOptions, model_dir: Path, model_hash: str) -> dict:
    """Everything the bytes of the data set depend on (`identity`), and where the inputs were (`paths`)."""
    from dallebrain._version import __version__
    from dallebrain.pipelines.folder import folder_hash

    identity = {
        "format": FORMAT, "dallebrain_version": __version__, "n": options.n, "seed": options.seed,
        "steps": options.steps, "guidance": options.guidance, "sampler": options.sampler,
        "batch_size": options.batch_size, "precision": options.precision, "nifti": options.nifti,
        "mix": None if options.mix is None else options.mix.describe(),
        "like_fingerprint": data_fingerprint(options.like), "model_hash": model_hash,
        "lora_hash": None if options.lora is None else folder_hash(options.lora)[:16],
        "lora_scale": options.lora_scale if options.lora is not None else None,
        "judge_fingerprint": data_fingerprint(options.judge),
        "judge_steps": options.judge_steps if options.judge is not None else None,
        "reject_off_prompt": options.reject_off_prompt,
    }
    paths = {"model": str(model_dir), "like": _text(options.like), "lora": _text(options.lora),
             "judge": _text(options.judge)}
    return {"identity": identity, "paths": paths}


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def claim_folder(out: Path, record: dict) -> bool:
    """Make `out` this data set's folder: a new or empty folder gets synthesize.json; one made with the same
    settings is resumed (True); anything else is refused, so nothing already there is mixed in or replaced."""
    import json

    from dallebrain.data.io import create_json_exclusive

    out = Path(out)
    path = out / SETTINGS_FILE
    if not path.is_file():
        # (the record itself may appear in between: another process of this launch made it)
        if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".tmp-") and p.name != SETTINGS_FILE):
            raise ValueError(f"--out {out} is a folder with other files in it: choose a new or empty folder")
        # of two runs claiming one empty folder at once, one creates the record; the other reads it below, as any
        # earlier record, and resumes it or is refused
        if create_json_exclusive(path, record):
            return False
    try:
        old = json.loads(path.read_text())["identity"]
        if not isinstance(old, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, OSError):
        raise ValueError(f"{path} is not a readable synthesis record: choose another --out") from None
    differ = sorted(k for k in set(old) | set(record["identity"]) if old.get(k) != record["identity"].get(k))
    if differ:
        raise ValueError(f"--out {out} holds a synthetic data set made with other settings "
                         f"({', '.join(differ)}): rerun with the same ones or choose another --out")
    return True
