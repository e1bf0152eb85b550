"""Mixed precision of the training stages (TrainConfig.mixed_precision through accelerate): a bf16 step really
computes in bf16, keeps fp32 weights, and its loss is close to the fp32 step's; values accelerate would not
honour here are refused in one line before anything is built."""

import subprocess
import sys

import pytest
import torch

from dallebrain.training import ldm
from dallebrain.training.config import load_config
from dallebrain.training.loop import fit, unwrap
from testing_constants import CONFIGS


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps its mixed precision in a process-wide state that refuses a second value; tests in one
    process train in both, so each run here starts from a reset state (the distributed part is kept)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def _one_step(mixed_precision: str, data, vae, cache_dir, out) -> tuple[float, set, ldm.LdmStage]:
    """(loss of one optimiser step, dtypes the UNet's last layer computed in, the stage) from the same seed."""
    from dallebrain.data.dataset import SliceDataset

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                         ["max_steps=1", "log_every=1", "checkpoint_every=1", f"mixed_precision={mixed_precision}"])
    dataset = SliceDataset(data, "train", max_rows=config.max_rows, seed=config.seed)
    stage = ldm.LdmStage(config, dataset, vae, None, cache_dir, progress=False)  # the latent cache is shared
    dtypes = set()
    stage.unet.conv_out.register_forward_hook(lambda module, args, output: dtypes.add(output.dtype))
    summary = fit(stage, config, out, progress=False)
    return summary["last_log"]["loss"], dtypes, stage


def test_a_bf16_training_step_computes_in_bf16_with_fp32_weights_and_the_fp32_loss(
        tiny_prepared, tiny_vae, tmp_path, fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    fp32_loss, fp32_dtypes, _ = _one_step("no", tiny_prepared, tiny_vae, tmp_path / "stage", tmp_path / "fp32")
    AcceleratorState._reset_state()
    bf16_loss, bf16_dtypes, stage = _one_step("bf16", tiny_prepared, tiny_vae, tmp_path / "stage", tmp_path / "bf16")
    assert fp32_dtypes == {torch.float32} and bf16_dtypes == {torch.bfloat16}
    # the master weights (and so the checkpoint, the EMA and the export) stay fp32
    assert {p.dtype for p in stage.unet.parameters()} == {torch.float32}
    assert {p.dtype for p in stage.ema.parameters()} == {torch.float32}
    # Same seed, batch, noise and timesteps: only rounding differs. bf16 keeps 8 mantissa bits (relative step
    # 2^-8 = 0.4 %), convolutions and attention accumulate in fp32 and the loss is reduced in fp32, so the
    # per-sample errors of the prediction partly cancel in the mean: a few tenths of a percent is expected,
    # 2 % is the bound (a step computed in fp16-like precision or with a wrong batch would be far off).
    assert bf16_loss == pytest.approx(fp32_loss, rel=0.02)
    assert bf16_loss != fp32_loss  # it was computed differently, not the fp32 step again


@pytest.mark.parametrize("value, message", [("fp8", "unknown mixed_precision 'fp8'"),
                                            ("fp16", "mixed_precision fp16 needs a CUDA GPU")])
def test_a_mixed_precision_accelerate_cannot_honour_is_refused(value, message, tmp_path):
    if value == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is honoured on a CUDA GPU")
    with pytest.raises(ValueError, match=message):
        load_config(ldm.LdmTrainConfig, None, [f"mixed_precision={value}"])
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "train", "ldm", "--data", str(tmp_path),
                             "--out", str(tmp_path / "out"), "--vae", str(tmp_path), "--set",
                             f"mixed_precision={value}"], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("native, cuda, expected", [
    (True, False, "bf16"),   # a CPU with AVX-512 BF16 or AMX (compiled or not: the blocks compile apart)
    (False, False, "no"),    # emulated bf16 is slower than fp32
    (True, True, "bf16"),    # a GPU with bf16
    (False, True, "no"),     # a GPU without bf16
])
def test_auto_mixed_precision_is_bf16_only_where_it_is_native(native, cuda, expected, monkeypatch):
    from dallebrain.training.config import resolve_mixed_precision

    asked = []
    monkeypatch.setattr("dallebrain.pipelines.precision.native_bf16", lambda device: asked.append(device) or native)
    assert resolve_mixed_precision("auto", cuda) == expected
    assert asked == ["cuda" if cuda else "cpu"]
    assert [resolve_mixed_precision(v, cuda) for v in ("no", "bf16")] == ["no", "bf16"]  # explicit: as given
    with pytest.raises(ValueError, match="unknown mixed_precision 'bf17'"):
        resolve_mixed_precision("bf17", cuda)


def test_the_cpu_configs_train_their_diffusion_stages_in_auto_precision_and_the_vae_in_fp32():
    """The LDM, unCLIP decoder, prior and LoRA adapters train 1.5-1.9x faster in bf16 here (BENCHMARKS
    "Attention kernels for training"); the VAE decoder came out blurrier in bf16 (BENCHMARKS "The VAE decoder on
    the v2 cohort"), so its config does not ask."""
    import json

    precision = {name: json.loads((CONFIGS / f"{name}.json").read_text()).get("mixed_precision", "no")
                 for name in ("ldm.cpu", "decoder.cpu", "prior.cpu", "lora.base", "vae.cpu", "clip.cpu")}
    assert precision == {"ldm.cpu": "auto", "decoder.cpu": "auto", "prior.cpu": "auto", "lora.base": "auto",
                         "vae.cpu": "no", "clip.cpu": "no"}


@pytest.mark.parametrize("native", [True, False])
def test_an_auto_run_computes_in_what_it_resolved_to_and_records_it(native, tiny_prepared, tiny_vae, tmp_path,
                                                                     monkeypatch, fresh_accelerate_state):
    import json

    monkeypatch.setattr("dallebrain.pipelines.precision.native_bf16", lambda device: native)
    _, dtypes, _ = _one_step("auto", tiny_prepared, tiny_vae, tmp_path / "stage", tmp_path / "auto")
    resolved = "bf16" if native else "no"
    assert dtypes == ({torch.bfloat16} if native else {torch.float32})
    record = json.loads((tmp_path / "auto" / "train_config.json").read_text())
    assert (record["mixed_precision"], record["mixed_precision_resolved"]) == ("auto", resolved)


def test_a_bf16_run_moves_every_tensor_through_the_classic_attention_kernel(
        tiny_prepared, tiny_vae, tmp_path, monkeypatch, fresh_accelerate_state):
    """A falling loss is not proof of training: compiled bf16 (the whole UNet in one graph) once logged one while most
    weights never moved. Here every UNet tensor must leave its initial value within 4 steps (no weight decay, so
    nothing but the gradients moves them), with the attention computed by the classic kernel that bf16 training on
    a CPU uses."""
    from diffusers.models.attention_processor import AttnProcessor

    from dallebrain.data.dataset import SliceDataset

    classic_calls = []
    original = AttnProcessor.__call__
    monkeypatch.setattr(AttnProcessor, "__call__",
                        lambda self, *a, **k: classic_calls.append(1) or original(self, *a, **k))
    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                         ["max_steps=4", "log_every=1", "checkpoint_every=4", "mixed_precision=bf16",
                          "learning_rate=1e-2", "warmup_steps=0", "weight_decay=0", "caption_dropout=0"])
    dataset = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows, seed=config.seed)
    stage = ldm.LdmStage(config, dataset, tiny_vae, None, tmp_path / "stage", progress=False)
    start = {k: v.detach().clone() for k, v in stage.unet.named_parameters()}
    fit(stage, config, tmp_path / "run", progress=False)
    trained = dict(unwrap(stage.accelerator, stage.unet).named_parameters())
    unmoved = [k for k, v in start.items() if torch.equal(v, trained[k].detach())]
    assert unmoved == [] and len(start) > 50
    assert classic_calls  # the bf16 steps went through the classic kernel
