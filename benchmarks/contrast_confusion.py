"""Which contrast the generated slices of a `dallebrain evaluate` run show, by two judges: the evaluation's own
encoder (trained on sharp real slices only) and Brain-CLIP's zero-shot classifier (prompt ensembles, as
`train clip` reports it on real slices). Prints both confusion tables and accuracies.

    python benchmarks/contrast_confusion.py --eval EVAL_OUT [--route ldm] [--model PIPELINE] [--encoder FOLDER]

An evaluate run given --cache keeps its encoder there (CACHE/encoder), not in EVAL_OUT: pass it as --encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="--out of `dallebrain evaluate`")
    parser.add_argument("--route", default="ldm", choices=("ldm", "unclip"))
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--encoder", type=Path, default=None,
                        help="the run's evaluation encoder (default: EVAL/encoder; CACHE/encoder after --cache)")
    args = parser.parse_args(argv)
    encoder = args.encoder or args.eval / "encoder"
    if not (args.eval / f"samples_{args.route}.npz").is_file():
        raise SystemExit(f"error: {args.eval} holds no samples_{args.route}.npz: give the --out of a `dallebrain "
                         f"evaluate` run of the {args.route} route")
    if not (encoder / "config.json").is_file():
        raise SystemExit(f"error: no evaluation encoder in {encoder} (a run with --cache keeps it in CACHE/encoder: "
                         "pass --encoder)")

    import pandas as pd

    from dallebrain.api import default_model
    from dallebrain.evaluation import features as Fe
    from dallebrain.models.clip_zero_shot import CONTRAST_PROMPTS
    from dallebrain.models.clip_zero_shot import class_embeddings as _class_embeddings
    from dallebrain.vocab import MODALITIES

    samples = np.load(args.eval / f"samples_{args.route}.npz")
    images, prompts = samples["images"].astype(np.float32), list(samples["prompts"])
    asked = pd.Series(np.array(MODALITIES)[Fe.Targets.from_prompts(prompts).contrast], name="asked")
    _, predictions = Fe.TrainedEncoder.load(encoder).run(images)
    clip = Fe.load_brain_clip(args.model or default_model())
    scores = Fe.clip_image_features(clip, images) @ _class_embeddings(clip, CONTRAST_PROMPTS).float().numpy().T
    judges = {"evaluation encoder": predictions["contrast"],
              "Brain-CLIP zero-shot": np.array(list(CONTRAST_PROMPTS))[scores.argmax(1)]}
    print(f"{len(images)} synthetic slices of {args.eval} ({args.route})")
    for name, said in judges.items():
        print(f"\n{name}: contrast accuracy {(said == asked.to_numpy()).mean():.3f}")
        print(pd.crosstab(asked, pd.Series(said, name=f"{name} says")).to_string())


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
