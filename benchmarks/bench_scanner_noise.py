"""Would resynthesised scanner noise close the texture gap? The grain a model's VAE loses, measured and added back.

Why: real slices carry their scanner's noise (Rician, then resampled by prepare), and the VAE, which squeezes each
4x4 patch into one latent vector, loses 40-90 % of the real slices' power above the latent grid's Nyquist
frequency (PDw most). Video codecs answer that with film-grain synthesis: measure the grain's spectrum, add grain
with that spectrum at the decoder. This benchmark fits it the same way, per contrast: the radially averaged power
spectrum of brain-interior patches of real train slices minus that of their VAE reconstructions, zero below
1 / (2 x the VAE's downsampling) cycles/pixel, and Gaussian noise with that spectrum on the brain pixels. Then it
asks the two questions that decide whether it is grain or missing anatomy:
  1. on other real train slices' reconstructions: does the noise bring their texture (GLCM Frechet distance) and
     grey levels closer to real slices? (If the VAE lost only noise, it must.)
  2. on the generated slices of an `evaluate` report (--report): GLCM, sharpness and grey levels with and without;
     and per frequency band, the power of its reconstructions and generated slices over the real slices'.
Prints tables; asserts nothing; no weights change (BENCHMARKS.md, "Scanner noise, resynthesised").

  python benchmarks/bench_scanner_noise.py --data PREPARED [--model MODEL] [--report EVAL_OUT] [--per-contrast 256]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
PATCH_PX = 24  # brain-interior patches: inside most slices' brain, 24 frequency bins across
BAND_EDGES = np.arange(13) / 16  # cycles/pixel, up to 0.75 > the corner's 0.707
INTERIOR_EROSION_PX = 2  # patches keep off the outline, whose step would dominate the spectrum
NOISE_STREAM = 0x5C4E  # numpy seed sequence [NOISE_STREAM, slice index]


def interior_patches(images: np.ndarray) -> np.ndarray:
    """(K, PATCH_PX, PATCH_PX): every patch on a half-patch grid lying wholly in a slice's eroded brain."""
    from scipy import ndimage

    from dallebrain.evaluation.metrics import BRAIN_THRESHOLD

    out = []
    for image in np.asarray(images, dtype=np.float64):
        inside = ndimage.binary_erosion(image > BRAIN_THRESHOLD, iterations=INTERIOR_EROSION_PX)
        for y in range(0, image.shape[0] - PATCH_PX + 1, PATCH_PX // 2):
            for x in range(0, image.shape[1] - PATCH_PX + 1, PATCH_PX // 2):
                if inside[y:y + PATCH_PX, x:x + PATCH_PX].all():
                    out.append(image[y:y + PATCH_PX, x:x + PATCH_PX])
    return np.asarray(out).reshape(-1, PATCH_PX, PATCH_PX)


def band_power(images: np.ndarray) -> np.ndarray:
    """Power per band of BAND_EDGES of the slices' interior patches: the mean Hann-windowed periodogram (each patch's
    mean removed), radially averaged, over the window's energy (white noise of variance s2 reads s2 in every band)."""
    patches = interior_patches(images)
    if len(patches) == 0:
        raise ValueError("no brain-interior patch of 24 px in these slices")
    window = np.outer(np.hanning(PATCH_PX), np.hanning(PATCH_PX))
    centred = (patches - patches.mean(axis=(1, 2), keepdims=True)) * window
    power = (np.abs(np.fft.fft2(centred)) ** 2).mean(axis=0) / float((window ** 2).sum())
    fy, fx = np.meshgrid(np.fft.fftfreq(PATCH_PX), np.fft.fftfreq(PATCH_PX), indexing="ij")
    radius = np.hypot(fy, fx)
    return np.array([power[(radius >= lo) & (radius < hi)].mean()
                     for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:], strict=True)])


def lost_spectrum(real: np.ndarray, reconstructed: np.ndarray, downsampling: int) -> np.ndarray:
    """The power the reconstructions lack, per band, 0 below the latent grid's Nyquist frequency (there a latent can
    hold the content: what is missing is the VAE's error, not grain it cannot carry)."""
    lost = np.maximum(band_power(real) - band_power(reconstructed), 0.0)
    lost[BAND_EDGES[:-1] < 1.0 / (2 * downsampling) - 1e-9] = 0.0
    return lost


def with_noise(images: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
    """Slice i plus Gaussian noise of that spectrum (seeded by i) on its brain pixels, kept inside (threshold, 1]."""
    from dallebrain.evaluation.metrics import BRAIN_THRESHOLD

    out = np.array(images, dtype=np.float32, copy=True)
    centres = (BAND_EDGES[:-1] + BAND_EDGES[1:]) / 2
    for i, image in enumerate(out):
        fy, fx = np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1]), indexing="ij")
        gain = np.sqrt(np.interp(np.hypot(fy, fx), centres, spectrum))
        white = np.random.default_rng([NOISE_STREAM, i]).standard_normal(image.shape)
        noise = np.real(np.fft.ifft2(np.fft.fft2(white) * gain)).astype(np.float32)
        brain = image > BRAIN_THRESHOLD
        image[brain] = np.clip(image[brain] + noise[brain], np.nextafter(np.float32(BRAIN_THRESHOLD), 1), 1.0)
    return out


def scores(reference: np.ndarray, sets: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per set: GLCM Frechet distance, sharpness ratio and grey-level distances against `reference` (whose GLCM
    features and sharpness are measured once)."""
    from dallebrain.evaluation import metrics as M
    from dallebrain.evaluation.sharpness import sharpness

    glcm, sharp = M.glcm_features(reference), np.nanmean(sharpness(reference))
    return {name: {"glcm": M.standardised_frechet(glcm, M.glcm_features(images)),
                   "sharpness": float(np.nanmean(sharpness(images)) / sharp),
                   **M.histogram_distances(reference, images)} for name, images in sets.items()}


def train_sets(data: Path, per_contrast: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{contrast: (slices to fit on, other slices to score against)}: 2 x per_contrast random train-split slices."""
    import pandas as pd

    from dallebrain.evaluation.features import load_slices

    table = pd.read_parquet(data / "metadata.parquet")
    train = table[table["split"] == "train"]
    out = {}
    for contrast in CONTRASTS:
        rows = train[train["modality"] == contrast]
        if len(rows) < 2 * per_contrast:
            continue
        rows = rows.sample(2 * per_contrast, random_state=seed)
        slices = load_slices(data, rows["image_path"])
        out[contrast] = (slices[:per_contrast], slices[per_contrast:])
    if not out:
        raise SystemExit(f"error: the train split of {data} has fewer than {2 * per_contrast} slices of every "
                         "contrast: lower --per-contrast")
    return out


def row(label: str, s: dict) -> str:
    return (f"| {label} | {s['glcm']:.2f} | {s['sharpness']:.3f} | {s['wasserstein1']:.4f} | "
            f"{s['jensen_shannon']:.4f} |")


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the prepared set the model was trained on")
    parser.add_argument("--model", type=Path, default=ROOT / "src" / "dallebrain" / "weights" / "default")
    parser.add_argument("--report", type=Path, default=None, help="an `evaluate --route ldm` --out folder on --data")
    parser.add_argument("--per-contrast", type=int, default=256, help="train slices per contrast to fit (and score)")
    parser.add_argument("--seed", type=int, default=5151, help="which train slices")
    args = parser.parse_args(argv)
    if not (args.data / "metadata.parquet").is_file():
        raise SystemExit(f"error: {args.data} is not a prepared data set (no metadata.parquet)")
    if not (args.model / "vae" / "config.json").is_file():
        raise SystemExit(f"error: {args.model} is not a model folder (no vae/config.json)")
    if args.per_contrast < 16:
        raise SystemExit(f"error: --per-contrast must be at least 16, got {args.per_contrast}")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_texture_outline import load_report

    report = load_report(args.report, args.data, "ldm") if args.report is not None else None  # refuse early
    from dallebrain.evaluation.reconstruction import reconstruct
    from dallebrain.models.vae import load_vae

    vae = load_vae(args.model / "vae")
    downsampling = 2 ** (len(vae.config.block_out_channels) - 1)
    spectra, out = {}, {"train": {}, "report": {}}
    print("Reconstructions of real train slices, scored against other real train slices of the contrast "
          f"({args.per_contrast} each):")
    print("| contrast, set | GLCM Frechet | sharpness / real | grey W1 | grey JS (bits) |\n|---|---|---|---|---|")
    for contrast, (fit, other) in train_sets(args.data, args.per_contrast, args.seed).items():
        spectra[contrast] = lost_spectrum(fit, reconstruct(vae, fit), downsampling)
        half = len(other) // 2  # reconstruct one half of the other slices, score against the other half
        recon = reconstruct(vae, other[:half])
        sets = {"real": other[:half], "reconstruction": recon, "reconstruction + noise": with_noise(recon,
                                                                                                  spectra[contrast])}
        out["train"][contrast] = scores(other[half:], sets)
        sd = float(with_noise(np.full((1, 128, 128), 0.5, np.float32), spectra[contrast]).std())
        for name, s in out["train"][contrast].items():
            print(row(f"{contrast} {name}" + (f" (noise SD {sd:.4f})" if name.endswith("noise") else ""), s))
    if report is not None:
        real, sets, modality = report
        synthetic = sets["synthetic"]
        noisy = synthetic.copy()
        for contrast, spectrum in spectra.items():
            rows = modality == contrast
            noisy[rows] = with_noise(synthetic[rows], spectrum)
        print(f"\nGenerated slices of {args.report} against its real held-out slices:")
        print("| contrast, set | GLCM Frechet | sharpness / real | grey W1 | grey JS (bits) |\n|---|---|---|---|---|")
        for contrast in (*CONTRASTS, "all"):
            rows = np.ones(len(real), bool) if contrast == "all" else modality == contrast
            if rows.sum() < 2:
                continue
            out["report"][contrast] = scores(real[rows], {"floor": sets["floor"][rows], "generated": synthetic[rows],
                                                          "generated + noise": noisy[rows]})
            for name, s in out["report"][contrast].items():
                print(row(f"{contrast} {name}", s))
        # where the power goes missing: per band, over the real held-out slices' (the VAE's share and the UNet's)
        print(f"\nPower per band of {args.report}'s slices over its real held-out slices' (brain-interior patches):")
        print("| contrast, set | " + " | ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in
                                               zip(BAND_EDGES[:-1], BAND_EDGES[1:], strict=True)) + " |")
        print("|---|" + "---|" * (len(BAND_EDGES) - 1))
        out["bands"] = {}
        for contrast in spectra:
            rows = modality == contrast
            reference = band_power(real[rows])
            out["bands"][contrast] = {name: band_power(sets[key][rows]) / reference for name, key in
                                      (("reconstruction", "reconstruction"), ("generated", "synthetic"))}
            for name, ratio in out["bands"][contrast].items():
                print(f"| {contrast} {name} | " + " | ".join(f"{r:.2f}" for r in ratio) + " |")
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
