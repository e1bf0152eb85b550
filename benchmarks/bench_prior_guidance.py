"""How far the unCLIP prior's image embeddings are from the real slices' at each prior guidance scale, in
Brain-CLIP's own space, before any decoder runs.

    python benchmarks/bench_prior_guidance.py --data PREPARED [--model FOLDER] [--split val] [--n 512]
        [--guidance 1,1.5,2,3,4,6]

For --n held-out slices of --split (one caption each, the first phrasing; embedding i from seed i, as the
pipeline seeds its prior), the prior samples one embedding per caption at each scale; printed per scale: the
Frechet distance between those embeddings and the slices' own Brain-CLIP embeddings, the same with the two
halves crossed (first half sampled against the second half real: no caption shared, so what is left is
the distributions'), the real halves against each other (the floor), and the mean cosine of each embedding to
its own slice's. The prior's guidance pushes each embedding towards its caption; where it pushes past where the
real slices of that caption lie, the distance grows. BENCHMARKS.md, "The prior's guidance".
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from _bench import check_at_least, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def guidance_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --guidance takes comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):  # NaN gave NaN embeddings
        raise SystemExit(f"error: --guidance takes non-negative numbers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict[float, dict[str, float]]:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (dallebrain data prepare)")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--n", type=int, default=512, help="held-out slices (at most; at least 8)")
    parser.add_argument("--guidance", default="1,1.5,2,3,4,6", help="prior guidance scales, comma-separated")
    parser.add_argument("--steps", type=int, default=None, help="prior steps (default: the pipeline's)")
    args = parser.parse_args(argv)
    check_prepared("data", args.data)
    check_at_least(1, steps=args.steps)
    scales = guidance_list(args.guidance)
    if args.n < 8:
        raise SystemExit(f"error: --n must be at least 8, got {args.n}")
    import torch

    from dallebrain.api import default_model, load_pipeline
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.evaluation.metrics import frechet_distance
    from dallebrain.pipelines.unclip import sample_image_embeds
    from dallebrain.training.prior import encode_captions, encode_images

    try:
        pipe = load_pipeline(args.model or default_model(), route="unclip", device="cpu")
        data = SliceDataset(args.data, args.split, max_rows=args.n, seed=0)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"error: {str(exc).splitlines()[0]}") from None
    n = len(data)
    if n < 4:
        raise SystemExit(f"error: the {args.split} split of {args.data} holds {n} slices: at least 4 needed")
    steps = args.steps or pipe.prior_steps
    captions = [pipe.model_text(data.captions(i)[0]) for i in range(n)]
    real = encode_images(pipe.clip, data).float().numpy()
    half = n // 2
    floor = frechet_distance(real[:half], real[half:])
    print(f"{args.split} split, {n} slices, prior steps {steps}; real half against real half (floor): {floor:.4f}")
    print(f"{'guidance':>8s} {'FD to real':>10s} {'FD crossed':>10s} {'cosine to own':>13s} {'seconds':>7s}")
    uncond = encode_captions(pipe.clip, [""])
    embeds, states, mask = encode_captions(pipe.clip, captions)
    out = {}
    for scale in scales:
        start, parts = time.perf_counter(), []
        with torch.no_grad():
            for s in range(0, n, 64):
                rows = slice(s, min(n, s + 64))
                parts.append(sample_image_embeds(pipe.prior, pipe.prior_scheduler_config, embeds[rows], states[rows],
                                                 mask[rows], uncond, list(range(rows.start, rows.stop)), steps,
                                                 scale))
        sampled = torch.cat(parts).float().numpy()
        row = {"frechet": frechet_distance(sampled, real), "crossed": frechet_distance(sampled[:half], real[half:]),
               "cosine": float((sampled * real).sum(1).mean()), "seconds": time.perf_counter() - start}
        out[scale] = row
        print(f"{scale:8.2f} {row['frechet']:10.4f} {row['crossed']:10.4f} {row['cosine']:13.3f} {row['seconds']:7.0f}",
              flush=True)
    best = min(out, key=lambda k: out[k]["frechet"])
    print(f"closest to real: guidance {best} (floor {floor:.4f})")
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(lambda: sys.exit(0 if main() else 1))
