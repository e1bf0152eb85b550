"""unCLIP prior stage: a `BrainPriorTransformer` learns p(Brain-CLIP image embedding | caption) by diffusion over
the image embedding (normalised by its training mean / std), predicting the clean embedding as DALL-E 2 does.

    dallebrain train prior --data PREPARED --clip runs/clip --out runs/prior [--into runs/pipeline]

Brain-CLIP runs once, to fill a cache (text embeddings and token states of several phrasings per slice, image
embeddings, the empty prompt's encodings); the loop reads only the cache. --out receives the prior's
save_pretrained folder and metrics.json (val: cosine of sampled to true image embedding versus random pairs,
retrieval accuracy of the true slice among val slices, each with its baseline).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from dallebrain.models.attention import use_cpu_training_attention
from dallebrain.pipelines import defaults as D
from dallebrain.training.cache import cached_arrays, dataset_meta, module_fingerprint, on_cache_device
from dallebrain.training.common import attach_to_pipeline, check_pipeline_parts
from dallebrain.training.config import TrainConfig
from dallebrain.training.loop import Stage, fit, unwrap


@dataclasses.dataclass
class PriorTrainConfig(TrainConfig):
    """Prior settings: the transformer's size and how it is trained and evaluated."""

    num_layers: int = 6  # transformer blocks
    num_attention_heads: int = 8
    attention_head_dim: int = 32  # width = heads * head_dim
    dropout: float = 0.0
    text_dropout: float = 0.1  # share of captions replaced by "" so guidance has an unconditional prior
    phrasings: int = 3  # cached caption phrasings per slice (the canonical one first)
    max_rows: int = 0  # cache at most this many training slices (0: all)
    val_rows: int = 256  # held-out slices for metrics.json (0: all)
    eval_steps: int = D.PRIOR_STEPS  # prior sampling steps for metrics.json
    eval_guidance: float = D.PRIOR_GUIDANCE  # prior guidance for metrics.json


# --- the cache ----------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_images(clip, dataset, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Brain-CLIP image embeddings (N, D) float32 of every slice of a dataset."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="cache image embeddings", disable=not progress):
        images, _ = dataset.batch(range(start, min(len(dataset), start + batch_size)))
        out.append(clip.encode_image(images).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_captions(clip, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text embeddings (B, D), token states (B, 64, 384), masks (B, 64) bool) as the prior reads them."""
    embeds = clip.encode_text(texts).float().cpu()
    states, mask = clip.text_states(texts)
    return embeds, states.float().cpu(), mask.bool().cpu()


def build_prior_cache(dataset, clip, folder: Path, phrasings: int, progress: bool = True) -> dict[str, np.ndarray]:
    """text_embeds (N*P, D), text_states (N*P, 64, 384) float16, text_mask (N*P, 64), image_embeds (N, D), and
    uncond_* for the empty prompt. Row i's phrasing p is at i * P + p."""
    from tqdm import tqdm

    meta = {**dataset_meta(dataset), "phrasings": phrasings, "clip": module_fingerprint(clip)}

    def fill(tmp: Path) -> None:
        with on_cache_device(clip):
            fill_on_device(tmp)

    def fill_on_device(tmp: Path) -> None:
        np.save(tmp / "image_embeds.npy", encode_images(clip, dataset, progress=progress).numpy())
        texts = []
        for i in range(len(dataset)):
            options = dataset.captions(i)
            texts += [options[p % len(options)] for p in range(phrasings)]
        embeds0, states0, mask0 = encode_captions(clip, [""])
        for name, value in (("uncond_embed", embeds0[0]), ("uncond_states", states0[0].half()),
                            ("uncond_mask", mask0[0])):
            np.save(tmp / f"{name}.npy", value.numpy())
        n = len(texts)
        embeds = np.zeros((n, embeds0.shape[1]), dtype=np.float32)
        masks = np.zeros((n, mask0.shape[1]), dtype=bool)
        states = np.lib.format.open_memmap(tmp / "text_states.npy", mode="w+", dtype=np.float16,
                                           shape=(n, *states0.shape[1:]))
        for start in tqdm(range(0, n, 128), desc="cache captions", disable=not progress):
            e, s, m = encode_captions(clip, texts[start:start + 128])
            embeds[start:start + len(e)], masks[start:start + len(e)] = e.numpy(), m.numpy()
            states[start:start + len(e)] = s.half().numpy()
        states.flush()
        del states
        np.save(tmp / "text_embeds.npy", embeds)
        np.save(tmp / "text_mask.npy", masks)

    return cached_arrays(folder, meta, fill)


def rows_of(array: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """array[index] as a float tensor, reading a memory-mapped array in order (fastest)."""
    order = np.argsort(index)
    out = np.empty((len(index), *array.shape[1:]), dtype=array.dtype)
    out[order] = array[index[order]]
    return torch.from_numpy(out)


# --- evaluation ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_prior(prior, scheduler_config: dict, clip, data_dir: Path, max_rows: int | None = 256,
                   steps: int = 25, guidance: float = 4.0, seed: int = 0, batch_size: int = 64) -> dict:
    """On held-out slices: cosine between the prior's image embedding for the canonical caption and the slice's
    true embedding, against random (prompt, slice) pairs and against the text embedding itself; and how often
    the prior's embedding retrieves its own slice (or one with the same caption) among all held-out slices."""
    from dallebrain.pipelines.unclip import sample_image_embeds
    from dallebrain.training.common import held_out

    dataset, split = held_out(data_dir, seed, max_rows or None)
    captions = [dataset.captions(i)[0] for i in range(len(dataset))]
    true = encode_images(clip, dataset).to(prior.device)
    uncond = encode_captions(clip, [""])
    sampled, texts = [], []
    for start in range(0, len(dataset), batch_size):
        embeds, states, mask = encode_captions(clip, captions[start:start + batch_size])
        seeds = list(range(seed + start, seed + start + len(embeds)))
        sampled.append(sample_image_embeds(prior, scheduler_config, embeds, states, mask, uncond, seeds, steps,
                                           guidance))
        texts.append(embeds)
    sampled, texts = torch.cat(sampled).to(true), torch.cat(texts).to(true)
    n = len(true)
    sims = sampled @ true.t()
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sims.device)
    best = sims.argmax(1).cpu().numpy()
    same_caption = np.array([captions[j] == captions[i] for i, j in enumerate(best)])
    caption_ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    groups = np.array([caption_ids[c] for c in captions])
    chance_caption = float(np.mean([(groups == g).sum() / n for g in groups]))
    return {"split": split, "slices": n, "prior_steps": steps, "prior_guidance": guidance,
            "cosine_prior_to_true": float(sims.diagonal().mean()),
            "cosine_random_pairs": float(sims[off_diagonal].mean()) if n > 1 else float("nan"),
            "cosine_text_to_true": float((texts * true).sum(1).mean()),
            "retrieval_top1": float((best == np.arange(n)).mean()), "retrieval_top1_chance": 1.0 / n,
            "retrieval_same_caption": float(same_caption.mean()), "retrieval_same_caption_chance": chance_caption}


# --- the stage ----------------------------------------------------------------------------------------------
class PriorStage(Stage):
    name = "prior"

    def __init__(self, config: PriorTrainConfig, dataset, clip_dir: Path, out_dir: Path, data_dir: Path,
                 progress: bool = True):
        from dallebrain.models.clip import BrainCLIP
        from dallebrain.models.prior import PriorConfig, build_prior, prior_scheduler_config, set_embedding_statistics

        self.config, self.dataset, self.data_dir = config, dataset, Path(data_dir)
        self.clip = BrainCLIP.from_pretrained(clip_dir).eval()
        self.cache = build_prior_cache(dataset, self.clip, Path(out_dir) / "cache", config.phrasings, progress)
        torch.manual_seed(config.seed)
        self.prior = build_prior(PriorConfig(config.num_layers, config.num_attention_heads, config.attention_head_dim,
                                             config.dropout), self.clip.config.embed_dim)
        image_embeds = torch.from_numpy(np.array(self.cache["image_embeds"]))
        # the empty prompt's encodings, swapped in for dropped captions
        self.uncond = [torch.from_numpy(np.array(self.cache[k])) for k in ("uncond_embed", "uncond_states",
                                                                           "uncond_mask")]
        std = image_embeds.std(0) if len(image_embeds) > 1 else torch.ones(image_embeds.shape[1])
        set_embedding_statistics(self.prior, image_embeds.mean(0), std.clamp(min=1e-4))
        self.scheduler_config = prior_scheduler_config()
        self.noise = None
        self.images_per_step = config.batch_size
        self.metrics: dict | None = None

    def setup(self, accelerator) -> None:
        from dallebrain.models.prior import make_prior_scheduler

        self.accelerator = accelerator
        self.prior.to(accelerator.device)
        self.clip.to(accelerator.device)
        self.live = accelerator.prepare(use_cpu_training_attention(self.prior))
        self.rank = accelerator.process_index
        self.noise = make_prior_scheduler(self.scheduler_config)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"prior": self.prior}

    def trainable_parameters(self):
        return [p for p in self.prior.parameters() if p.requires_grad]  # clip_mean / clip_std are constants

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        from dallebrain.models.prior import normalise_embeddings
        from dallebrain.training.diffusion import SeedStream, micro_batch

        cfg, cache, device = self.config, self.cache, self.accelerator.device
        rows, rng = micro_batch(len(cache["image_embeds"]), cfg.batch_size, cfg.seed, step, micro, self.rank,
                                SeedStream.PRIOR_CAPTIONS)
        text = rows * cfg.phrasings + rng.integers(cfg.phrasings, size=len(rows))  # a random cached phrasing
        embeds = rows_of(cache["text_embeds"], text)
        states = rows_of(cache["text_states"], text).float()
        mask = rows_of(cache["text_mask"], text)
        drop = torch.from_numpy(rng.random(len(rows)) < cfg.text_dropout)
        embeds[drop], states[drop], mask[drop] = self.uncond[0], self.uncond[1].float(), self.uncond[2]
        target = normalise_embeddings(self.prior, rows_of(cache["image_embeds"], rows).to(device))
        noise = torch.randn_like(target)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (len(rows),), device=device)
        noisy = self.noise.add_noise(target, noise, t)
        pred = self.live(noisy, t, proj_embedding=embeds.to(device), encoder_hidden_states=states.to(device),
                         attention_mask=mask.to(device)).predicted_image_embedding
        mse = ((pred.float() - target) ** 2).mean()
        return {"loss": mse, "mse": mse.detach()}

    def export(self, out_dir: Path) -> None:
        from dallebrain.data.io import write_json_atomic
        from dallebrain.models.prior import save_prior

        prior = unwrap(self.accelerator, self.live).eval()
        save_prior(prior, out_dir, self.scheduler_config)
        cfg = self.config
        self.metrics = evaluate_prior(prior, self.scheduler_config, self.clip, self.data_dir, cfg.val_rows or None,
                                      cfg.eval_steps, cfg.eval_guidance, cfg.seed)
        write_json_atomic(Path(out_dir) / "metrics.json", self.metrics)
        print("prior (" + self.metrics["split"] + "): " + ", ".join(
            f"{k} {v:.4g}" for k, v in self.metrics.items() if isinstance(v, float)))


def main(argv: list[str] | None = None) -> dict:
    """Train the unCLIP prior; returns fit's summary plus the export metrics (when the run finished)."""
    started = time.perf_counter()  # time_budget_s counts the data and caches too
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.args import stage_config, stage_parser

    parser = stage_parser("prior", "Train the unCLIP prior (caption -> Brain-CLIP image embedding).")
    parser.add_argument("--clip", type=Path, required=True, help="Brain-CLIP folder (dallebrain train clip)")
    parser.add_argument("--into", type=Path, default=None, metavar="PIPELINE",
                        help="after export, copy the prior into PIPELINE/prior (and --clip into "
                        "PIPELINE/clip if absent)")
    args = parser.parse_args(argv)
    config = stage_config(PriorStage, PriorTrainConfig, args)
    if args.into is not None:
        check_pipeline_parts(args.into, {"clip": args.clip})  # fail before training, not after
    dataset = SliceDataset(args.data, "train", max_rows=config.max_rows or None, seed=config.seed,
                           columns=("captions",))
    stage = PriorStage(config, dataset, args.clip, args.out, args.data, progress=not args.no_progress)
    summary = fit(stage, config, args.out, resume=args.resume, progress=not args.no_progress,
                  started=started)
    if summary["steps"] == config.max_steps:
        metrics_path = Path(args.out) / "metrics.json"
        if metrics_path.exists():
            summary["metrics"] = json.loads(metrics_path.read_text())
        if args.into is not None:
            attach_to_pipeline(args.into, "prior", args.out, {"clip": args.clip},
                               {"prior_steps": config.max_steps, "embed_dim": stage.clip.config.embed_dim})
    return summary


if __name__ == "__main__":
    main()
