"""models/attention.py: while training in bf16 on a CPU the diffusers attention layers use the classic kernel (faster
there), everywhere else torch's fused one; sampling is byte-identical to diffusers' default and training gradients
agree with it."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from dallebrain.models import attention
from dallebrain.models.attention import CpuTrainingAttention, use_cpu_training_attention
from dallebrain.models.unet import UnetConfig, build_unet


def _unet():
    torch.manual_seed(0)
    return build_unet(UnetConfig(block_out_channels=[32, 64], norm_num_groups=8, attention_head_dim=4,
                                 cross_attention_levels=1))


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 32, 32, generator=g), torch.tensor([10, 700]), torch.randn(2, 8, 384, generator=g)


def _count_calls(monkeypatch) -> dict:
    """Calls reaching diffusers' two processors, whichever instance makes them."""
    calls = {"classic": 0, "fused": 0}
    for name, cls in (("classic", AttnProcessor), ("fused", AttnProcessor2_0)):
        original = cls.__call__

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counted)
    return calls


@pytest.mark.parametrize("grad, bf16, small, expected", [
    (False, False, True, "fused"),   # fp32 sampling
    (False, True, True, "fused"),    # bf16 sampling: the fused kernel is the faster one there
    (True, False, True, "fused"),    # fp32 training: the classic kernel is slower (BENCHMARKS)
    (True, True, True, "classic"),   # bf16 training on a CPU: the case this module exists for
    (True, True, False, "fused"),    # a score matrix too large to hold
])
def test_the_classic_kernel_serves_bf16_training_on_a_cpu_only(grad, bf16, small, expected, monkeypatch):
    unet = use_cpu_training_attention(_unet())
    if not small:
        monkeypatch.setattr(attention, "MAX_CLASSIC_SCORES", 1)
    calls = _count_calls(monkeypatch)
    x, t, states = _inputs()
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        unet(x, t, encoder_hidden_states=states)
    layers = len(unet.attn_processors)
    assert layers > 0 and calls[expected] == layers and sum(calls.values()) == layers


@pytest.mark.parametrize("monkeypatched_limit, expected", [(None, "classic"), (16 * 16 - 1, "fused")])
def test_the_vaes_spatial_attention_counts_its_pixels_as_tokens(monkeypatched_limit, expected, monkeypatch):
    """The VAE hands its processor (batch, channels, height, width): 16 x 16 latents are 256 tokens, one head."""
    from dallebrain.models.vae import VaeConfig, build_vae

    torch.manual_seed(0)
    vae = use_cpu_training_attention(build_vae(VaeConfig(block_out_channels=(8, 8, 8), norm_num_groups=4)))
    if monkeypatched_limit is not None:  # one 256 x 256 score matrix is 65,536 scores: just above this limit
        monkeypatch.setattr(attention, "MAX_CLASSIC_SCORES", 256 * monkeypatched_limit)
    calls = _count_calls(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vae.decode(vae.encode(torch.rand(1, 1, 64, 64)).latent_dist.mode())
    assert calls[expected] == 2 and sum(calls.values()) == 2  # the encoder's and the decoder's mid-block


@pytest.mark.parametrize("bf16", [False, True])
def test_sampling_is_byte_identical_to_diffusers_default(bf16):
    ours, stock = use_cpu_training_attention(_unet()).eval(), _unet().eval()
    stock.set_attn_processor(AttnProcessor2_0())
    x, t, states = _inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        a = ours(x, t, encoder_hidden_states=states).sample
        b = stock(x, t, encoder_hidden_states=states).sample
    assert torch.equal(a, b)


def test_a_bf16_training_step_gives_the_fused_kernels_loss_and_gradients():
    results = []
    for processor in ("ours", "fused"):
        unet = _unet().train()
        use_cpu_training_attention(unet) if processor == "ours" else unet.set_attn_processor(AttnProcessor2_0())
        x, t, states = _inputs()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (unet(x, t, encoder_hidden_states=states).sample.float() - x).pow(2).mean()
        loss.backward()
        results.append((float(loss.detach()), torch.cat([p.grad.flatten() for p in unet.parameters()])))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-2)
    # bf16 rounding differs between the kernels; a wrong softmax axis or scale would decorrelate the gradients
    assert torch.nn.functional.cosine_similarity(grad_a, grad_b, dim=0) > 0.99
    assert not torch.equal(grad_a, grad_b)  # the classic kernel did run


def test_other_processors_and_models_without_attention_are_left_alone():
    class Custom(AttnProcessor):
        pass

    unet = _unet()
    names = list(unet.attn_processors)
    unet.set_attn_processor({n: Custom() if i == 0 else AttnProcessor2_0() for i, n in enumerate(names)})
    use_cpu_training_attention(unet)
    kinds = [type(p) for p in unet.attn_processors.values()]
    assert kinds[0] is Custom and set(kinds[1:]) == {CpuTrainingAttention}
    linear = torch.nn.Linear(3, 3)
    assert use_cpu_training_attention(linear) is linear


def test_the_trained_unet_stages_get_it(monkeypatch):
    from dallebrain.training.loop import prepare_trained

    class Accelerator:
        def prepare(self, model):
            return model

    unet = prepare_trained(Accelerator(), _unet(), compile=False)
    assert {type(p) for p in unet.attn_processors.values()} == {CpuTrainingAttention}
