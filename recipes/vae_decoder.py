"""The recipe of the shipped VAE decoder: the installed VAE's decoder retrained on the model's own cohort, its encoder
(hence the latent space every diffusion model of the folder was trained in) and everything else kept.

    python recipes/vae_decoder.py --work /path/to/cache/vae [--data PREPARED] [--install]

Why: the VAE was trained once, 1000 steps on the first release's simulated cohort (Simulator v1), and never again;
the LDM and the unCLIP decoder moved on to Simulator v2's contrasts, and their latents are decoded by a decoder
that never saw one of its slices. Its reconstructions of held-out v2 slices set the ceiling of both routes
(`dallebrain evaluate`'s reconstruction column): grey levels 3-4x the real/real floor, PD-weighted sharpness 0.77
of real, the brain's outline smeared one pixel into the background. A decoder-only fine-tune
(`train_encoder=false`, as Stable Diffusion's "ft-MSE" decoders were made) fixes what the decoder can fix without
touching the latents: the UNet, the unCLIP decoder, the leak table and the sampling settings stay valid.

Every step is a `dallebrain` command; a killed run resumes (the cohort, the prepared set and the stage's
checkpoints are kept in --work).
"""

from __future__ import annotations

import json
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
    model_with_parts,
    release_recipe,
    simulate_and_prepare,
    train_once,
)

STEPS = 4000
# after init_from / max_steps / train_encoder: configs/vae.sharpen.json's patch discriminator (hinge, adaptive
# weight, feature matching) at a learning rate the pilots chose (BENCHMARKS.md "The VAE decoder on the v2 cohort").
# fp32: under bf16 autocast the same 600-step pilot came out blurrier (T1w / PDw / FLAIR sharpness 0.89 / 0.66 /
# 0.74 of real against 0.97 / 0.81 / 0.86), with or without the discriminator; adversarial weight 0.2 instead of
# 0.05 let the adaptive weight run away (10-28) and the discriminator collapse within 600 steps
SETTINGS = ["learning_rate=1e-4", "mixed_precision=no", "checkpoint_every=500", "sample_every=0"]


def architecture_settings(vae_folder: Path) -> list[str]:
    """The base VAE's architecture as `--set` values, so the stage builds the VAE it continues (the sharpening
    config's architecture is the shipped one; another base, e.g. a tiny one, brings its own)."""
    config = json.loads((vae_folder / "config.json").read_text())
    return [f"block_out_channels={json.dumps(config['block_out_channels'], separators=(',', ':'))}",
            f"layers_per_block={config['layers_per_block']}", f"norm_num_groups={config['norm_num_groups']}",
            f"latent_channels={config['latent_channels']}",
            f"mid_block_attention={str(config.get('mid_block_add_attention', True)).lower()}"]


def vae_command(steps: int, settings: list[str]) -> list[str]:
    """The `dallebrain train` arguments after --data/--out ("{model}", "{root}" filled in by the caller), also
    recorded as the model's "fixes.vae" command."""
    sets = ["init_from={model}/vae", f"max_steps={steps}", "train_encoder=false", *settings]
    return ["vae", "--config", "{root}/configs/vae.sharpen.json", *[a for s in sets for a in ("--set", s)]]


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_stage_options(parser, "the model whose VAE decoder is retrained", STEPS)
    add_fine_tune_options(parser)
    args = parser.parse_args(argv)
    base, work, log = args.base, args.work, []
    if not (base / "vae" / "config.json").is_file():
        raise SystemExit(f"error: {base} is not a pipeline folder (no vae/config.json)")
    check_prepared(args.data)
    if args.steps < 1:
        raise SystemExit(f"error: --steps must be at least 1, got {args.steps}")
    if args.configs != "cpu":  # the sharpening config is the one VAE config here; --configs names the LDM's
        raise SystemExit(f"error: this recipe trains with configs/vae.sharpen.json; --configs {args.configs} "
                         "has no meaning here")
    data = args.data or simulate_and_prepare(work, args.subjects, args.workers, log, seed=args.seed)
    settings = [*architecture_settings(base / "vae"), *SETTINGS, *args.set]
    command = vae_command(args.steps, settings)
    vae = work / "vae"
    filled = [fill_placeholders(c, model=base, root=ROOT) for c in command]
    train_once([filled[0], "--data", str(data), *filled[1:]], vae, log)
    model = model_with_parts(base, work, {"vae": vae}, skip=(  # the base with the retrained VAE decoder
        "checkpoints", "samples", "losses.csv", "metrics.json", "train_config.json", "dallebrain.json"))
    _check_same_encoder(base / "vae", model / "vae")
    from dallebrain.pipelines.export import update_model_info

    info = read_info(base)
    metrics = json.loads((vae / "metrics.json").read_text()) if (vae / "metrics.json").is_file() else {}
    record = {"decoder_steps": args.steps, "settings": settings, "encoder": "kept (the latent space is the base's)",
              "reconstruction": {k: metrics[k] for k in ("psnr_brain", "ssim_brain", "images", "split")
                                 if k in metrics}}
    fixes = {**info.get("fixes", {}), "vae": {"folder": "vae", "command": "dallebrain train " + " ".join(command)}}
    update_model_info(model, {"vae_decoder": record, "fixes": fixes})
    return release_recipe(model, work, args.steps, log, args.install)


def _check_same_encoder(old: Path, new: Path) -> None:
    """The retrained VAE's encoder must be the base's, bit for bit (up to its stored precision): otherwise every
    latent model in the folder would decode from another latent space."""
    import torch
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.safetensors"
    a, b = load_file(old / name), load_file(new / name)
    kept = [k for k in a if k.startswith(("encoder.", "quant_conv."))]
    moved = [k for k in kept if k not in b or not torch.equal(a[k].float().half(), b[k].float().half())]
    if not kept or moved:
        raise SystemExit(f"error: the retrained VAE's encoder differs from the base's ({len(moved)} of {len(kept)} "
                         f"tensors, e.g. {(moved or ['none kept'])[0]}): the latent space would move")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
