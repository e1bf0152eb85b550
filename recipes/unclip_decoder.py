"""The recipe of the shipped unCLIP decoder: retrained from the installed model's own LDM UNet, everything else in
the folder kept (the LDM, VAE, text encoder, Brain-CLIP, prior, leak table).

    python recipes/unclip_decoder.py --work /path/to/cache/decoder [--data PREPARED] [--install]

Why: the decoder is warm-started from an LDM UNet (the same blocks; only the image-embedding path starts fresh,
README "The unCLIP decoder, retrained"), so it is only as good as the UNet it started from. The decoder of v2
started from v2's noise-predicting UNet; the LDM became v2.1's velocity-predicting one, and the unCLIP route
stayed behind it (evaluation encoder's Frechet distance 0.82 against the LDM's 0.53). Started from the installed
UNet, the decoder takes that UNet's objective too (`prediction_type` "" follows init_from), so the copied blocks
keep what they learnt. The decoder also reads the slice's attributes as the LDM does (`unet.attributes`), so the
route follows the age a prompt states, which a Brain-CLIP image embedding does not hold. One stage of STEPS steps on
the model's cohort (120 simulated subjects, seed 0; --data to reuse a prepared set), about 35 minutes on an AVX-512
BF16 CPU (bf16) after a 9-minute latent cache; on an AVX2 CPU (fp32) about 1.2 steps/s, 85 minutes, after 12.

Every step is a `dallebrain` command; a killed run resumes (the cohort, the prepared set and the stage's
checkpoints are kept in --work).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dallebrain.cli._common import OneLineParser
from dallebrain.pipelines.folder import read_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import (  # noqa: E402
    add_fine_tune_options,
    add_stage_options,
    check_prepared,
    fill_placeholders,
    guidance_table,
    model_with_parts,
    release_recipe,
    simulate_and_prepare,
    train_once,
)

# v2.6's decoder: 6,000 steps (v2.4's and v2.5's had 1,500, a quarter of what the LDM it starts from had seen;
# BENCHMARKS.md "The unCLIP decoder, four times longer": Brain-CLIP distance -15 % | -16 %, level error 3.0x -> 2.4x |
# 2.2x the real judge's, at the cost of pooled texture, PDw's)
STEPS = 6000
# the decoder stage's settings after init_from and max_steps: the warm start's learning rate of v2's decoder
# (README), twice its training slices. Eager: the same run with compile=true and mixed_precision=bf16 trained
# no weight at all when the whole UNet was one compiled graph (BENCHMARKS.md "The unCLIP decoder from the velocity
# LDM"; the blocks now compile apart and train), and eager it ran 25 images/s here in fp32. The decoders
# from v2.3 and v2.4 were trained under the config's mixed_precision "auto" (bf16 autocast on this CPU; their
# train_config.json records it): 1500 steps in 9 min 19 s from v2.4, 43 images/s, after a 9-minute latent cache.
# With the LDM's attributes (unet.attributes): the decoder also reads the slice's ground-truth attributes, so age,
# which a Brain-CLIP image embedding does not hold, reaches the unCLIP route (models/decoder.py); the warm start
# copies the LDM's attribute embedding too. embed_only_dropout trains the "attributes alone" input of attribute
# guidance, as the LDM's caption_only_dropout does.
SETTINGS = ["learning_rate=2e-4", "max_rows=16000", "checkpoint_every=250", "unet.attributes=true",
            "attribute_dropout=0.3", "embed_only_dropout=0.1"]
# the decoder's own attribute guidance on the unCLIP route (dallebrain.json unclip.sampling), model-wide and per
# contrast, and the attributes kept stated on its unconditional side; 0 / "": none recorded (the attributes then
# share the embedding's guidance: plain, two rows). Measured (BENCHMARKS.md, "The unCLIP decoder reads the
# attributes", one evaluate draw each, encoder distance / age judge MAE): plain 0.567 / 15.4 years; guided against
# "everything unstated" the scale also pushes the contrast (T1w at 4 alone 0.654; T1w 4 / T2w 8 / others 4:
# 0.730 / 14.3); guided against "this contrast, the rest unstated" (the anchor) at 4: 0.427 / 14.0, at 6:
# 0.372 / 13.5 (real 13.3), the ventricles' 85/20 ratio 3.6 / 3.4 / 2.1 (T1w / T2w / FLAIR; plain 2.4-2.6 / 1.8 /
# 1.8, the cohort's 4.9). T1w at 8: once the prior read prompts in caption form (pipelines/unclip.py), T1w's ratio
# at 6 fell to 3.08 over 32 seeds (7: 3.37, 8: 3.70); at 8 evaluate moved encoder distance 0.369 -> 0.317, T1w
# texture 5.7 -> 6.3, T1w sharpness 0.97 -> 0.94 (BENCHMARKS.md, "The unCLIP prior reads prompts in caption form").
# Retrained from v2.3's longer-trained UNet, the decoder over-steers age at those scales (32 seeds, 85/20 ratio T1w
# 9.94 at 8, T2w 7.47 at 6; FLAIR 3.13 at 6, the cohort's 4.92): at T1w 5, T2w 4.5, FLAIR 8 it gives 5.18, 4.83,
# 3.72 as trained, 5.23, 5.03, 3.73 as shipped (its outline and grey curves refitted), each within 25 %
# (BENCHMARKS.md, "The unCLIP decoder from v2.3"). Retrained from v2.4's UNet (its second CPU stage), it over-steers
# again: T1w 9.26 at 5, T2w 10.53 at 4.5 (FLAIR 5.23 at 8); T1w 3: 5.44, T2w 2.5: 3.95, 3: 4.79, FLAIR 5: 3.66, so
# T1w 3, T2w 3, FLAIR 8 (BENCHMARKS.md, "The unCLIP decoder from v2.4"). Trained four times longer (6,000 steps) it
# steers T1w less and FLAIR more: T1w 3.09 at 3, 4.36 at 4.5; T2w 4.48 at 3; FLAIR 8.84 at 8, 3.65 at 4.5, so T1w 4.5,
# T2w 3, FLAIR 5.5 (BENCHMARKS.md, "The unCLIP decoder, four times longer"). PDw, unmeasured until then, took the
# model-wide 6: its texture distance doubled with the longer decoder; benchmarks/bench_contrast_guidance.py (each
# scale with its own grey curve, evaluate's held-out PDw slices) gave GLCM 31.6 / 21.1 / 15.2 / 13.8 at 6 / 4.5 /
# 3 / 2, sharpness 0.72 -> 0.75 at 3; the tissue judge reads too few PDw ventricles to sweep age there (bright CSF
# in the cohort's long-TR scans), so PDw 3, T2w's (BENCHMARKS.md, "PDw's own attribute guidance on the unCLIP route")
ATTRIBUTE_GUIDANCE = 6.0
ATTRIBUTE_GUIDANCE_ANCHOR = "modality"
ATTRIBUTE_GUIDANCE_BY_CONTRAST = "T1w=4.5,T2w=3,PDw=3,FLAIR=5.5"
NEEDED = ("unet", "scheduler", "vae", "clip", "prior")  # what the base must hold: the decoder's inputs and its route


def decoder_command(steps: int, settings: list[str]) -> list[str]:
    """The `dallebrain train` arguments after --data/--out ("{base}", "{model}", "{root}" filled in by the caller),
    also recorded as the model's "fixes.decoder" command."""
    sets = ["init_from={model}", f"max_steps={steps}", *settings]
    return ["decoder", "--clip", "{base}/clip", "--vae", "{base}/vae",
            "--config", "{root}/configs/decoder.{configs}.json", *[a for s in sets for a in ("--set", s)]]


def decoder_sampling(scale: float, by_contrast: str, anchor: str = "") -> dict:
    """dallebrain.json unclip.sampling from the options ({} for none); a bad table or anchor exits in one line."""
    from dallebrain.models.conditioning import attribute_anchor_of

    sampling = {"attribute_guidance": scale} if scale > 0 else {}
    if anchor.strip():
        names = [name.strip() for name in anchor.split(",")]
        try:
            attribute_anchor_of({"sampling": {"attribute_guidance_anchor": names}})
        except ValueError as exc:
            raise SystemExit(f"error: --attribute-guidance-anchor takes attribute names ({anchor!r}): {exc}") from None
        sampling["attribute_guidance_anchor"] = names
    if by_contrast.strip():
        sampling["attribute_guidance_by_contrast"] = guidance_table(by_contrast, "--attribute-guidance-by-contrast")
    return sampling


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_stage_options(parser, "the model whose decoder is retrained", STEPS)
    parser.add_argument("--attribute-guidance", type=float, default=ATTRIBUTE_GUIDANCE,
                        help="the decoder's attribute guidance recorded in dallebrain.json (0: none, plain guidance)")
    parser.add_argument("--attribute-guidance-by-contrast", default=ATTRIBUTE_GUIDANCE_BY_CONTRAST,
                        metavar="CONTRAST=SCALE,...", help="per-contrast attribute guidance recorded beside it "
                        "(\"\": none)")
    parser.add_argument("--attribute-guidance-anchor", default=ATTRIBUTE_GUIDANCE_ANCHOR, metavar="ATTRIBUTE,...",
                        help="attributes kept stated on the unconditional side of the decoder's attribute guidance "
                        "(\"\": none)")
    add_fine_tune_options(parser)
    args = parser.parse_args(argv)
    base, work, log = args.base, args.work, []
    missing = [name for name in NEEDED if not (base / name).is_dir()]
    if missing:
        raise SystemExit(f"error: {base} is not an unCLIP pipeline folder (no {', '.join(missing)})")
    check_prepared(args.data)
    if args.steps < 1:
        raise SystemExit(f"error: --steps must be at least 1, got {args.steps}")
    if args.attribute_guidance < 0:
        raise SystemExit(f"error: --attribute-guidance must be 0 (none) or positive, got {args.attribute_guidance}")
    sampling = decoder_sampling(args.attribute_guidance, args.attribute_guidance_by_contrast,
                                args.attribute_guidance_anchor)
    data = args.data or simulate_and_prepare(work, args.subjects, args.workers, log, seed=args.seed)
    settings = [*SETTINGS, *args.set]
    command = decoder_command(args.steps, settings)
    decoder = work / "decoder"
    filled = [fill_placeholders(c, base=base, model=base, root=ROOT, configs=args.configs) for c in command]
    train_once([filled[0], "--data", str(data), *filled[1:]], decoder, log)
    model = model_with_parts(base, work, {"decoder": decoder}, skip=(  # the base with the retrained decoder
        "checkpoints", "samples", "cache", "losses.csv", "metrics.json", "dallebrain.json"))
    from dallebrain.models.unet import trained_prediction_type
    from dallebrain.pipelines.export import update_model_info

    info = read_info(base)
    unclip = {**info.get("unclip", {}), "decoder": {
        "decoder_steps": args.steps, "warm_start": "the installed LDM's UNet",
        "prediction_type": trained_prediction_type(model / "decoder"), "settings": settings}}
    # the base decoder's sampling settings, if any, were measured on another decoder: dropped, not merged
    unclip.pop("sampling", None)
    if (model / "dallebrain.json").is_file():
        from dallebrain.data.io import write_json_atomic

        write_json_atomic(model / "dallebrain.json", {**info, "unclip": unclip})
    if sampling:
        unclip["sampling"] = sampling
    fixes = {**info.get("fixes", {}), "decoder": {"folder": "decoder", "command": "dallebrain train " + " ".join(
        fill_placeholders(c, configs=args.configs) for c in command)}}
    update_model_info(model, {"unclip": unclip, "fixes": fixes})
    return release_recipe(model, work, args.steps, log, args.install)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
