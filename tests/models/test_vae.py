import pytest
import torch

from dallebrain.models.vae import VaeConfig, build_vae, decode_latents, encode_images, load_vae

TINY = VaeConfig(latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
                 mid_block_attention=False, sample_size=64)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae(TINY).eval()


def _brainish(n: int, size: int) -> torch.Tensor:
    """Discs of texture on a zero background, in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = (yy ** 2 + xx ** 2 < 0.7).float()
    return (torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1)) * disc).clamp(0, 1)


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_range(vae, size):
    images = _brainish(2, size)
    with torch.no_grad():
        latents = encode_images(vae, images)
        decoded = decode_latents(vae, latents)
    assert TINY.downsampling_factor == 4
    assert latents.shape == (2, 4, size // 4, size // 4)
    assert decoded.shape == images.shape
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_mode_is_deterministic_and_sampling_is_not(vae):
    images = _brainish(1, 64)
    with torch.no_grad():
        a, b = encode_images(vae, images), encode_images(vae, images)
        c = encode_images(vae, images, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_scaling_factor_scales_latents(vae, tmp_path):
    images = _brainish(1, 64)
    vae.save_pretrained(tmp_path, safe_serialization=True)
    scaled = load_vae(tmp_path)
    scaled.register_to_config(scaling_factor=2.5)
    with torch.no_grad():
        base, big = encode_images(vae, images), encode_images(scaled, images)
        torch.testing.assert_close(big, base * 2.5)
        torch.testing.assert_close(decode_latents(scaled, big), decode_latents(vae, base))


def test_save_load_round_trip(vae, tmp_path):
    vae.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_vae(tmp_path).eval()
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(decode_latents(loaded, latents), decode_latents(vae, latents))
    assert loaded.config.in_channels == loaded.config.out_channels == 1


def test_load_from_pipeline_folder(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    assert load_vae(tmp_path).config.latent_channels == 4


def test_pickle_weights_refused(vae, tmp_path):
    vae.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ValueError, match="pickle"):
        load_vae(tmp_path)


def test_missing_or_incomplete_folder(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_vae(tmp_path / "nothing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="incomplete"):
        load_vae(tmp_path)


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="norm_num_groups"):
        build_vae(VaeConfig(block_out_channels=(6, 8), norm_num_groups=4))
