"""The recipe of the shipped LDM's velocity-predicting UNet: model v2's noise-predicting UNet fine-tuned to
predict v (`prediction_type=v_prediction`), everything else in the folder kept (VAE, text encoder, Brain-CLIP,
the unCLIP prior and decoder, the leak table).

    python recipes/v_prediction_finetune.py --work /path/to/cache/v [--install]

Why: with noise prediction the first sampling steps' clean estimate is 1.2-1.4x too wide at t = 999 and PD-weighted
slices came out with white, clipped patches (BENCHMARKS.md, "Where in sampling the white patches appear"). A
velocity target is well scaled at every noise level. One stage of STEPS steps (about 50 min on this 2-core CPU)
on the same cohort as model v2 (120 simulated subjects, seed 0; recipes/attribute_finetune.py), starting from the
shipped UNet (`init_from`): the attribute path and the caption dropouts stay as the last v2 stage had them.

Every step is a `dallebrain` command; a killed run resumes (the cohort, the prepared set and the stage's
checkpoints are kept in --work).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import add_fine_tune_options, add_stage_options, unet_fine_tune  # noqa: E402  (the recipes' shared steps)

STEPS = 2500
# the LDM settings of the fine-tune (after init_from and max_steps): a shorter warm-up than from scratch, the
# attribute and caption-only dropouts of the last v2 stage, an EMA short enough for 2500 steps
SETTINGS = ["prediction_type=v_prediction", "learning_rate=3e-4", "warmup_steps=50", "ema_decay=0.998",
            "attribute_dropout=0.1", "caption_only_dropout=0.3", "max_rows=32000", "phrasings=1",
            "compact_text_encoder=true", "compile=true", "checkpoint_every=250", "log_every=25"]
# the attribute guidance of each contrast, measured on this UNet with prompts in caption form
# (pipelines/caption_form.py; README "Does age in the prompt change the brain?": `bench_age_sweep.py --seeds 32`):
# one scale cannot serve all three (T1w 85/20 5.30 at 7, 8.19 at 8, 3.44 at 6 over 16 seeds; T2w 3.03 at 4, 5.10
# at 6); PDw keeps the base's 6. FLAIR is guided against "FLAIR, the rest unstated"
# (models/conditioning.attribute_anchor_of): 2.25 at 4 (16 seeds); anchored also on plane and level it reaches
# 3.16 at 8, but its texture distance doubles in `evaluate` (BENCHMARKS.md, "Prompts in caption form")
SAMPLING = {"attribute_guidance_by_contrast": {"T1w": 7.0, "T2w": 6.0, "FLAIR": 4.0},
            "attribute_guidance_anchor": {"FLAIR": ["modality"]}}


def check_base(base: Path) -> None:
    """The base must be the noise-predicting model v2."""
    scheduler = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    if scheduler.get("prediction_type", "epsilon") != "epsilon":
        raise SystemExit(f"error: {base}'s UNet already predicts {scheduler['prediction_type']}: give the "
                         "noise-predicting model v2 as --base")


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_stage_options(parser, "the noise-predicting model v2 to start from", STEPS, cohort="v2's cohort")
    add_fine_tune_options(parser)
    return unet_fine_tune(parser.parse_args(argv), "model_v", SETTINGS, "prediction_stage", SAMPLING, check_base)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
