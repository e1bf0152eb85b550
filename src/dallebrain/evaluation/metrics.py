"""Distances between a set of real and a set of synthetic slices; every function is plain numpy / torch and
knows nothing of models, so each can be checked on known cases (identical sets, shifted, blurred, noised).

Conventions: images are (N, H, W) float arrays in [0, 1]; features are (N, D) arrays.
"""

from __future__ import annotations

import math

import numpy as np

# Pixels above this are "brain", in real and synthetic slices alike: real slices are exactly 0 outside the
# brain mask (prepare zeroes them) and keep < 2 % of their in-brain pixels (dark FLAIR/T1 CSF) below 0.05;
# a synthetic slice's background is only near 0, so the one rule for both is the fair one.
BRAIN_THRESHOLD = 0.05


# --- feature-space distances ---------------------------------------------------------------------------------


def _as_features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(x, y) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula, Heusel et al. 2017):
    |mu_x - mu_y|^2 + tr(Cx + Cy - 2 (Cx^1/2 Cy Cx^1/2)^1/2). The symmetric square root via eigh stays real and
    stable when N < D makes the covariances singular. Biased upwards for small N: compare at equal N only."""
    x, y = _as_features(x), _as_features(y)
    mu = x.mean(0) - y.mean(0)
    cx = np.atleast_2d(np.cov(x, rowvar=False))
    cy = np.atleast_2d(np.cov(y, rowvar=False))
    root = _sqrtm_psd(cx)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cy @ root), 0, None)).sum()
    return float(max(0.0, mu @ mu + np.trace(cx) + np.trace(cy) - 2 * cross))


def _polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** degree


def mmd2_unbiased(x, y, degree: int = 3) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / D + 1)^3 (the KID kernel)."""
    x, y = _as_features(x), _as_features(y)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    kxx, kyy, kxy = _polynomial_kernel(x, x, degree), _polynomial_kernel(y, y, degree), _polynomial_kernel(x, y, degree)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(x, y, subset_size: int = 1000, subsets: int = 50, seed: int = 0) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, averaged over random subsets when the
    sets are larger than subset_size (else on the full sets). About 0 (and may be < 0) for one distribution."""
    x, y = _as_features(x), _as_features(y)
    size = min(subset_size, len(x), len(y))
    if size >= len(x) and size >= len(y):
        return mmd2_unbiased(x, y)
    rng = np.random.default_rng(seed)
    return float(np.mean([mmd2_unbiased(x[rng.choice(len(x), size, replace=False)],
                                        y[rng.choice(len(y), size, replace=False)]) for _ in range(subsets)]))


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = _pairwise_distances(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def prdc(real, fake, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-nearest-neighbour balls.

    precision: share of fake samples inside some real ball; recall: share of real samples inside some fake
    ball; density: mean number of real balls holding a fake sample, over k (about 1 for matched sets, can
    exceed 1); coverage: share of real samples whose ball holds at least one fake sample. k is lowered to
    N - 1 for small sets."""
    real, fake = _as_features(real), _as_features(fake)
    k = max(1, min(k, len(real) - 1, len(fake) - 1))
    real_radius = _kth_neighbour_radius(real, k)
    fake_radius = _kth_neighbour_radius(fake, k)
    d = _pairwise_distances(real, fake)  # (real, fake)
    inside = d <= real_radius[:, None]
    return {"precision": float(inside.any(axis=0).mean()),
            "recall": float((d <= fake_radius[None, :]).any(axis=1).mean()),
            "density": float(inside.sum(axis=0).mean() / k),
            "coverage": float((d.min(axis=1) <= real_radius).mean()),
            "k": int(k)}


def one_nn_accuracy(real, fake) -> float:
    """Leave-one-out 1-nearest-neighbour two-sample test accuracy (Lopez-Paz & Oquab 2017): 0.5 when the sets
    cannot be told apart, 1.0 when they are fully separated (near 0 means fakes sit on top of reals)."""
    real, fake = _as_features(real), _as_features(fake)
    both = np.concatenate([real, fake])
    labels = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    d = _pairwise_distances(both, both)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def normalise_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


# --- grey levels -----------------------------------------------------------------------------------------------


def brain_values(images, threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """All pixel values above `threshold` (the brain) of a set of slices, flattened."""
    images = np.asarray(images, dtype=np.float32)
    return images[images > threshold]


def brain_fraction(images, threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """Share of each slice's pixels that are brain (> threshold): a per-slice brain-volume proxy, since the
    prepared slices exclude the ventricles and outer CSF from the brain mask."""
    images = np.asarray(images, dtype=np.float32)
    return (images > threshold).reshape(len(images), -1).mean(axis=1)


def intensity_histogram(images, bins: int = 64, threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """Normalised histogram (sums to 1) of brain intensities on `bins` equal bins over [threshold, 1]."""
    values = brain_values(images, threshold)
    counts, _ = np.histogram(values, bins=bins, range=(threshold, 1.0))
    total = counts.sum()
    return counts / total if total else np.full(bins, 1.0 / bins)


def top_share(images, top: float = 0.99, threshold: float = BRAIN_THRESHOLD) -> float:
    """Share of brain pixels at the top of the [0, 1] range (>= `top`): the clipped, flat-white part of a slice.
    The decoder's output is clamped to [0, 1], so a generator that overshoots shows here, and only blurrily in
    the histogram distances (measured: 16-22 % of synthetic PD-weighted brain at the clip, under 2 % of real)."""
    values = brain_values(images, threshold)
    return float((values >= top).mean()) if values.size else 0.0


def histogram_distances(real, fake, bins: int = 64, threshold: float = BRAIN_THRESHOLD) -> dict[str, float]:
    """Wasserstein-1 (in intensity units, [0, 1] scale) and Jensen-Shannon divergence (bits, 0..1) between the
    brain-intensity histograms of two sets of slices."""
    p = intensity_histogram(real, bins, threshold)
    q = intensity_histogram(fake, bins, threshold)
    width = (1.0 - threshold) / bins
    w1 = float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() * width)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return {"wasserstein1": w1, "jensen_shannon": float(max(0.0, (kl_p + kl_q) / 2))}


# --- texture (GLCM) --------------------------------------------------------------------------------------------

GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
GLCM_DISTANCES = (1, 2, 4)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def glcm_feature_names(distances=GLCM_DISTANCES) -> list[str]:
    return [f"{prop}_d{d}" for prop in GLCM_PROPERTIES for d in distances]


def glcm_features(images, levels: int = 32, distances=GLCM_DISTANCES, angles=GLCM_ANGLES,
                  threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """(N, len(properties) * len(distances)) GLCM features per slice, averaged over the angles (rotation
    invariant, as radiomics does). Brain pixels are quantised to grey levels 1..levels-1 on a fixed [0, 1]
    scale (intensities are already normalised within the brain) and background to 0; pairs that touch the
    background are dropped, so the texture is that of the brain and not of its outline."""
    from skimage.feature import graycomatrix, graycoprops

    images = np.asarray(images, dtype=np.float32)
    out = np.zeros((len(images), len(GLCM_PROPERTIES) * len(distances)), dtype=np.float64)
    for i, image in enumerate(images):
        q = np.where(image > threshold, 1 + np.minimum(np.floor(image * (levels - 1)), levels - 2), 0).astype(np.uint8)
        glcm = graycomatrix(q, distances=list(distances), angles=list(angles), levels=levels, symmetric=True)
        glcm = glcm.astype(np.float64)
        glcm[0, :] = 0
        glcm[:, 0] = 0
        if glcm.sum() == 0:  # no brain: leave the features at 0 rather than dividing by zero
            continue
        glcm /= np.clip(glcm.sum(axis=(0, 1), keepdims=True), 1e-12, None)
        out[i] = np.concatenate([graycoprops(glcm, prop).mean(axis=1) for prop in GLCM_PROPERTIES])
    return out


def ks_statistics(real, fake, names: list[str]) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov statistic per feature column (0 = same distribution, 1 = disjoint)."""
    from scipy.stats import ks_2samp

    real, fake = _as_features(real), _as_features(fake)
    return {name: float(ks_2samp(real[:, j], fake[:, j]).statistic) for j, name in enumerate(names)}


def standardised_frechet(real, fake, reference=None) -> float:
    """Frechet distance after z-scoring every feature with the mean and SD of `reference` (default: real), so
    features of different scales weigh alike: a radiomics Frechet distance (cf. FRD, Osuala et al. 2024)."""
    real, fake = _as_features(real), _as_features(fake)
    reference = real if reference is None else _as_features(reference)
    mu, sd = reference.mean(0), reference.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return frechet_distance((real - mu) / sd, (fake - mu) / sd)


# --- diversity (MS-SSIM) ----------------------------------------------------------------------------------------

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def ms_ssim(a, b, window: int = 7, sigma: float = 1.5, data_range: float = 1.0):
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) of image pairs a[i], b[i] (N, H, W) -> (N,) tensor.

    Written here because torchmetrics and pytorch-msssim are not installed and skimage has single-scale SSIM
    only. The standard 11-px window and 5 scales need 176 px; our slices are 64-128 px, so a 7-px Gaussian
    window is used and the number of scales is what the size allows (at least `window` px at the coarsest),
    with the standard weights of the scales kept, renormalised. Negative contrast-structure terms are clipped
    to 0 so their fractional powers stay real."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(a, dtype=np.float32))[:, None]
    y = torch.as_tensor(np.asarray(b, dtype=np.float32))[:, None]
    if x.shape != y.shape:
        raise ValueError(f"ms_ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    side = min(x.shape[-2:])
    if side < window:
        raise ValueError(f"images of {side} px are smaller than the {window}-px window")
    scales = max(1, min(len(_MS_SSIM_WEIGHTS), int(math.floor(math.log2(side / window))) + 1))
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    coords = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = (g / g.sum())
    kernel = (g[:, None] * g[None, :])[None, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    terms = []
    for s in range(scales):
        mx, my = F.conv2d(x, kernel), F.conv2d(y, kernel)
        vx = F.conv2d(x * x, kernel) - mx ** 2
        vy = F.conv2d(y * y, kernel) - my ** 2
        cov = F.conv2d(x * y, kernel) - mx * my
        cs = ((2 * cov + c2) / (vx + vy + c2)).mean(dim=(1, 2, 3))
        if s == scales - 1:
            luminance = ((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)).mean(dim=(1, 2, 3))
            terms.append((luminance * cs).clamp(min=0))
        else:
            terms.append(cs.clamp(min=0))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(terms, dim=1).double()
    return torch.prod(stacked ** weights[None, :], dim=1).float()


def mean_pairwise_ms_ssim(images) -> float | None:
    """Mean MS-SSIM over all pairs of a set of slices (high = alike; None for fewer than 2)."""
    images = np.asarray(images, dtype=np.float32)
    if len(images) < 2:
        return None
    i, j = np.triu_indices(len(images), k=1)
    return float(ms_ssim(images[i], images[j]).mean())


# --- memorisation ------------------------------------------------------------------------------------------------

# A synthetic slice counts as a near-copy when its nearest training slice is this many times closer than the
# mean of the next five (a relative distance, as in Carlini et al. 2023): registered slices of different
# subjects at one level are all alike in raw pixels, so an absolute threshold cannot tell a copy from a
# well-made new brain, while a copy stands out from its other neighbours. Measured on the simulated cohort:
# real held-out slices 0.15-0.9 (median 0.4), training slices with Gaussian noise of SD 0.03 at most 0.08.
NEAR_COPY_RELATIVE_DISTANCE = 0.1
BANDPASS_SIGMAS = (0.7, 3.0)  # px at 64x64: drops pixel noise and the shared brain outline, keeps anatomy detail


def bandpass(images, sigmas=BANDPASS_SIGMAS) -> np.ndarray:
    """Difference of Gaussians of each slice: the anatomical detail in which subjects differ."""
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, dtype=np.float32)
    fine, coarse = sigmas
    return np.stack([gaussian_filter(im, fine) - gaussian_filter(im, coarse) for im in images])


def correlation_vectors(images) -> np.ndarray:
    """Rows that turn a dot product into Pearson correlation: centred, unit-norm, flattened slices."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def nearest_neighbours(queries, reference, k: int = 6, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(similarities (Q, k) descending, indices (Q, k)) of the k most similar reference rows per query row,
    by dot product (correlation for correlation_vectors, cosine for normalise_rows). The reference is read
    in chunks so a large training set fits in memory."""
    queries = np.asarray(queries, dtype=np.float32)
    k = min(k, len(reference))
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(reference), chunk):
        block = np.asarray(reference[start:start + chunk], dtype=np.float32)
        s = queries @ block.T
        idx = np.broadcast_to(np.arange(start, start + len(block)), s.shape)
        s, idx = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, idx], axis=1)
        top = np.argsort(-s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, axis=1), np.take_along_axis(idx, top, axis=1)
    return best_s, best_i


def relative_distance(similarities: np.ndarray) -> np.ndarray:
    """Distance (1 - similarity) to the nearest reference row over the mean distance to the next ones."""
    d = np.clip(1.0 - np.asarray(similarities, dtype=np.float64), 0, None)
    if d.shape[1] < 2:
        return np.ones(len(d))
    return d[:, 0] / np.clip(d[:, 1:].mean(axis=1), 1e-12, None)


def memorisation(fake_similarities: np.ndarray, real_similarities: np.ndarray,
                 threshold: float | None = NEAR_COPY_RELATIVE_DISTANCE) -> dict:
    """Near-copy statistics of synthetic slices beside real held-out slices, from their (N, k) top-k
    similarities to the training set: nearest similarity, relative distance, the share of synthetic slices
    closer to training than the median real held-out slice (about 0.5 when the generator is no closer to its
    training subjects than new subjects are) and, unless threshold is None (embeddings, where the rule was not
    calibrated), near-copies (relative distance below `threshold`) and the memorisation rate (near-copies / N)."""
    fake_nn, real_nn = fake_similarities[:, 0], real_similarities[:, 0]
    fake_rel, real_rel = relative_distance(fake_similarities), relative_distance(real_similarities)
    out = {
        "nearest_similarity": {"median": float(np.median(fake_nn)), "max": float(fake_nn.max())},
        "nearest_similarity_real_heldout": {"median": float(np.median(real_nn)), "max": float(real_nn.max())},
        "relative_distance": {"median": float(np.median(fake_rel)), "min": float(fake_rel.min())},
        "relative_distance_real_heldout": {"median": float(np.median(real_rel)), "min": float(real_rel.min())},
        "closer_than_heldout_median": float((fake_nn > np.median(real_nn)).mean()),
    }
    if threshold is not None:
        copies = fake_rel < threshold
        out.update({"near_copies": int(copies.sum()), "near_copy_indices": np.flatnonzero(copies).tolist(),
                    "near_copies_real_heldout": int((real_rel < threshold).sum()),
                    "memorisation_rate": float(copies.mean()), "threshold_relative_distance": threshold})
    return out
