"""Which attention kernel a diffusers model trains with on a CPU.

torch's fused `scaled_dot_product_attention` (diffusers' default `AttnProcessor2_0`) is the faster one for
sampling here, but its CPU backward (a flash-attention kernel) is slow for the short sequences and narrow heads
of these UNets: one bf16 training step of the shipped 4.6 M-parameter UNet (batch 16) spent 41 % of its time in
that backward, 16 ms a call. diffusers' classic `AttnProcessor` (baddbmm, softmax, bmm: plain matrix products,
fast in bf16) trains the same step 1.5x faster, the prior's 1.8x (benchmarks/bench_training.py --attention); in
fp32 it is the slower one. Both are diffusers' own processors; this one only picks between them per call, so
nothing here computes attention.
"""

from __future__ import annotations

import torch

# the classic path holds the whole score matrix (batch x heads x queries x keys) and its gradient in memory:
# above this many scores (64 MiB a copy in fp32) the fused kernel, which never builds it, is used even in training.
# The shipped UNet trains at 16 x 8 x 256 x 256 = 8.4 M; a 64x64 self-attention map at batch 16 would be 2.1 G.
MAX_CLASSIC_SCORES = 2 ** 24


def _bf16(hidden_states: torch.Tensor) -> bool:
    return hidden_states.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                                     and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def classic_attention_pays(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> bool:
    """True where the classic kernel is the faster one: gradients recorded, on a CPU, in bf16 (in fp32 the fused
    kernel trains these UNets faster: 0.80x with the classic one) and a small score matrix."""
    if not torch.is_grad_enabled() or hidden_states.device.type != "cpu" or not _bf16(hidden_states):
        return False
    # (batch, tokens, channels), or (batch, channels, height, width) in the VAE's spatial attention
    queries = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[-2] * hidden_states.shape[-1]
    keys = queries if encoder_hidden_states is None else encoder_hidden_states.shape[1]
    return hidden_states.shape[0] * attn.heads * queries * keys <= MAX_CLASSIC_SCORES


class CpuTrainingAttention:
    """diffusers' `AttnProcessor` while training on a CPU in bf16 (where it is faster), its `AttnProcessor2_0`
    otherwise: sampling, fp32, a GPU, or a score matrix too large to hold. Same arguments and results as either."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        self.classic, self.fused = AttnProcessor(), AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        processor = self.classic if classic_attention_pays(attn, hidden_states, encoder_hidden_states) else self.fused
        return processor(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, temb=temb)


def use_cpu_training_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Give the attention layers of a diffusers model (UNet, VAE, prior) that use diffusers' standard processors
    `CpuTrainingAttention`; other processors (an adapter's, a custom one) and models without diffusers attention
    layers are left as they are. Returns the model, for chaining."""
    processors = getattr(model, "attn_processors", None)
    if processors:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        standard = (AttnProcessor, AttnProcessor2_0, CpuTrainingAttention)  # exact types: a subclass is custom
        shared = CpuTrainingAttention()
        model.set_attn_processor({name: shared if type(p) in standard else p for name, p in processors.items()})
    return model
