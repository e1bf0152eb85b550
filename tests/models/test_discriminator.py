import torch

from dallebrain.models.discriminator import (
    DiscriminatorConfig,
    PatchDiscriminator,
    feature_matching_loss,
    features_frozen,
    hinge_discriminator_loss,
)


def test_patch_logits_and_features():
    disc = PatchDiscriminator(DiscriminatorConfig(channels=8, layers=3))
    features = disc(torch.zeros(2, 1, 64, 64))
    assert len(features) == 5
    assert features[-1].shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6: one logit per overlapping patch
    assert [f.shape[1] for f in features[:-1]] == [8, 16, 32, 64]


def test_hinge_loss_values():
    ones = torch.ones(4)
    assert hinge_discriminator_loss(2 * ones, -2 * ones) == 0  # both beyond the margin
    assert hinge_discriminator_loss(0 * ones, 0 * ones) == 1
    assert torch.isclose(hinge_discriminator_loss(ones * 0.5, ones * 0.5), torch.tensor(1.0))


def test_frozen_features_pass_gradients_to_images_only():
    torch.manual_seed(0)
    disc = PatchDiscriminator(DiscriminatorConfig(channels=8, layers=2))
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    frozen = features_frozen(disc, x)
    for a, b in zip(frozen, disc(x.detach()), strict=True):
        assert torch.allclose(a, b)  # the same network
    (-frozen[-1].mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())


def test_feature_matching_is_zero_on_equal_images_and_ignores_logits():
    disc = PatchDiscriminator(DiscriminatorConfig(channels=8, layers=2))
    x = torch.randn(2, 1, 32, 32)
    assert feature_matching_loss(disc(x), disc(x)) == 0
    a, b = disc(x), disc(x)
    b[-1] = b[-1] + 5  # logits differ only
    assert feature_matching_loss(a, b) == 0
    assert feature_matching_loss(disc(x), disc(x + 1)) > 0


def test_discriminator_learns_to_tell_sharp_from_blurred_patches():
    """What the decoder is trained against: a few hinge steps separate fine texture from its blur."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(DiscriminatorConfig(channels=8, layers=2))
    optimizer = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.9))
    blur = torch.ones(1, 1, 5, 5) / 25

    def batch():
        sharp = (torch.rand(8, 1, 32, 32) > 0.5).float() * 2 - 1  # pixel-scale texture
        return sharp, torch.nn.functional.conv2d(sharp, blur, padding=2)

    for _ in range(40):
        sharp, blurred = batch()
        loss = hinge_discriminator_loss(disc(sharp)[-1], disc(blurred)[-1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sharp, blurred = batch()
    with torch.no_grad():
        assert disc(sharp)[-1].mean() > 0 > disc(blurred)[-1].mean()
