"""Prior and decoder models: shapes, save/load round trips, the embedding statistics, refusals."""

import json

import pytest
import torch

from dallebrain.models.decoder import build_decoder, decoder_inputs, load_decoder, save_decoder
from dallebrain.models.prior import (
    PriorConfig,
    build_prior,
    load_prior,
    normalise_embeddings,
    save_prior,
    set_embedding_statistics,
)
from dallebrain.models.unet import UnetConfig, build_unet

DIM = 32
TINY_UNET = UnetConfig(sample_size=8, latent_channels=4, block_out_channels=[8, 16], attention_head_dim=4,
                       cross_attention_levels=1, cross_attention_dim=16, norm_num_groups=4)


def _prior_inputs(n=3):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(n, 64, dtype=torch.bool)
    mask[:, 20:] = False
    return dict(hidden_states=torch.randn(n, DIM, generator=g), timestep=torch.tensor([1, 500, 999][:n]),
                proj_embedding=torch.randn(n, DIM, generator=g), encoder_hidden_states=torch.randn(n, 64, 384,
                                                                                                  generator=g),
                attention_mask=mask)


def test_prior_maps_text_states_to_an_image_embedding_and_round_trips(tmp_path):
    torch.manual_seed(0)
    prior = build_prior(PriorConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8), DIM)
    set_embedding_statistics(prior, torch.linspace(-1, 1, DIM), torch.linspace(0.5, 2, DIM))
    with torch.no_grad():
        out = prior(**_prior_inputs()).predicted_image_embedding
    assert out.shape == (3, DIM)
    embeds = torch.randn(2, DIM)
    torch.testing.assert_close(prior.post_process_latents(normalise_embeddings(prior, embeds)), embeds)
    assert not prior.clip_mean.requires_grad and not prior.clip_std.requires_grad

    save_prior(prior, tmp_path / "prior")
    assert (tmp_path / "prior" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "prior" / "config.json").read_text())["text_hidden_dim"] == 384
    loaded, schedule = load_prior(tmp_path / "prior")
    assert schedule["prediction_type"] == "sample"
    torch.testing.assert_close(loaded.clip_std, prior.clip_std)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_prior_inputs()).predicted_image_embedding, out)


def test_decoder_reads_image_embeddings_and_round_trips(tmp_path):
    torch.manual_seed(0)
    unet = build_decoder(TINY_UNET, DIM).eval()
    assert unet.config.down_block_types == build_unet(TINY_UNET).config.down_block_types
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    embeds = torch.nn.functional.normalize(torch.randn(2, DIM), dim=-1)
    with torch.no_grad():
        out = unet(latents, t, **decoder_inputs(embeds)).sample
        other = unet(latents, t, **decoder_inputs(torch.zeros_like(embeds))).sample
    assert out.shape == latents.shape and not torch.allclose(out, other)  # the embedding matters

    save_decoder(unet, tmp_path / "decoder")
    loaded, schedule = load_decoder(tmp_path / "decoder")
    assert loaded.config.encoder_hid_dim_type == "image_proj" and loaded.config.encoder_hid_dim == DIM
    assert schedule["prediction_type"] == "epsilon"
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, t, **decoder_inputs(embeds)).sample, out)


def test_a_text_unet_is_not_a_decoder(tmp_path):
    build_unet(TINY_UNET).save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="not an unCLIP decoder"):
        load_decoder(tmp_path / "unet")
    with pytest.raises(ValueError, match="no config.json"):
        load_prior(tmp_path)


def test_what_a_trained_unet_predicts_is_read_from_the_schedule_beside_it(tmp_path):
    import json

    from dallebrain.models.unet import noise_scheduler_config, trained_prediction_type

    pipeline = tmp_path / "pipeline"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "scheduler").mkdir()
    (pipeline / "scheduler" / "scheduler_config.json").write_text(json.dumps(noise_scheduler_config("v_prediction")))
    assert trained_prediction_type(pipeline) == "v_prediction"
    assert trained_prediction_type(pipeline / "unet") == "v_prediction"  # the scheduler/ beside it
    save_decoder(build_decoder(TINY_UNET, DIM), tmp_path / "decoder", "v_prediction")
    assert trained_prediction_type(tmp_path / "decoder") == "v_prediction"
    assert load_decoder(tmp_path / "decoder")[1]["prediction_type"] == "v_prediction"
    (tmp_path / "bare").mkdir()
    assert trained_prediction_type(tmp_path / "bare") is None
    (pipeline / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "sample"}))
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        trained_prediction_type(pipeline)
    (pipeline / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable noise schedule"):
        trained_prediction_type(pipeline)

