"""What one `evaluate` run is asked to do, and the refusals of what cannot be evaluated (one-line ValueError)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dallebrain.evaluation.features import EncoderConfig
from dallebrain.pipelines import defaults as D

ROUTES = ("ldm", "unclip", "both")
SPLITS = ("test", "val")


MAX_DRAWS = 8
# draw j's seeds start this far apart: no two draws (nor draw 0's diversity samples, which follow its n) share a seed
DRAW_SEED_STRIDE = 1_000_000


@dataclass
class EvaluationOptions:
    """Settings of one evaluation; synthetic slice i uses seed + i, as `dallebrain generate` numbers them."""

    model: Path  # pipeline folder; clip/ in it adds the Brain-CLIP feature space and the CLIP score
    data: Path  # prepared data set (`dallebrain data prepare`)
    out: Path = Path("dallebrain-evaluation")  # report folder
    split: str = "test"  # held-out split whose slices are the real reference: test or val
    n: int = 64  # held-out slices, and synthetic slices per route (one per held-out caption)
    route: str = "ldm"  # ldm, unclip or both (side by side)
    steps: int = D.STEPS
    guidance: float = D.GUIDANCE
    sampler: str = D.SAMPLER  # as generate's --sampler ("auto": the model's choice per contrast)
    seed: int = 0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # the evaluation's own encoder
    diversity_prompts: int = 4  # prompts sampled several times for the MS-SSIM diversity ...
    diversity_samples: int = 4  # ... this many times each (fewer than 2: no diversity metric)
    device: str | None = None  # for the generators; None: cuda when available
    tissue_judge: Path | None = None  # a `judge train` folder; None: the installed one (skipped with a note if none)
    age_judge: Path | None = None  # a `judge fit-age` folder over that tissue judge; None: the installed one
    progress: bool = True
    # synthetic draws per route: draw 0 is the report's; draws 1.. (slice i of draw j with seed + j * DRAW_SEED_STRIDE
    # + i) give each distance its spread over draws (spread.py)
    draws: int = 1
    # what a rerun reuses, keyed by what it depends on: the evaluation encoder (encoder/) and the train split's
    # features (train_split/); None: the report folder. One folder can serve runs of several models on one data
    # set. Last, so the fields before it keep their positions.
    cache: Path | None = None
    prior_guidance: float = D.PRIOR_GUIDANCE  # the unCLIP route's prior, as generate's --prior-guidance

    def __post_init__(self) -> None:
        self.model, self.data, self.out = Path(self.model), Path(self.data), Path(self.out)
        self.cache = None if self.cache is None else Path(self.cache)
        self.tissue_judge = None if self.tissue_judge is None else Path(self.tissue_judge)
        self.age_judge = None if self.age_judge is None else Path(self.age_judge)

    @property
    def cache_folder(self) -> Path:
        return self.out if self.cache is None else self.cache

    def routes(self) -> list[str]:
        """The routes to evaluate; a one-line ValueError for anything that cannot be evaluated."""
        if self.steps < 1 or self.steps > 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}")
        if not 1 <= self.draws <= MAX_DRAWS:
            raise ValueError(f"draws must be between 1 and {MAX_DRAWS}, got {self.draws}")
        from dallebrain.pipelines.request import check_seed
        from dallebrain.vocab import check_sampler

        check_sampler(self.sampler)

        check_seed(self.seed + (self.draws - 1) * DRAW_SEED_STRIDE, self.n)  # the last draw's seeds, before any work
        if self.draws > 1 and self.n + self.diversity_prompts * self.diversity_samples >= DRAW_SEED_STRIDE:
            raise ValueError(f"--draws needs n plus the diversity samples below {DRAW_SEED_STRIDE}, got n = {self.n}")
        return check_inputs(self.model, self.data, self.split, self.n, self.route)


# what the evaluation reads of the prepared table: the split, the slices, their captions (the prompts) and what the
# real reference is matched on
TABLE_COLUMNS = ("split", "image_path", "caption", "modality", "orientation", "slice_mm")


def check_inputs(model: str | Path, data: str | Path, split: str, n: int, route: str) -> list[str]:
    """The routes to evaluate; a one-line ValueError for anything that cannot be evaluated."""
    from dallebrain.pipelines.folder import LDM_COMPONENTS, UNCLIP_COMPONENTS, ModelFolderError, check_model_folder

    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}: choose ldm, unclip or both")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose test or val (held-out subjects)")
    if n < 2:
        raise ValueError(f"n must be at least 2 (distributions need two slices), got {n}")
    model, data = Path(model), Path(data)
    if not model.is_dir():
        raise ValueError(f"model folder not found: {model}")
    if not (data / "metadata.parquet").is_file():
        raise ValueError(f"not a prepared data set (no metadata.parquet): {data}")
    from dallebrain.data.dataset import read_metadata

    read_metadata(data, TABLE_COLUMNS, "--data")  # a hand-made table without them: refused before any work
    routes = ["ldm", "unclip"] if route == "both" else [route]
    for r in routes:
        try:
            check_model_folder(model, LDM_COMPONENTS if r == "ldm" else UNCLIP_COMPONENTS)
        except ModelFolderError as exc:
            hint = " (the unCLIP route needs clip/, prior/ and decoder/: dallebrain train prior|decoder --into)" \
                if r == "unclip" else ""
            raise ValueError(f"route {r}: {exc}{hint}") from exc
    return routes
