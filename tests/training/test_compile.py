"""`compile=true`: torch.compile of the trained UNet, refused where it cannot work, and a compiled run's checkpoints
and export carry the same tensor names as an eager run's (so resuming, EMA and the exported folder are unchanged)."""

import pytest
import torch

from dallebrain.training import ldm
from dallebrain.training.config import TrainConfig, check_compile, load_config
from testing_constants import CONFIGS


def test_compile_is_refused_by_a_stage_that_was_not_tested_with_it():
    with pytest.raises(ValueError, match="^compile=true is supported by the ldm and decoder stages, not vae$"):
        check_compile(TrainConfig(compile=True), "vae", compilable=False, cuda=False)
    check_compile(TrainConfig(compile=False), "vae", compilable=False, cuda=False)  # off: nothing to check


def test_compile_without_a_cpp_compiler_is_one_line(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        check_compile(TrainConfig(compile=True), "ldm", compilable=True, cuda=False)
    check_compile(TrainConfig(compile=True), "ldm", compilable=True, cuda=True)  # a GPU compiles with triton


def test_compile_with_bf16_autocast_is_allowed_now_that_the_blocks_compile_apart():
    """The whole UNet compiled in one graph trained nothing under CPU bf16 autocast (most weights got zero
    gradients), so the pair was refused; each block compiled apart trains (the slow tests below), so it is not."""
    for cuda in (False, True):
        check_compile(TrainConfig(compile=True, mixed_precision="bf16"), "decoder", compilable=True, cuda=cuda)
        check_compile(TrainConfig(compile=True, mixed_precision="auto"), "ldm", compilable=True, cuda=cuda)


def test_compile_regions_compiles_each_block_in_place_and_keeps_the_tensor_names():
    from dallebrain.models.unet import UnetConfig, build_unet
    from dallebrain.training.loop import compile_regions

    unet = build_unet(UnetConfig(sample_size=8, block_out_channels=[8, 16], attention_head_dim=4,
                                 cross_attention_levels=1, norm_num_groups=4))
    names = [k for k, _ in unet.named_parameters()]
    assert compile_regions(unet) is unet
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    assert getattr(unet, "_compiled_call_impl", None) is None  # the blocks, not the whole graph
    assert [k for k, _ in unet.named_parameters()] == names  # no "_orig_mod." anywhere


def test_the_unet_stages_allow_compile_and_the_others_do_not():
    from dallebrain.training import clip, decoder, lora, prior, vae

    allowed = {s.name for s in (ldm.LdmStage, decoder.DecoderStage, clip.ClipStage, vae.VaeStage, prior.PriorStage,
                                lora.LoraStage) if s.compilable}
    assert allowed == {"ldm", "decoder"}


def test_compile_is_refused_before_any_data_is_read(tmp_path):
    """The refusal comes from the settings alone: a missing --data folder is not reached, no --out is made."""
    from dallebrain.training import vae

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="^compile=true is supported by the ldm and decoder stages, not vae$"):
        vae.main(["--data", str(tmp_path / "no-such-data"), "--out", str(out), "--set", "compile=true"])
    assert not out.exists()


@pytest.mark.slow
def test_a_compiled_ldm_run_trains_and_saves_what_an_eager_run_saves(tiny_prepared, tiny_vae, tmp_path):
    """Trains through the compiled blocks in fp32 and in bf16; checkpoints and export hold the eager run's names and
    (within compiled kernels' rounding) values, every tensor moved from where it started: at a tiny learning rate a
    compiled run that trained nothing also matched the eager run, which is how a compiled bf16 decoder run went
    unseen."""
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.checkpoint import latest_checkpoint
    from dallebrain.training.loop import fit

    runs, saved = {}, {}
    for name, lr, compiled, precision in (("start", "1e-12", False, "no"), ("eager", "1e-2", False, "no"),
                                          ("compiled", "1e-2", True, "no"), ("eager-bf16", "1e-2", False, "bf16"),
                                          ("compiled-bf16", "1e-2", True, "bf16")):
        # accelerate keeps one mixed precision per process (tests/training/test_mixed_precision.py resets it too)
        AcceleratorState._reset_state()
        config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                             [f"compile={str(compiled).lower()}", f"learning_rate={lr}", "ema_decay=0",
                              "weight_decay=0", f"mixed_precision={precision}"])
        out = tmp_path / name
        dataset = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows, seed=config.seed)
        stage = ldm.LdmStage(config, dataset, tiny_vae, None, out, progress=False)
        summary = fit(stage, config, out, progress=False)
        assert summary["steps"] == config.max_steps
        # what trained were the compiled blocks (also when an eager run came first in this process)
        assert (getattr(stage.unet.down_blocks[0], "_compiled_call_impl", None) is not None) == compiled
        runs[name] = out
        saved[name] = {k: v.float() for k, v in
                       load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors")).items()}
    AcceleratorState._reset_state()

    def update(run):
        return torch.cat([(saved[run][k] - saved["start"][k]).ravel() for k in saved["start"]])

    def agreement(a, b):  # (cosine of the two runs' updates, largest weight difference)
        cosine = float(torch.nn.functional.cosine_similarity(update(a), update(b), dim=0))
        return cosine, max(float((saved[a][k] - saved[b][k]).abs().max()) for k in saved[a])

    # bf16's own rounding is the yardstick there: eager bf16 against eager fp32 (measured: cosine 0.996, 0.045)
    _, bf16_gap = agreement("eager", "eager-bf16")
    for eager, compiled, agree, gap in (("eager", "compiled", 0.999, 1e-2),
                                        ("eager-bf16", "compiled-bf16", 0.99, 2 * bf16_gap)):
        checkpoint = {name: load_file(str(latest_checkpoint(runs[name] / "checkpoints") / "unet.safetensors"))
                      for name in (eager, compiled)}
        assert checkpoint[compiled].keys() == checkpoint[eager].keys()  # no "_orig_mod." prefixes
        assert saved[compiled].keys() == saved[eager].keys()
        # the same updates (Adam's first steps move every weight about lr, so near-zero gradients may round to the
        # other sign compiled: compare the updates' direction, and the weights within the rounding's reach;
        # measured fp32 cosine 1.000 and 1e-4, bf16 0.994 and 0.041)
        cosine, largest = agreement(eager, compiled)
        assert cosine > agree and largest < gap, (compiled, cosine, largest)
        # every tensor trained: the whole UNet compiled in one graph left most of them where they started in bf16
        moved = [float((saved[compiled][k] - saved["start"][k]).abs().max()) for k in saved["start"]]
        assert min(moved) > 1e-4 and sorted(moved)[len(moved) // 2] > 1e-2, compiled
