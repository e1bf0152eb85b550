"""A candidate next UNet trained on this CPU: the shipped velocity UNet trained further on every train slice of its
cohort (all rows, two caption phrasings; the shipped UNet saw 32,000 rows in one phrasing), for as many steps as fit
in a wall-clock budget, everything else in the folder kept (VAE, text encoder, Brain-CLIP, the unCLIP prior and
decoder, the leak table, the sampling tables).

    python recipes/long_finetune.py --work /path/to/cache/long --data PREPARED [--budget-s 6000] [--install]

Why: the UNet, not the sampler or the decoder, limits what is left of issues 11 and 12 (BENCHMARKS.md, "Where the
texture gap sits"; the level judge's scatter), and the shipped one has seen about two epochs of its cohort. This is
recipes/gpu_ldm_finetune.py's stage (the same settings but the batch) for a machine without a GPU: the learning
rate a third of the v-prediction stage's, since it starts from a converged UNet, and a longer EMA for a longer run.
`time_budget_s` times the first steps and cuts max_steps so the cosine ends inside the budget, which counts the
cache too (54,448 slices: about 50 min here the first time, kept in --work for a rerun); a stage that is killed
resumes from its checkpoints. A later stage can start from this one's release (--base), so training can span
sessions stage by stage.

The release records the attribute guidance given (default: the first 100-minute stage's) and drops the LDM's
grey-level curves and level map (measured on the base's UNet); refit them, then the outline choice, each on the
previous recipe's release, before shipping: recipes/level_map.py, recipes/grey_level_map.py --route ldm,
recipes/brain_outline.py (a stage of another length: measure its scales with benchmarks/bench_age_sweep.py first).
v2.3 was made so; BENCHMARKS.md, "A longer CPU fine-tune", has what it measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import (  # noqa: E402  (the recipes' shared steps)
    add_fine_tune_options,
    add_stage_options,
    guidance_table,
    unet_fine_tune,
)

STEPS = 30000  # the cosine's horizon before the budget cuts it to what fits
BUDGET_S = 6000
RECORD = "long_stage"  # where dallebrain.json records this stage
SETTINGS = ["prediction_type=v_prediction", "learning_rate=1e-4", "warmup_steps=200", "ema_decay=0.999",
            "attribute_dropout=0.1", "caption_only_dropout=0.3", "max_rows=0", "phrasings=2",
            "compact_text_encoder=true", "compile=true", "checkpoint_every=1000", "log_every=100"]
# attribute guidance measured on the first 100-minute stage (benchmarks/bench_age_sweep.py, 32 seeds): at the base's
# scales (T1w 7, T2w 6) the longer-trained UNet over-steers age (85/20 ventricle ratio 13.8, 11.1 against the
# cohort's 4.92); at these it gives 4.60, 4.78 and FLAIR 3.87 (base's 4 gave 3.36). A stage of another length
# over-steers or under-steers at them: measure its own with the sweep and give them as --attribute-guidance-by-contrast
# (the second stage, 12,000 steps from v2.3: T1w 11.3, T2w 28.3, FLAIR 10.0 at these; see BENCHMARKS.md).
ATTRIBUTE_GUIDANCE_BY_CONTRAST = "T1w=4,T2w=4,FLAIR=5"


def check_base(base: Path) -> None:
    """The base must be a velocity-predicting UNet (v2.1 or a stage of this recipe)."""
    scheduler = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    if scheduler.get("prediction_type", "epsilon") != "v_prediction":
        raise SystemExit(f"error: {base}'s UNet predicts {scheduler.get('prediction_type', 'epsilon')}: give a "
                         "velocity-predicting model (the shipped one) as --base")


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_stage_options(parser, "the velocity-predicting model to start from", STEPS, cohort="v2's cohort")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="wall-clock seconds for the stage, caches included (0: all --steps)")
    parser.add_argument("--attribute-guidance-by-contrast", default=ATTRIBUTE_GUIDANCE_BY_CONTRAST,
                        metavar="CONTRAST=SCALE,...", help="the stage's per-contrast attribute guidance, recorded "
                        "in its dallebrain.json (measured with benchmarks/bench_age_sweep.py; a rerun on a finished "
                        "stage releases it again with new scales)")
    add_fine_tune_options(parser)
    args = parser.parse_args(argv)
    if args.budget_s < 0:
        raise SystemExit(f"error: --budget-s must be 0 or more, got {args.budget_s:g}")
    scales = guidance_table(args.attribute_guidance_by_contrast, "--attribute-guidance-by-contrast")
    settings = [*SETTINGS, f"time_budget_s={args.budget_s:g}"]
    return unet_fine_tune(args, "model_long", settings, RECORD, {"attribute_guidance_by_contrast": scales},
                          check_base)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
