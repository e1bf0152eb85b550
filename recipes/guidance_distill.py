"""Guidance distillation: a student UNet that gives, in one row, what the model's guided sampling computes in three.

    python recipes/guidance_distill.py --work /path/to/cache/distill --data PREPARED [--base MODEL]
        [--steps 4000] [--minutes 0] [--batch 16] [--lr 1e-4] [--rows 16000] [--latents CACHE] [--below T]
        [--device cpu|cuda] [--release]

Why: the shipped model guides every sampling step with three UNet rows (no condition; the attributes alone;
caption and attributes: pipelines/text2mri.guide), per-contrast scales and PDw's unguided tail. At one image per
pass that is 34 ms of UNet per step against 20 ms for one row (BENCHMARKS, "Guidance distilled into the UNet").
Meng et al. (CVPR 2023, "On distillation of guided diffusion models", stage one) teach a student, started from the
teacher's weights, to match the teacher's guided output on noised training latents; here the target is exactly
what sampling computes (`Text2MRIPipeline.guidance_plan` + `guided_prediction`, the model's own scales at the
default caption guidance), and training draws its timesteps from those the default sampler visits (DPM-Solver++
on Karras noise levels at 20 steps), where the student is used.

Each step: --batch train captions (one of each slice's phrasings, in the form the pipeline gives the text
encoder), their VAE latents noised to one of the sampler's timesteps, the teacher's guided prediction (no grad,
the pipeline's compute precision), the student's conditional one, mean squared error; AdamW (fused), an EMA of the
student. The run resumes from --work (student, EMA and optimiser state in safetensors, never pickled) and stops at
--steps or after --minutes, so a long run can span sessions. --release writes work/release: the base with the
EMA student as its UNet and "guidance_distilled" in dallebrain.json's "sampling" (the pipeline then runs one row
per step at the default guidance, and refuses another caption or attribute guidance in one line). --below T teaches
only the sampler's timesteps under T (measured: the noisy steps do not learn at CPU scale, BENCHMARKS) and releases
the teacher as unet/ with the student as unet_distilled/, used below T at the taught setting only. A resume must
name the same --below (work/runs.json records each stretch). The grey-level maps are the base's; refit them with
recipes/grey_level_map.py --base work/release for a shipped model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import SHIPPED, check_prepared  # noqa: E402

SAMPLER, SAMPLER_STEPS = "dpm-karras", 20  # the shipped model's default sampling: the timesteps trained on
EMA_DECAY = 0.999
WARMUP = 100  # optimiser steps of linear learning-rate warm-up: the student starts as a trained network
STATE = "state.safetensors"  # student, EMA, optimiser moments and step, in --work


def parse(argv: list[str] | None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="working folder (latent cache, state, release)")
    p.add_argument("--data", type=Path, required=True, help="the prepared set the base was trained on")
    p.add_argument("--base", type=Path, default=SHIPPED, help="the teacher model folder (default: the shipped one)")
    p.add_argument("--steps", type=int, default=4000, help="optimiser steps in all (a resumed run counts on)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this long (0: no limit); resume later")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rows", type=int, default=16000, help="train slices drawn (seeded) from the train split")
    p.add_argument("--latents", type=Path, default=None,
                   help="a `train ldm` cache folder of the same rows (its latents are reused, else encoded here)")
    p.add_argument("--release", action="store_true", help="write work/release from the EMA student")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    p.add_argument("--below", type=int, default=0,
                   help="teach only the sampler's timesteps below this one (0: all); the release keeps the teacher "
                        "for the steps above (unet/) and adds the student for the rest (unet_distilled/)")
    args = p.parse_args(argv)
    check_prepared(args.data)
    if not (args.base / "unet").is_dir() or not (args.base / "dallebrain.json").is_file():
        raise SystemExit(f"error: {args.base} is not a dallebrain model folder (no unet/ or dallebrain.json)")
    for name in ("steps", "batch", "rows"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.below < 1000:
        raise SystemExit(f"error: --below must be a timestep in 1..999, or 0 for all, got {args.below}")
    if args.device not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu or cuda, got {args.device!r}")
    if not (0 < args.lr < 1) or args.minutes < 0:
        raise SystemExit(f"error: --lr must be in (0, 1) and --minutes >= 0, got {args.lr} and {args.minutes}")
    return args


def train_latents(args, pipe, dataset):
    """(N, C, h, w) fp16 latents of the dataset's rows: a matching `train ldm` cache's, or encoded into work."""
    import torch

    from dallebrain.training.cache import build_latent_cache, dataset_meta

    if args.latents is not None:
        meta = json.loads((args.latents / "meta.json").read_text())
        if {k: meta.get(k) for k in ("data", "rows", "first", "last")} != dataset_meta(dataset):
            raise SystemExit(f"error: {args.latents} was not made from these {len(dataset)} rows of {args.data}")
        return torch.from_numpy(np.load(args.latents / "latents.npy"))
    cache = build_latent_cache(dataset, pipe.vae, pipe.text_encoder, pipe.tokenizer, args.work / "cache",
                               phrasings=1, with_text=False, progress=False)
    return cache.latents


def teacher_targets(pipe, prompts: list[str], noisy, t):
    """The teacher's guided prediction for these prompts at `noisy` latents and timestep t, exactly as sampling
    computes it at the default caption guidance; and the student's inputs (the conditional rows)."""
    import torch

    from dallebrain.pipelines import defaults as D
    from dallebrain.pipelines.precision import compute_context

    uncond, _ = pipe.encode_prompt("")
    cond = torch.cat([pipe.encode_prompt(pipe.model_text(p))[0] for p in prompts])
    attributes = pipe._attribute_pair(prompts, "")
    cond_attr, uncond_attr = attributes if attributes is not None else (None, None)
    early = pipe.attribute_schedule(prompts, D.GUIDANCE) or (None, None)
    plan = pipe.guidance_plan(cond, uncond, len(prompts), D.GUIDANCE, None, cond_attr, uncond_attr,
                              pipe.attribute_scales(prompts, D.GUIDANCE), early[0], early[1],
                              pipe.unguided_rows(prompts))
    with torch.no_grad(), compute_context(pipe.compute_precision, pipe.device.type):
        target = pipe.guided_prediction(plan, noisy, t)
    return target, plan.alone


def load_state(path: Path, student, ema, optimizer) -> int:
    """The step a saved run reached, its weights and optimiser moments loaded; 0 when there is none."""
    from safetensors.torch import load_file

    if not path.is_file():
        return 0
    saved = load_file(path)
    student.load_state_dict({k[len("student."):]: v for k, v in saved.items() if k.startswith("student.")})
    ema.load_state_dict({k[len("ema."):]: v for k, v in saved.items() if k.startswith("ema.")})
    params = [p for p in student.parameters() if p.requires_grad]
    for i, p in enumerate(params):
        if f"adam.{i}.exp_avg" in saved:
            optimizer.state[p] = {"step": saved[f"adam.{i}.step"].reshape(()).clone().to(p.device),
                                  "exp_avg": saved[f"adam.{i}.exp_avg"].to(p.device),
                                  "exp_avg_sq": saved[f"adam.{i}.exp_avg_sq"].to(p.device)}
    return int(saved["step"].item()) if "step" in saved else 0


def save_state(path: Path, student, ema, optimizer, step: int) -> None:
    import torch
    from safetensors.torch import save_file

    from dallebrain.data.io import atomic_path

    tensors = {f"student.{k}": v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    for i, p in enumerate(p for p in student.parameters() if p.requires_grad):
        state = optimizer.state.get(p)
        if state:
            tensors[f"adam.{i}.step"] = torch.as_tensor(state["step"]).reshape(1).float().cpu()
            tensors[f"adam.{i}.exp_avg"] = state["exp_avg"].cpu().contiguous()
            tensors[f"adam.{i}.exp_avg_sq"] = state["exp_avg_sq"].cpu().contiguous()
    tensors["step"] = torch.tensor([step])
    with atomic_path(path) as tmp:
        save_file(tensors, tmp)


def record_run(args, first: int, last: int) -> None:
    """work/runs.json: the settings of each stretch of training (a resumed run may change --lr or --batch)."""
    from dallebrain.data.io import write_json_atomic

    path = args.work / "runs.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append({"from_step": first, "to_step": last, "learning_rate": args.lr, "batch": args.batch,
                 "device": args.device, "below": args.below})
    write_json_atomic(path, runs)


def train(args) -> int:
    import copy

    import torch
    from diffusers import DDPMScheduler

    from dallebrain.api import load_pipeline
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.unet import make_scheduler
    from dallebrain.pipelines.precision import compute_context
    from dallebrain.training.diffusion import update_ema

    runs_path = args.work / "runs.json"
    taught = json.loads(runs_path.read_text())[-1].get("below", 0) if runs_path.is_file() else args.below
    if taught != args.below:  # the student's timesteps are the run's: a resume or release must name the same
        raise SystemExit(f"error: {args.work} holds a student taught with --below {taught}, got --below {args.below}")
    args.work.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.base, device=args.device)
    device = pipe.device
    if getattr(pipe, "guidance_distilled", None):
        raise SystemExit(f"error: {args.base} is already guidance-distilled: distil from its teacher")
    dataset = SliceDataset(args.data, "train", max_rows=args.rows, seed=args.seed)
    latents = train_latents(args, pipe, dataset)
    sampler = make_scheduler(SAMPLER, pipe.scheduler_config)
    sampler.set_timesteps(SAMPLER_STEPS)
    timesteps = sampler.timesteps.long()
    if args.below:
        timesteps = timesteps[timesteps < args.below]
        if not len(timesteps):
            raise SystemExit(f"error: no step of {SAMPLER} at {SAMPLER_STEPS} steps is below timestep {args.below}")
    noise_schedule = DDPMScheduler.from_config(pipe.scheduler_config)
    teacher = pipe.unet.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    ema = copy.deepcopy(teacher).eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    step = load_state(args.work / STATE, student, ema, optimizer)
    log_path = args.work / "losses.csv"
    if step == 0:
        log_path.write_text("step,loss,seconds\n")
    else:  # a killed run logged steps past its last saved state: they are trained again, so logged again
        lines = log_path.read_text().splitlines()
        log_path.write_text("\n".join([lines[0], *[x for x in lines[1:] if int(x.split(",")[0]) <= step]]) + "\n")
    first = step
    started, last_save = time.time(), time.time()
    precision = pipe.compute_precision
    while step < args.steps and not (args.minutes and time.time() - started > args.minutes * 60):
        rng = np.random.default_rng([args.seed, step])  # the batch a step sees: the same after a resume
        rows = rng.integers(len(dataset), size=args.batch)
        prompts = [str(rng.choice(dataset.captions(int(r)))) for r in rows]
        t = timesteps[int(rng.integers(len(timesteps)))]
        x0 = latents[torch.from_numpy(rows)].float()
        noise = torch.from_numpy(rng.standard_normal(x0.shape, dtype=np.float32))
        noisy = noise_schedule.add_noise(x0, noise, t.expand(len(rows))).to(device)
        t = t.to(device)
        target, inputs = teacher_targets(pipe, prompts, noisy, t)
        with compute_context(precision, device.type):
            pred = student(noisy, t, **inputs).sample.float()
        loss = torch.nn.functional.mse_loss(pred, target)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / WARMUP)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        step += 1
        update_ema(ema, student, step, EMA_DECAY)
        with log_path.open("a") as f:
            f.write(f"{step},{loss.item():.6f},{time.time() - started:.1f}\n")
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.5f} ({time.time() - started:.0f} s)", flush=True)
        if time.time() - last_save > 300:
            save_state(args.work / STATE, student, ema, optimizer, step)
            last_save = time.time()
    save_state(args.work / STATE, student, ema, optimizer, step)
    if step > first:
        record_run(args, first, step)
    if args.release:
        release(args, ema.cpu(), step)
    return step


def release(args, student, step: int) -> Path:
    """work/release: the base with the student as its UNet and the distillation recorded in dallebrain.json."""
    from shipped_model import model_with_parts

    from dallebrain.pipelines import defaults as D
    from dallebrain.pipelines.export import release_folder, update_model_info

    unet_dir = args.work / "unet"
    student.save_pretrained(unet_dir, safe_serialization=True)
    # --below: the teacher stays unet/ for the noisy steps, the student joins as unet_distilled/
    model = model_with_parts(args.base, args.work, {"unet_distilled" if args.below else "unet": unet_dir})
    base_info = json.loads((args.base / "dallebrain.json").read_text())
    # the base's maps kept (model_with_parts drops them for a new UNet): the student's images are the teacher's
    # to its error; grey_level_map.py refits them for a release that ships
    maps = (base_info.get("sampling") or {}).get("grey_level_map")
    runs_path = args.work / "runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.is_file() else []
    sampling = {"guidance_distilled": {"guidance": D.GUIDANCE, "sampler": SAMPLER, "sampler_steps": SAMPLER_STEPS,
                                       "steps": step, "runs": runs, "rows": args.rows, "ema_decay": EMA_DECAY,
                                       **({"below_timestep": args.below} if args.below else {}),
                                       "method": "Meng et al. 2023, stage one (recipes/guidance_distill.py)"}}
    if maps is not None:
        sampling["grey_level_map"] = maps
    update_model_info(model, {"sampling": sampling})
    out = release_folder(model, args.work / "release")
    print(f"released: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return train(args)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
