"""Caches are computed on the GPU when there is one: a stage builds its cache before accelerate places anything,
so without on_cache_device the encoders ran on the CPU of a GPU machine (a lent H200 did not finish the LDM's cache
of 54,448 slices in 200 s). This machine has no GPU: the tests check where each module is sent and that it comes
back, with cache_device() answering a device the CPU can also use ("cpu:0", distinct from "cpu")."""

import pytest
import torch

from dallebrain.training import cache


class _Moves(torch.nn.Linear):
    """A module that records where it is sent instead of going there."""

    def __init__(self):
        super().__init__(2, 2)
        self.moves = []

    def to(self, device):
        self.moves.append(torch.device(device))
        return self


def test_cache_device_is_this_process_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cache.cache_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert cache.cache_device() == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of `accelerate launch` uses the second GPU
    assert cache.cache_device() == torch.device("cuda", 1)


def test_modules_go_to_the_cache_device_and_come_back_also_after_an_error(monkeypatch):
    monkeypatch.setattr(cache, "cache_device", lambda: torch.device("cuda", 0))
    a, b = _Moves(), _Moves()
    with cache.on_cache_device(a, None, b) as device:
        assert device == torch.device("cuda", 0)
        assert a.moves == b.moves == [torch.device("cuda", 0)]
    assert a.moves == b.moves == [torch.device("cuda", 0), torch.device("cpu")]
    with pytest.raises(ValueError, match="failed fill"), cache.on_cache_device(a):
        raise ValueError("failed fill")
    assert a.moves[-1] == torch.device("cpu")


def _record_moves(module, name, log):
    original = module.to

    def to(*args, **kwargs):
        log.append((name, torch.device(args[0])))
        return original(*args, **kwargs)

    module.to = to  # an instance attribute: nn.Module keeps non-module values as plain attributes


def test_every_stage_cache_is_filled_on_the_cache_device(tiny_prepared, tiny_vae, tmp_path, monkeypatch):
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig
    from dallebrain.models.text import load_text_encoder, load_tokenizer
    from dallebrain.models.vae import load_vae
    from dallebrain.training.decoder import build_decoder_cache
    from dallebrain.training.prior import build_prior_cache

    monkeypatch.setattr(cache, "cache_device", lambda: torch.device("cpu", 0))
    dataset = SliceDataset(tiny_prepared, "train", max_rows=6)
    vae, encoder, clip = load_vae(tiny_vae).eval(), load_text_encoder(), BrainCLIP(BrainCLIPConfig()).eval()
    log = []
    for module, name in ((vae, "vae"), (encoder, "text encoder"), (clip, "clip")):
        _record_moves(module, name, log)
    there, back = torch.device("cpu", 0), torch.device("cpu")

    latents = cache.build_latent_cache(dataset, vae, encoder, load_tokenizer(), tmp_path / "ldm", 1, progress=False)
    assert log == [("vae", there), ("text encoder", there), ("vae", back), ("text encoder", back)]
    assert latents.latents.shape[0] == 6 and latents.text_states.shape[0] == 6
    log.clear()
    cache.build_latent_cache(dataset, vae, encoder, load_tokenizer(), tmp_path / "ldm", 1, progress=False)
    assert log == []  # a cache made from the same inputs is reused: nothing moves
    cache.build_latent_cache(dataset, vae, encoder, load_tokenizer(), tmp_path / "lat", 1, progress=False,
                             with_text=False)
    assert log == [("vae", there), ("vae", back)]  # latents only: the text encoder stays where it is
    log.clear()
    arrays = build_decoder_cache(dataset, vae, clip, tmp_path / "decoder", progress=False)
    assert log == [("vae", there), ("clip", there), ("vae", back), ("clip", back)]
    assert arrays["latents"].shape[0] == arrays["image_embeds"].shape[0] == 6
    log.clear()
    arrays = build_prior_cache(dataset, clip, tmp_path / "prior", 1, progress=False)
    assert log == [("clip", there), ("clip", back)] and arrays["text_embeds"].shape[0] == 6


def test_the_ldm_stage_puts_its_ema_and_sampling_modules_on_the_training_device(tiny_prepared, tiny_vae, tmp_path):
    """After the cache the VAE and text encoder are back on the CPU; setup sends them, and the EMA copy that every
    step updates from the trained UNet, to the accelerator's device (on a GPU a CPU-side EMA fails at step 1)."""
    import types

    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training import ldm
    from dallebrain.training.config import load_config
    from testing_constants import CONFIGS

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json", [])
    dataset = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows, seed=config.seed)
    stage = ldm.LdmStage(config, dataset, tiny_vae, None, tmp_path, progress=False)
    log, target = [], torch.device("cpu", 0)
    for module, name in ((stage.ema, "ema"), (stage.vae, "vae"), (stage.text_encoder, "text encoder")):
        _record_moves(module, name, log)
    accelerator = types.SimpleNamespace(device=target, process_index=0, prepare=lambda model: model)
    stage.setup(accelerator)
    assert sorted(log) == sorted([("ema", target), ("vae", target), ("text encoder", target)])
