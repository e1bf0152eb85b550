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


def test_compile_with_bf16_autocast_on_a_cpu_is_refused():
    """Measured: the compiled backward under CPU bf16 autocast leaves most weights untouched (a 1500-step decoder
    run learnt nothing), so the pair is refused on a CPU; each alone, or both on a GPU, is allowed."""
    with pytest.raises(ValueError, match="^compile=true with mixed_precision=bf16 trains nothing on a CPU"):
        check_compile(TrainConfig(compile=True, mixed_precision="bf16"), "decoder", compilable=True, cuda=False)
    check_compile(TrainConfig(compile=True, mixed_precision="bf16"), "decoder", compilable=True, cuda=True)
    check_compile(TrainConfig(compile=False, mixed_precision="bf16"), "decoder", compilable=True, cuda=False)
    # "auto" never resolves to bf16 for a compiled CPU run, so it is allowed (and trains in fp32)
    check_compile(TrainConfig(compile=True, mixed_precision="auto"), "decoder", compilable=True, cuda=False)


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
    """Trains through torch.compile's module; checkpoints and export hold the eager run's names and (within compiled
    kernels' rounding) values, every tensor moved from where it started: at a tiny learning rate a compiled run
    that trained nothing also matched the eager run, which is how a compiled bf16 decoder run went unseen."""
    from safetensors.torch import load_file

    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.checkpoint import latest_checkpoint
    from dallebrain.training.loop import fit

    runs, saved = {}, {}
    for name, lr, compiled in (("start", "1e-12", False), ("eager", "1e-2", False), ("compiled", "1e-2", True)):
        config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                             [f"compile={str(compiled).lower()}", f"learning_rate={lr}", "ema_decay=0",
                              "weight_decay=0"])
        out = tmp_path / name
        dataset = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows, seed=config.seed)
        stage = ldm.LdmStage(config, dataset, tiny_vae, None, out, progress=False)
        summary = fit(stage, config, out, progress=False)
        assert summary["steps"] == config.max_steps
        # what trained was torch.compile's module (also when an eager run came first in this process)
        assert hasattr(stage.unet, "_orig_mod") == compiled
        runs[name] = out
        saved[name] = {k: v.float() for k, v in
                       load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors")).items()}
    checkpoint = {name: load_file(str(latest_checkpoint(runs[name] / "checkpoints") / "unet.safetensors"))
                  for name in ("eager", "compiled")}
    assert checkpoint["compiled"].keys() == checkpoint["eager"].keys()  # no "_orig_mod." prefixes
    assert saved["compiled"].keys() == saved["eager"].keys()
    # the same updates (Adam's first steps move every weight about lr, so near-zero gradients may round to the other
    # sign compiled: compare the updates' direction, and the weights within 1e-2)
    updates = {run: torch.cat([(saved[run][k] - saved["start"][k]).ravel() for k in saved["start"]])
               for run in ("eager", "compiled")}
    assert float(torch.nn.functional.cosine_similarity(updates["eager"], updates["compiled"], dim=0)) > 0.999
    assert all(torch.allclose(saved["compiled"][k], saved["eager"][k], atol=1e-2) for k in saved["eager"])
    moved = [float((saved["compiled"][k] - saved["start"][k]).abs().max()) for k in saved["start"]]
    assert min(moved) > 1e-4 and sorted(moved)[len(moved) // 2] > 1e-2  # every tensor trained
