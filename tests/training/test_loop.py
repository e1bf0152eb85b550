import csv

import pytest
import torch

from dallebrain.training.config import TrainConfig, load_config
from dallebrain.training.loop import Stage, fit


class _Regression(Stage):
    """A tiny conv net fitting a fixed smooth target: enough to exercise optimiser, RNG and checkpoints."""

    name = "toy"
    images_per_step = 4

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Dropout(0.2), torch.nn.Conv2d(4, 1, 3, padding=1))
        self.exported = None

    def setup(self, accelerator):
        self.net = accelerator.prepare(self.net)

    def modules(self):
        return {"net": self.net}

    def trainable_parameters(self):
        return list(self.net.parameters())

    def loss(self, step, micro):
        g = torch.Generator().manual_seed(step * 10 + micro)
        x = torch.randn(4, 1, 8, 8, generator=g)
        noise = torch.randn(4, 1, 8, 8)  # global RNG: must be restored on resume for equal losses
        return {"loss": ((self.net(x + 0.1 * noise) - x.roll(1, -1)) ** 2).mean()}

    def export(self, out_dir):
        self.exported = out_dir


def _losses(path):
    with open(path) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_resume_after_interruption_gives_the_same_next_losses(tmp_path):
    config = TrainConfig(max_steps=6, batch_size=4, learning_rate=1e-2, warmup_steps=2, checkpoint_every=3,
                         log_every=1, sample_every=0, gradient_accumulation=2)
    straight = _Regression()
    fit(straight, config, tmp_path / "a", progress=False)
    assert straight.exported == tmp_path / "a"
    first = _losses(tmp_path / "a" / "losses.csv")

    stopped = _Regression()
    fit(stopped, config, tmp_path / "b", progress=False, stop_at=4)
    assert stopped.exported is None
    # a run killed after step 5 left a log row the resumed run must redo
    with open(tmp_path / "b" / "losses.csv", "a") as f:
        f.write("5,99.0,0.01,1.0\n")
    fit(_Regression(), config, tmp_path / "b", resume=True, progress=False)
    second = _losses(tmp_path / "b" / "losses.csv")
    assert sorted(second) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert second[step] == pytest.approx(first[step], rel=1e-5), step
    assert first[6] < first[1]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    config = TrainConfig(max_steps=1, checkpoint_every=1, log_every=1, sample_every=0, warmup_steps=0)
    fit(_Regression(), config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        fit(_Regression(), config, tmp_path, progress=False)


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(TrainConfig, None, ["batch_size=32", "learning_rate=3e-4", "mixed_precision=bf16"])
    assert (cfg.batch_size, cfg.learning_rate, cfg.mixed_precision) == (32, 3e-4, "bf16")
    bad = tmp_path / "bad.json"
    bad.write_text('{"batch_sise": 3}')
    with pytest.raises(ValueError, match="batch_sise"):
        load_config(TrainConfig, bad)
    with pytest.raises(ValueError, match="bad override"):
        load_config(TrainConfig, None, ["nonsense"])


def test_data_provenance_names_the_folder_and_hashes_its_table(tiny_prepared):
    """A folder given as a Path or a str, or a data set with its `root`: the folder's own name (never a path,
    never "" from Path.root) and its metadata table's sha256."""
    import hashlib
    from types import SimpleNamespace

    from dallebrain.training.common import data_provenance

    expected = {"data": tiny_prepared.name,
                "metadata_sha256": hashlib.sha256((tiny_prepared / "metadata.parquet").read_bytes()).hexdigest()}
    for given in (tiny_prepared, str(tiny_prepared), SimpleNamespace(root=tiny_prepared)):
        assert data_provenance(given) == expected


def test_groups_marked_clip_apart_are_clipped_by_themselves():
    from dallebrain.training.loop import _clip_sets

    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    assert _clip_sets([a, b]) == [[a, b]]
    sets = _clip_sets([{"params": [a]}, {"params": [b], "clip_apart": True}, {"params": [c], "lr": 1.0}])
    assert sets == [[a, c], [b]]
    assert _clip_sets([{"params": [b], "clip_apart": True}]) == [[b]]


def test_a_time_budget_cuts_max_steps_and_still_exports(tmp_path, capsys):
    import json

    from dallebrain.training.loop import BUDGET_PROBE_STEPS

    config = TrainConfig(max_steps=100_000, batch_size=4, learning_rate=1e-2, warmup_steps=2,
                         checkpoint_every=100_000, log_every=1, sample_every=0, time_budget_s=0.5)
    stage = _Regression()
    summary = fit(stage, config, tmp_path / "run", progress=False)
    steps = summary["steps"]
    assert BUDGET_PROBE_STEPS <= steps < 100_000
    assert config.max_steps == steps and stage.exported == tmp_path / "run"  # finished, not stopped
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["max_steps"] == steps
    assert max(_losses(tmp_path / "run" / "losses.csv")) == steps
    assert "time budget 0.5 s" in capsys.readouterr().err
    # the schedule decays to the cut step: the last step's learning rate is the cosine's end, 10 %
    with open(tmp_path / "run" / "losses.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["lr"]) == pytest.approx(1e-3, rel=0.05)


def test_a_time_budget_counts_the_start_up_before_the_loop(tmp_path, capsys):
    """A command that spent its budget loading data and building caches (started 30 s ago, budget 20 s) trains only
    the timed probe steps and still exports: on a lent GPU the LDM's cache once took longer than the whole slot."""
    import time

    from dallebrain.training.loop import BUDGET_PROBE_STEPS

    config = TrainConfig(max_steps=100_000, batch_size=4, learning_rate=1e-2, warmup_steps=2,
                         checkpoint_every=100_000, log_every=1, sample_every=0, time_budget_s=20)
    stage = _Regression()
    summary = fit(stage, config, tmp_path / "run", progress=False, started=time.perf_counter() - 30)
    assert summary["steps"] == BUDGET_PROBE_STEPS and stage.exported == tmp_path / "run"
    assert "time budget 20 s" in capsys.readouterr().err
    # counted from the loop's start (started=None) the same 20 s leave the run far more steps
    config = TrainConfig(max_steps=60, batch_size=4, learning_rate=1e-2, warmup_steps=2,
                         checkpoint_every=100_000, log_every=1, sample_every=0, time_budget_s=20)
    assert fit(_Regression(), config, tmp_path / "run2", progress=False)["steps"] == 60


def test_a_budget_that_fits_leaves_max_steps_alone(tmp_path):
    config = TrainConfig(max_steps=25, batch_size=4, learning_rate=1e-2, warmup_steps=2, checkpoint_every=100,
                         log_every=5, sample_every=0, time_budget_s=3600)
    assert fit(_Regression(), config, tmp_path / "run", progress=False)["steps"] == 25
    assert config.max_steps == 25


def test_a_resume_with_other_settings_or_below_its_step_is_refused(tmp_path):
    import dataclasses

    config = TrainConfig(max_steps=4, batch_size=4, learning_rate=1e-2, warmup_steps=0, checkpoint_every=2,
                         log_every=1, sample_every=0)
    fit(_Regression(), config, tmp_path, progress=False, stop_at=2)
    # the optimizer's rates come from the checkpoint: a new rate would not apply, while train_config.json said so
    for change, named in (({"learning_rate": 0.5, "weight_decay": 0.3}, "learning_rate, weight_decay"),
                          ({"seed": 3}, "seed")):
        with pytest.raises(ValueError, match=f"other settings .*\\({named}\\)"):
            fit(_Regression(), dataclasses.replace(config, **change), tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="at step 2, beyond max_steps 1"):
        fit(_Regression(), dataclasses.replace(config, max_steps=1), tmp_path, resume=True, progress=False)
    # its length, logging and checkpoints may change
    summary = fit(_Regression(), dataclasses.replace(config, max_steps=5, log_every=2, checkpoint_every=5), tmp_path,
                  resume=True, progress=False)
    assert summary["steps"] == 5


def test_a_finished_model_whose_checkpoints_were_deleted_is_not_trained_over(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    config = TrainConfig(max_steps=1, checkpoint_every=1, log_every=1, sample_every=0, warmup_steps=0)
    with pytest.raises(ValueError, match="already holds a trained model"):
        fit(_Regression(), config, tmp_path, progress=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("override, words", [
    ("max_steps=0", "max_steps must be"),  # exported an untrained model
    ("checkpoint_every=0", "checkpoint_every must be"),  # ZeroDivisionError at the first step
    ("gradient_accumulation=0", "gradient_accumulation must be"),
    ("log_every=0", "log_every must be"),
    ("time_budget_s=inf", "time_budget_s must be a finite"),  # OverflowError after 20 steps, the steps lost
    ("time_budget_s=nan", "time_budget_s must be a finite"),  # silently cut the run to ~20 steps
    ("learning_rate=-1", "learning_rate must be a positive"),  # refused only by AdamW, after the caches
    ("learning_rate=nan", "learning_rate must be a positive"),
])
def test_shared_settings_out_of_range_are_refused_when_loaded(override, words):
    with pytest.raises(ValueError, match=words):
        load_config(TrainConfig, None, [override])


def test_config_files_hold_values_of_the_settings_types(tmp_path):
    from dallebrain.training.ldm import LdmTrainConfig

    config = tmp_path / "c.json"
    for text, words in (('{"max_steps": "100"}', "max_steps must be a whole number"),
                        ('{"compile": "false"}', "compile must be a true or false"),  # a string: true
                        ('{"learning_rate": true}', "learning_rate must be a number"),
                        ('{"unet": {"block_out_channels": 32}}', "block_out_channels must be a list")):
        config.write_text(text)
        with pytest.raises(ValueError, match=words):
            load_config(LdmTrainConfig, config)
    config.write_text('{"learning_rate": 1, "unet": {"block_out_channels": [32, 64]}}')
    loaded = load_config(LdmTrainConfig, config)
    assert loaded.learning_rate == 1.0 and isinstance(loaded.learning_rate, float)
    assert tuple(loaded.unet.block_out_channels) == (32, 64)
    with pytest.raises(ValueError, match="bad override 'unet.block_out_channels=5'"):  # was a TypeError
        load_config(LdmTrainConfig, None, ["unet.block_out_channels=5"])
