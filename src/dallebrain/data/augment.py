"""Training augmentation for 2-D brain MRI slices, built on TorchIO.

A slice is a ``(1, H, W)`` float tensor in ``[0, 1]`` with exactly-zero background outside the brain.
TorchIO works on 3-D volumes, so each slice travels as a ``(1, H, W, 1)`` :class:`torchio.ScalarImage`
next to a :class:`torchio.LabelMap` of its brain mask: both receive the same spatial transform (the mask
with nearest-neighbour interpolation), and the intensity-transformed image is re-masked with the warped
mask so the background stays exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torchio as tio

__all__ = ["AugmentConfig", "SliceAugmentation", "build_augmentation"]

# TorchIO's B-spline grid needs >= 4 control points along every axis, the flat one included, and with its
# default of 2 locked borders anything under 5 is an identity warp.
_MIN_CONTROL_POINTS = 5


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the slice augmentation; defaults are small, as suits brain MRI.

    Example:
        >>> config = AugmentConfig(noise_enabled=False, rotation_degrees=10.0)
        >>> identity = AugmentConfig.none()
    """

    # Small affine: head pose and size vary a little between subjects and scanners.
    affine_enabled: bool = True
    affine_p: float = 0.5  # probability that a slice gets the affine
    rotation_degrees: float = 5.0  # in-plane rotation drawn from [-d, d]
    scale_range: tuple[float, float] = (0.95, 1.05)  # in-plane isotropic scaling factor range
    translation_mm: float = 4.0  # in-plane shift drawn from [-t, t] along each axis

    # Elastic warp: smooth anatomical variability that an affine cannot express.
    elastic_enabled: bool = True
    elastic_p: float = 0.3  # probability that a slice gets the elastic warp
    elastic_control_points: int = 7  # B-spline control points per in-plane axis (>= 5)
    elastic_max_displacement_mm: float = 3.0  # largest in-plane displacement of a control point

    # Gamma: contrast differences between sequences and scanners.
    gamma_enabled: bool = True
    gamma_p: float = 0.5  # probability that a slice gets a gamma change
    log_gamma_range: tuple[float, float] = (-0.2, 0.2)  # gamma = exp(log_gamma), log_gamma from this range

    # Bias field: the smooth multiplicative inhomogeneity left by receive coils.
    bias_enabled: bool = True
    bias_p: float = 0.3  # probability that a slice gets a bias field
    bias_coefficient: float = 0.3  # polynomial coefficients drawn from [-c, c]; the field is exp(polynomial)
    bias_order: int = 3  # degree of the polynomial

    # Noise: thermal noise; Gaussian, since the background is re-masked to zero (Rician's floor is moot).
    noise_enabled: bool = True
    noise_p: float = 0.5  # probability that a slice gets noise
    noise_std_range: tuple[float, float] = (0.0, 0.02)  # std drawn from this range, in [0, 1] intensity units

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every transform disabled: the augmentation returns its input unchanged."""
        return cls(**{f.name: False for f in fields(cls) if f.name.endswith("_enabled")})


def _clamp_non_negative(tensor: torch.Tensor) -> torch.Tensor:
    # A module-level function, not a lambda, so the transform pickles into DataLoader workers.
    return tensor.clamp(min=0)


def _build_transforms(config: AugmentConfig) -> list[tio.Transform]:
    """The TorchIO transforms that ``config`` enables, spatial first, in application order."""
    transforms: list[tio.Transform] = []
    if config.affine_enabled:
        d, t = config.rotation_degrees, config.translation_mm
        low, high = config.scale_range
        transforms.append(
            tio.RandomAffine(
                scales=(low, high),
                degrees=(0, 0, 0, 0, -d, d),  # rotate about the flat (third) axis only
                translation=(-t, t, -t, t, 0, 0),
                isotropic=True,  # one in-plane factor; TorchIO keeps the flat axis at 1 for 2-D images
                default_pad_value=0,  # background, whatever the slice's minimum
                p=config.affine_p,
            )
        )
    if config.elastic_enabled:
        n = max(config.elastic_control_points, _MIN_CONTROL_POINTS)
        m = config.elastic_max_displacement_mm
        transforms.append(
            tio.RandomElasticDeformation(
                num_control_points=(n, n, _MIN_CONTROL_POINTS),
                max_displacement=(m, m, 0),
                p=config.elastic_p,
            )
        )
    if config.gamma_enabled:
        # Interpolation can leave tiny negative values; a fractional power of them would be NaN.
        transforms.append(tio.Lambda(_clamp_non_negative, types_to_apply=[tio.INTENSITY]))
        transforms.append(tio.RandomGamma(log_gamma=config.log_gamma_range, p=config.gamma_p))
    if config.bias_enabled:
        transforms.append(
            tio.RandomBiasField(
                coefficients=config.bias_coefficient, order=config.bias_order, p=config.bias_p
            )
        )
    if config.noise_enabled:
        transforms.append(tio.RandomNoise(mean=0, std=config.noise_std_range, p=config.noise_p))
    return transforms


class SliceAugmentation:
    """Randomly augments a brain slice ``(1, H, W)`` or a batch of them ``(B, 1, H, W)``.

    Each slice of a batch draws its own parameters. The output has the input's shape, dtype and device,
    values in ``[0, 1]``, and zero wherever the spatially transformed brain mask is zero.

    Args:
        config: Which transforms to apply, with their probabilities and ranges.
        spacing_mm: In-plane pixel size; translations and displacements in ``config`` are in mm.
        seed: If given, calls draw from a private generator seeded with it, so a sequence of calls is
            reproducible; if ``None``, calls draw from torch's global RNG (which ``DataLoader`` seeds
            per worker).

    Example:
        >>> augment = SliceAugmentation(AugmentConfig(), seed=0)
        >>> batch = torch.rand(8, 1, 128, 128)
        >>> augment(batch).shape
        torch.Size([8, 1, 128, 128])
        >>> torch.equal(augment(batch[0], seed=3), augment(batch[0], seed=3))
        True
    """

    def __init__(self, config: AugmentConfig, spacing_mm: float = 1.5, seed: int | None = None):
        self.config = config
        self.spacing_mm = spacing_mm
        self.transform = tio.Compose(_build_transforms(config))
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __call__(self, slices: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Augment ``slices``; a ``seed`` here overrides the generator and gives the same output each time."""
        if slices.ndim not in (3, 4) or slices.shape[-3] != 1:
            raise ValueError(f"expected a (1, H, W) slice or a (B, 1, H, W) batch, got {tuple(slices.shape)}")
        if not self.transform.transforms:
            return slices.clone()
        if seed is None and self._generator is not None:
            seed = int(torch.randint(0, 2**31, (1,), generator=self._generator).item())
        if seed is None:
            return self._augment(slices)
        # TorchIO draws from torch's global RNG: seed a forked copy so the caller's stream is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._augment(slices)

    def _augment(self, slices: torch.Tensor) -> torch.Tensor:
        if slices.ndim == 3:
            return self._augment_slice(slices)
        return torch.stack([self._augment_slice(s) for s in slices])

    def _augment_slice(self, image: torch.Tensor) -> torch.Tensor:
        volume = image.detach().to("cpu", torch.float32).unsqueeze(-1)  # (1, H, W, 1)
        affine = torch.diag(torch.tensor([self.spacing_mm] * 3 + [1.0], dtype=torch.float64)).numpy()
        subject = tio.Subject(
            image=tio.ScalarImage(tensor=volume, affine=affine),
            brain=tio.LabelMap(tensor=(volume > 0).to(torch.uint8), affine=affine),
        )
        out = self.transform(subject)
        brain = out["brain"].data[..., 0] > 0
        augmented = out["image"].data[..., 0].clamp(0, 1) * brain
        return augmented.to(image.device, image.dtype)


def build_augmentation(
    config: AugmentConfig, spacing_mm: float = 1.5, seed: int | None = None
) -> Callable[..., torch.Tensor]:
    """Build the training augmentation for brain slices described by ``config``.

    Args:
        config: Which transforms to apply, with their probabilities and ranges.
        spacing_mm: In-plane pixel size of the slices, in mm.
        seed: Seed of the augmentation's own generator, for reproducible sequences of calls.

    Returns:
        A :class:`SliceAugmentation`: call it on a ``(1, H, W)`` slice or a ``(B, 1, H, W)`` batch,
        optionally with ``seed=`` for a reproducible draw.

    Example:
        >>> augment = build_augmentation(AugmentConfig(), spacing_mm=1.5, seed=0)
        >>> augment(torch.rand(1, 128, 128)).shape
        torch.Size([1, 128, 128])
    """
    return SliceAugmentation(config, spacing_mm=spacing_mm, seed=seed)
