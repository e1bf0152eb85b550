import math

import pytest
import torch

from dallebrain.data.augment import AugmentConfig, build_augmentation

SIZE = 128
OUTER, INNER = 0.5, 0.8  # far enough from 0 and 1 that noise is hardly ever clipped


def only(**changes) -> AugmentConfig:
    """Every transform off except those ``changes`` turn on."""
    return AugmentConfig(**{**vars(AugmentConfig.none()), **changes})


@pytest.fixture
def brain() -> torch.Tensor:
    """A (1, H, W) slice: an ellipse 'brain' with a brighter inner ellipse, zero outside."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    yy, xx = yy.float() - SIZE / 2, xx.float() - SIZE / 2
    image = torch.zeros(SIZE, SIZE)
    image[(yy / 50) ** 2 + (xx / 38) ** 2 <= 1] = OUTER
    image[(yy / 20) ** 2 + (xx / 14) ** 2 <= 1] = INNER
    return image[None]


def everything(p: float = 1.0) -> AugmentConfig:
    return AugmentConfig(affine_p=p, elastic_p=p, gamma_p=p, bias_p=p, noise_p=p)


def moments(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """Area, centroid (row, col) and major-axis angle in degrees from the vertical of a 2-D mask."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    rows, cols = rows.double(), cols.double()
    r0, c0 = rows.mean(), cols.mean()
    mrr, mcc, mrc = ((rows - r0) ** 2).mean(), ((cols - c0) ** 2).mean(), ((rows - r0) * (cols - c0)).mean()
    angle = 0.5 * math.degrees(math.atan2(2 * mrc, mrr - mcc))
    return float(rows.numel()), float(r0), float(c0), angle


@pytest.mark.parametrize("batch", [False, True])
def test_shape_dtype_and_range_preserved(brain, batch):
    slices = brain.expand(3, 1, SIZE, SIZE).clone() if batch else brain
    out = build_augmentation(everything(), seed=0)(slices)
    assert out.shape == slices.shape
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()
    if batch:  # each slice of a batch draws its own parameters
        assert not torch.equal(out[0], out[1])


def test_background_stays_zero_under_intensity_transforms(brain):
    config = only(gamma_enabled=True, bias_enabled=True, noise_enabled=True, gamma_p=1, bias_p=1, noise_p=1)
    out = build_augmentation(config)(brain, seed=0)
    assert torch.all(out[brain == 0] == 0)
    assert (out[brain > 0] > 0).float().mean() > 0.99


def test_background_stays_zero_under_all_transforms(brain):
    out = build_augmentation(everything())(brain, seed=1)
    # Affine (<= 4 mm, 5 %) plus elastic (3 mm) moves the edge by well under 10 pixels.
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    far_outside = ((yy - SIZE / 2) / 60) ** 2 + ((xx - SIZE / 2) / 48) ** 2 > 1
    assert torch.all(out[0][far_outside] == 0)
    # The background is masked, not merely dark: exact zeros cover about the input's background area.
    zeros_in, zeros_out = (brain == 0).sum().item(), (out == 0).sum().item()
    assert abs(zeros_out - zeros_in) / zeros_in < 0.15


def test_none_is_identity(brain):
    augment = build_augmentation(AugmentConfig.none(), seed=0)
    assert torch.allclose(augment(brain), brain)
    batch = brain.expand(2, 1, SIZE, SIZE)
    assert torch.allclose(augment(batch), batch)


def test_same_seed_same_output_different_seed_different(brain):
    augment = build_augmentation(everything())
    assert torch.equal(augment(brain, seed=7), augment(brain, seed=7))
    assert not torch.equal(augment(brain, seed=7), augment(brain, seed=8))
    # A build seed makes the whole sequence of calls reproducible, and successive calls differ.
    first, second = build_augmentation(everything(), seed=3), build_augmentation(everything(), seed=3)
    a1, a2 = first(brain), first(brain)
    assert torch.equal(a1, second(brain)) and torch.equal(a2, second(brain))
    assert not torch.equal(a1, a2)


def test_seeded_call_leaves_global_rng_alone(brain):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_augmentation(everything())(brain, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_affine_rotation_keeps_brain_in_place(brain):
    degrees = 10.0
    config = only(
        affine_enabled=True, affine_p=1, rotation_degrees=degrees, scale_range=(1, 1), translation_mm=0
    )
    area_in, r_in, c_in, angle_in = moments(brain[0] > 0)
    angles = []
    for seed in range(4):
        out = build_augmentation(config)(brain, seed=seed)
        area, r, c, angle = moments(out[0] > 0)
        assert math.hypot(r - r_in, c - c_in) < 2
        assert abs(area - area_in) / area_in < 0.10
        assert abs(angle - angle_in) <= degrees + 1
        angles.append(angle)
    assert max(abs(a - angle_in) for a in angles) > 1  # it did rotate


def test_gamma_changes_intensities_not_mask(brain):
    config = only(gamma_enabled=True, gamma_p=1, log_gamma_range=(0.2, 0.2))
    out = build_augmentation(config)(brain, seed=0)
    assert torch.equal(out > 0, brain > 0)
    gamma = math.exp(0.2)
    assert torch.allclose(out[brain == OUTER], torch.tensor(OUTER**gamma), atol=1e-5)
    assert torch.allclose(out[brain == INNER], torch.tensor(INNER**gamma), atol=1e-5)


def test_noise_std_matches_config(brain):
    std = 0.02
    config = only(noise_enabled=True, noise_p=1, noise_std_range=(std, std))
    out = build_augmentation(config)(brain, seed=0)
    inside = brain > 0
    measured = (out - brain)[inside].std().item()
    assert std / 2 < measured < std * 2
    assert torch.equal(out > 0, inside)
