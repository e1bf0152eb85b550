"""`dallebrain train STAGE ...`: one training stage; its options are the stage's own (training/args.py), so
`accelerate launch -m dallebrain.training.STAGE` takes the same command line."""

from __future__ import annotations

import typer

from dallebrain.cli._common import fail, first_line

# stage -> what it trains (`dallebrain train --help` lists them)
TRAIN_STAGES = {
    "clip": "brain CLIP: tuned MiniLM text tower + image tower (contrastive)",
    "vae": "the 1-channel VAE (AutoencoderKL) of the latent space",
    "ldm": "the latent diffusion UNet, cross-attending to the text (needs --vae)",
    "prior": "unCLIP prior: text -> Brain-CLIP image embedding (needs --clip)",
    "decoder": "unCLIP decoder: image embedding -> latent (needs --clip, --vae)",
    "lora": "LoRA adapters on a base pipeline's cross-attention (needs --base)",
    "ageing": "the ageing network: a slice -> the same slice at another age (longitudinal data)",
}
USAGE = ("Usage: dallebrain train STAGE --data PREPARED --out DIR [--config F] [--max-steps N] [--resume] "
         "[--set key=value]\n\nStages:\n" + "\n".join(f"  {k:<8} {v}" for k, v in TRAIN_STAGES.items())
         + "\n\n`dallebrain train STAGE --help` lists a stage's options (ageing has its own: no --config, --set "
           "or --resume).")


def train_cmd(ctx: typer.Context, stage: str = typer.Argument(None, help=f"One of: {', '.join(TRAIN_STAGES)}.")):
    """Train one stage: dallebrain train STAGE --data PREPARED --out DIR [--config F] [--max-steps N] [--resume]
    [--set key=value]. `dallebrain train STAGE --help` lists the stage's options."""
    import importlib

    if stage in (None, "--help", "-h"):
        typer.echo(USAGE)
        raise typer.Exit(0 if stage else 2)
    if stage not in TRAIN_STAGES:
        fail(f"unknown stage {stage!r}: choose from {', '.join(TRAIN_STAGES)}")
    module = importlib.import_module(f"dallebrain.training.{stage}")
    try:
        module.main(list(ctx.args))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(first_line(exc))
