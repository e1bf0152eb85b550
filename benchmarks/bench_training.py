"""Training throughput of every stage with a config set (base or cpu), and what caching gains for the LDM.

    python benchmarks/bench_training.py --data PREPARED_128 --steps 12 --configs base --out /tmp/bench-train
    python benchmarks/bench_training.py --precision-step [--configs cpu] [--rounds 5] [--threads 1]
    python benchmarks/bench_training.py --step-parts [--compile] [--configs cpu] [--rounds 7]

--precision-step: one LDM optimiser step (forward, backward, AdamW) of the configured UNet at the shipped latent
size (4 x 32 x 32, batch_size of the config) on random latents and text states, fp32 vs bf16 autocast (what
`mixed_precision=bf16` makes accelerate enter) with NCHW or channels_last weights; settings alternate within each
round, medians reported; plus the loss of the same first step from the same weights in fp32 and bf16.

--step-parts: the same step split into its parts (forward + backward, clipping, AdamW, EMA), the optimiser and EMA
as they were (per-tensor loops) and as `fit` runs them now (fused AdamW, one foreach EMA call), and, on a CPU that
computes bf16 natively, the forward + backward under bf16 autocast (what the cpu configs' mixed_precision "auto"
trains with there): the whole step before (fp32, loops) against now; --compile adds the UNet's forward + backward
compiled as `compile=true` compiles it (each block apart, under bf16 where native).

Each stage runs `--steps` optimiser steps through its own `main` (max_rows / val sizes cut so set-up is
short); images/second is read from losses.csv (the last logged window, so start-up is excluded).
The LDM comparison times the same UNet step two ways on the same batches: with cached latents and text
states (our stage), and the stock loop that runs the VAE encoder and the text encoder every step.
"""

from __future__ import annotations

import csv
import os
import platform
import time
from pathlib import Path

from _bench import check_at_least, check_prepared, fresh_scratch  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _last_rate(out: Path) -> float:
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["images_per_second"])


def stage_rates(data: Path, out: Path, steps: int, configs: str) -> dict[str, float]:
    from dallebrain.training import clip, decoder, ldm, prior, vae

    common = ["--data", str(data), "--max-steps", str(steps), "--no-progress", "--set", f"log_every={steps // 2}",
              "--set", "sample_every=0", "--set", f"checkpoint_every={steps}"]
    rates = {}
    clip.main([*common, "--out", str(out / "clip"), "--config", str(CONFIGS / f"clip.{configs}.json"),
               "--set", "val_pairs=64"])
    rates["clip"] = _last_rate(out / "clip")
    vae.main([*common, "--out", str(out / "vae"), "--config", str(CONFIGS / f"vae.{configs}.json"),
              "--set", "val_images=8", "--set", "scaling_images=32"])
    rates["vae"] = _last_rate(out / "vae")
    ldm.main([*common, "--out", str(out / "ldm"), "--config", str(CONFIGS / f"ldm.{configs}.json"), "--vae",
              str(out / "vae"), "--clip", str(out / "clip"), "--set", "max_rows=512"])
    rates["ldm (cached)"] = _last_rate(out / "ldm")
    prior.main([*common, "--out", str(out / "prior"), "--config", str(CONFIGS / f"prior.{configs}.json"), "--clip",
                str(out / "clip"), "--set", "max_rows=512"])
    rates["prior (cached)"] = _last_rate(out / "prior")
    decoder.main([*common, "--out", str(out / "decoder"), "--config", str(CONFIGS / f"decoder.{configs}.json"),
                  "--clip", str(out / "clip"), "--vae", str(out / "vae"), "--set", "max_rows=512"])
    rates["decoder (cached)"] = _last_rate(out / "decoder")
    return rates


def caching_gain(data: Path, out: Path, steps: int, configs: str) -> tuple[float, float]:
    """images/s of one LDM training step with the cache vs encoding every batch (same UNet, same batches)."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler

    from dallebrain.data.dataset import SliceDataset, batch_indices
    from dallebrain.models.text import tokenize
    from dallebrain.models.unet import build_unet, noise_scheduler_config
    from dallebrain.models.vae import encode_images, load_vae
    from dallebrain.training.cache import build_latent_cache
    from dallebrain.training.config import load_config
    from dallebrain.training.ldm import LdmTrainConfig, load_conditioning, unet_config_of

    cfg = load_config(LdmTrainConfig, CONFIGS / f"ldm.{configs}.json")
    ds = SliceDataset(data, "train", max_rows=512)
    vae = load_vae(out / "vae").eval()
    encoder, tokenizer = load_conditioning(out / "clip")
    cache = build_latent_cache(ds, vae, encoder, tokenizer, out / "gain-cache", 1, progress=False)
    unet = build_unet(unet_config_of(cfg, cache.latents.shape[1], cache.latents.shape[-1]))
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    noise_sched = DDPMScheduler.from_config(noise_scheduler_config())

    def step(latents, states):
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (len(latents),))
        pred = unet(noise_sched.add_noise(latents, noise, t), t, encoder_hidden_states=states).sample
        loss = ((pred - noise) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    def run(cached: bool) -> float:
        start = time.perf_counter()
        for s in range(steps):
            rows = batch_indices(len(ds), cfg.batch_size, 0, s)
            if cached:
                latents = cache.latents[rows].float()
                states = cache.text(rows, np.zeros(len(rows), dtype=int)).float()
            else:
                with torch.no_grad():
                    images, captions = ds.batch(rows)
                    latents = encode_images(vae, images)
                    tok = tokenize(tokenizer, captions)
                    states = encoder(tok["input_ids"], attention_mask=tok["attention_mask"])[0]
            step(latents, states)
        return steps * cfg.batch_size / (time.perf_counter() - start)

    run(True)  # warm-up
    return run(True), run(False)


def _ldm_step_parts(configs: str):
    """What both step benchmarks time: the config's UNet (seed 0) with one fixed batch of random latents, text
    states and unstated attributes, and `loss_of(model)`, the training loss of one denoising step. The UNet's
    attention is chosen as the training stages choose it (models/attention.py)."""
    import torch
    from diffusers import DDPMScheduler

    from dallebrain.models.attention import use_cpu_training_attention
    from dallebrain.models.conditioning import unstated_features
    from dallebrain.models.unet import build_unet, noise_scheduler_config
    from dallebrain.training.config import load_config
    from dallebrain.training.diffusion import denoising_loss
    from dallebrain.training.ldm import LdmTrainConfig, unet_config_of

    cfg = load_config(LdmTrainConfig, CONFIGS / f"ldm.{configs}.json")
    torch.manual_seed(0)
    unet = use_cpu_training_attention(build_unet(unet_config_of(cfg, 4, 32)))
    b = cfg.batch_size
    latents, states = torch.randn(b, 4, 32, 32), torch.randn(b, 64, unet.config.cross_attention_dim)
    extra = {"class_labels": unstated_features(b, cfg.unet.fine_level)} if cfg.unet.attributes else {}
    noise = DDPMScheduler.from_config(noise_scheduler_config())

    def loss_of(model):
        return denoising_loss(lambda x, t: model(x, t, encoder_hidden_states=states, **extra).sample, noise,
                              latents, cfg.snr_gamma)["loss"]

    return unet, b, loss_of


def _alternating_rates(step, settings: list, rounds: int, images: int, echo: bool = False) -> tuple[dict, dict]:
    """(first-step loss, images/s of every round) per setting: one step of each from identical weights (the loss
    parity, and warm-up), then `rounds` rounds in a rotating order, so drift in the machine's load spreads evenly."""
    first = {s: step(s) for s in settings}
    rates = {s: [] for s in settings}
    for r in range(rounds):
        for setting in settings[r % len(settings):] + settings[:r % len(settings)]:
            tick = time.perf_counter()
            step(setting)
            rates[setting].append(images / (time.perf_counter() - tick))
            if echo:
                print(f"round {r + 1}: {' '.join(setting)} {rates[setting][-1]:.2f} images/s", flush=True)
    return first, rates


def precision_step(configs: str, rounds: int) -> None:
    """images/s of one LDM training step: fp32 / bf16 x NCHW / channels_last."""
    import contextlib
    import copy
    import statistics

    import torch

    start_unet, b, loss_of = _ldm_step_parts(configs)
    settings = [(p, f) for p in ("fp32", "bf16") for f in ("NCHW", "channels_last")]
    models = {}
    for setting in settings:
        unet = copy.deepcopy(start_unet).train()
        if setting[1] == "channels_last":
            unet = unet.to(memory_format=torch.channels_last)
        models[setting] = (unet, torch.optim.AdamW(unet.parameters(), lr=1e-4))

    def step(setting) -> float:
        unet, opt = models[setting]
        torch.manual_seed(1)  # the same noise and timesteps for every setting
        context = torch.autocast("cpu", dtype=torch.bfloat16) if setting[0] == "bf16" else contextlib.nullcontext()
        with context:
            loss = loss_of(unet)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    first, rates = _alternating_rates(step, settings, rounds, b, echo=True)
    base = statistics.median(rates[("fp32", "NCHW")])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the end; ldm.{configs}.json UNet "
          f"{sum(p.numel() for p in start_unet.parameters()) / 1e6:.1f} M parameters, batch {b}; "
          f"medians of {rounds} alternating rounds")
    print("| precision | layout | images/s (median) | range | vs fp32 NCHW | first-step loss |")
    print("|---|---|---|---|---|---|")
    for s in settings:
        median = statistics.median(rates[s])
        print(f"| {s[0]} | {s[1]} | {median:.2f} | {min(rates[s]):.2f}-{max(rates[s]):.2f} | {median / base:.2f}x | "
              f"{first[s]:.5f} |")


def step_parts(configs: str, rounds: int, compiled: bool) -> None:
    """Where one LDM optimiser step's time goes, old vs new: forward+backward, gradient clipping, AdamW (torch's
    per-tensor loop, its CPU default, vs fused) and the EMA update (a Python loop over tensors vs one foreach
    call); with `compiled`, forward+backward of the UNet compiled as `compile=true` does (its compile time printed
    apart)."""
    import contextlib
    import copy
    import statistics

    import torch

    from dallebrain.pipelines.precision import native_bf16
    from dallebrain.training.diffusion import ema_copy, update_ema

    unet, b, loss_of = _ldm_step_parts(configs)
    unet.train()
    ema = ema_copy(unet, 0.999)
    params = list(unet.parameters())
    loop_adamw = torch.optim.AdamW(params, lr=1e-6)  # on a CPU torch's default is the per-tensor loop
    fused_adamw = torch.optim.AdamW(params, lr=1e-6, fused=True)

    def forward_backward(model, bf16: bool = False) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_of(model)
        loss.backward()

    @torch.no_grad()
    def ema_loop() -> None:  # what update_ema did before
        for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
            e.lerp_(p.detach(), 0.001)

    # the cpu configs' mixed_precision "auto" trains under bf16 autocast where the CPU computes it natively
    native = native_bf16("cpu")
    parts = {"forward + backward": lambda: forward_backward(unet),
             "gradient clipping": lambda: torch.nn.utils.clip_grad_norm_(params, 1.0),
             "AdamW, per-tensor loop (before)": loop_adamw.step, "AdamW, fused (now)": fused_adamw.step,
             "EMA, loop over tensors (before)": ema_loop,
             "EMA, one foreach call (now)": lambda: update_ema(ema, unet, 10 ** 6, 0.999)}
    if native:
        parts["forward + backward, bf16 autocast (now)"] = lambda: forward_backward(unet, bf16=True)
    if compiled:  # as `compile=true` compiles: each block of the UNet in place (training/loop.compile_regions)
        from dallebrain.training.loop import compile_regions

        fast_compiled = compile_regions(copy.deepcopy(unet))
        tick = time.perf_counter()
        forward_backward(fast_compiled, bf16=native)  # compiled as training runs it: under bf16 where native
        print(f"torch.compile: first forward + backward (compiling) {time.perf_counter() - tick:.1f} s", flush=True)
        parts["forward + backward, torch.compile"] = lambda: forward_backward(fast_compiled, bf16=native)
    forward_backward(unet)  # warm-up; gradients exist for the optimisers from here on
    times = {k: [] for k in parts}
    names = list(parts)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            tick = time.perf_counter()
            parts[name]()
            times[name].append(time.perf_counter() - tick)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the end; ldm.{configs}.json UNet "
          f"{sum(p.numel() for p in params) / 1e6:.1f} M parameters in {len(params)} tensors, batch {b}; "
          f"medians of {rounds} alternating rounds")
    print("| part of a step | ms (median) | range |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {ms[k]:.1f} | {1000 * min(v):.1f}-{1000 * max(v):.1f} |")
    now_forward = ms["forward + backward, bf16 autocast (now)" if native else "forward + backward"]
    before = ms["forward + backward"] + ms["gradient clipping"] + ms["AdamW, per-tensor loop (before)"] + \
        ms["EMA, loop over tensors (before)"]
    after = now_forward + ms["gradient clipping"] + ms["AdamW, fused (now)"] + ms["EMA, one foreach call (now)"]
    print(f"\nwhole step before (fp32, loop AdamW and EMA) {before:.0f} ms ({1000 * b / before:.1f} images/s), now "
          f"({'bf16' if native else 'fp32: no native bf16 on this CPU'}, fused AdamW, foreach EMA) {after:.0f} ms "
          f"({1000 * b / after:.1f} images/s): {before / after:.2f}x")
    if compiled:
        with_compile = after - now_forward + ms["forward + backward, torch.compile"]
        print(f"now + torch.compile {with_compile:.0f} ms ({1000 * b / with_compile:.1f} images/s): "
              f"{before / with_compile:.2f}x of before")


def _shipped_training_steps(model: Path) -> dict:
    """For the shipped model's UNet, unCLIP decoder, VAE and prior: (module, images per step, loss function) of
    one training step at its CPU config's batch on random inputs of its training shapes."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from dallebrain.models.decoder import decoder_inputs, image_embed_dim_of
    from dallebrain.models.prior import load_prior
    from dallebrain.models.unet import noise_scheduler_config
    from dallebrain.training.diffusion import denoising_loss

    torch.manual_seed(0)
    noise = DDPMScheduler.from_config(noise_scheduler_config())
    latents = torch.randn(16, 4, 32, 32)
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    states = torch.randn(16, 64, unet.config.cross_attention_dim)
    labels = torch.randn(16, unet.config.projection_class_embeddings_input_dim)
    decoder = UNet2DConditionModel.from_pretrained(model / "decoder")
    conditioning = decoder_inputs(torch.randn(16, image_embed_dim_of(decoder)), torch.randn(16, labels.shape[1]))
    vae = AutoencoderKL.from_pretrained(model / "vae")
    crops = torch.rand(16, 1, 64, 64)
    prior, _ = load_prior(model / "prior")
    width = prior.config.embedding_dim
    embeds = torch.randn(64, width)
    prior_states = torch.randn(64, prior.config.num_embeddings, prior.config.text_hidden_dim)
    mask = torch.ones(64, prior.config.num_embeddings, dtype=torch.bool)

    def vae_loss(m):
        posterior = m.encode(crops).latent_dist
        return (m.decode(posterior.sample()).sample - crops).abs().mean() + 1e-6 * posterior.kl().mean()

    def prior_loss(m):
        t = torch.randint(0, 1000, (64,))
        pred = m(embeds, t, proj_embedding=embeds, encoder_hidden_states=prior_states,
                 attention_mask=mask).predicted_image_embedding
        return ((pred.float() - embeds) ** 2).mean()

    def unet_loss(m):
        return denoising_loss(lambda x, t: m(x, t, encoder_hidden_states=states, class_labels=labels).sample,
                              noise, latents, 5.0)["loss"]

    def decoder_loss(m):
        return denoising_loss(lambda x, t: m(x, t, **conditioning).sample, noise, latents, 5.0)["loss"]

    return {
        "LDM UNet": (unet, 16, unet_loss),
        "unCLIP decoder": (decoder, 16, decoder_loss),
        "VAE (64x64 crops)": (vae, 16, vae_loss),
        "prior": (prior, 64, prior_loss),
    }


def attention_table(model: Path, rounds: int) -> None:
    """images/s of one training step (forward, backward, fused AdamW) of each shipped network with torch's fused
    attention kernel (diffusers' default) vs models/attention.py's choice, in fp32 and under bf16 autocast."""
    import contextlib
    import copy
    import statistics

    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from dallebrain.models.attention import use_cpu_training_attention

    for name, (start, b, loss_of) in _shipped_training_steps(model).items():
        settings = [(p, k) for p in ("fp32", "bf16") for k in ("fused kernel", "CPU training choice")]
        runs = {}
        for setting in settings:
            net = copy.deepcopy(start).train()
            if setting[1] == "fused kernel":
                net.set_attn_processor(AttnProcessor2_0())
            else:
                use_cpu_training_attention(net)
            runs[setting] = (net, torch.optim.AdamW(net.parameters(), lr=1e-6, fused=True))

        def step(setting, runs=runs, loss_of=loss_of) -> float:
            net, opt = runs[setting]
            torch.manual_seed(1)  # the same noise and timesteps for every setting
            bf16 = setting[0] == "bf16"
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = loss_of(net)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        first, rates = _alternating_rates(step, settings, rounds, b)
        base = statistics.median(rates[("fp32", "fused kernel")])
        print(f"\n{name}: {sum(p.numel() for p in start.parameters()) / 1e6:.2f} M parameters, batch {b}; "
              f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}; medians of {rounds} "
              "alternating rounds", flush=True)
        print("| precision | attention | images/s (median) | range | vs fp32 fused | first-step loss |")
        print("|---|---|---|---|---|---|")
        for s in settings:
            median = statistics.median(rates[s])
            print(f"| {s[0]} | {s[1]} | {median:.1f} | {min(rates[s]):.1f}-{max(rates[s]):.1f} | "
                  f"{median / base:.2f}x | {first[s]:.5f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision-step", action="store_true", help="one LDM step, fp32 vs bf16 (no --data)")
    parser.add_argument("--step-parts", action="store_true", help="where an LDM step's time goes, old vs new "
                        "optimiser and EMA (no --data)")
    parser.add_argument("--attention", action="store_true", help="each shipped network's training step with "
                        "torch's fused attention vs models/attention.py's CPU choice, fp32 and bf16 (--model)")
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "dallebrain"
                        / "weights" / "default", help="--attention: a model folder (default: the shipped one)")
    parser.add_argument("--compile", action="store_true", help="--step-parts: time a torch.compile'd UNet too")
    parser.add_argument("--rounds", type=int, default=5, help="--precision-step, --step-parts: alternating rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--data", type=Path, default=None, help="a prepared data set at 128x128")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--configs", default="base", help="config set: base or cpu (configs/STAGE.SET.json)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dallebrain-bench-train"))
    args = parser.parse_args(argv)
    check_at_least(1, rounds=args.rounds, threads=args.threads, steps=args.steps)
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    if args.precision_step:
        precision_step(args.configs, args.rounds)
        return
    if args.step_parts:
        step_parts(args.configs, args.rounds, args.compile)
        return
    if args.attention:
        attention_table(args.model, args.rounds)
        return
    if args.data is None:
        parser.error("--data is required (except with --precision-step)")
    check_prepared("data", args.data)
    fresh_scratch(args.out)
    rates = stage_rates(args.data, args.out, args.steps, args.configs)
    cached, uncached = caching_gain(args.data, args.out, args.steps, args.configs)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {__import__('torch').get_num_threads()}; {args.configs} configs; {args.steps} steps each")
    print("| stage | images/second |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"\n| LDM step | images/second |\n|---|---|\n| cached latents + text states | {cached:.1f} |\n"
          f"| VAE + text encoder every step (stock loop) | {uncached:.1f} |\n| gain | {cached / uncached:.2f}x |")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
