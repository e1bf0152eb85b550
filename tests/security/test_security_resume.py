"""`--resume` never destroys progress: it continues from the newest intact checkpoint (saying which and what it
skipped), refuses clearly when there is none, keeps the log's earlier rows, and rotation never deletes the only
intact checkpoints. Each case damages a tiny run the way a kill, a full disk or a cut-short copy would."""

import csv

import pytest
import torch

from cli_inprocess import run_cli
from dallebrain.training.checkpoint import checkpoint_damage
from dallebrain.training.config import TrainConfig
from dallebrain.training.loop import Stage, fit

# Checkpoints at steps 2, 4, 6, 8; two kept. A run stopped at step 6 leaves step-0000004 and step-0000006.
CONFIG = TrainConfig(max_steps=8, batch_size=4, learning_rate=1e-2, warmup_steps=2, checkpoint_every=2,
                     keep_checkpoints=2, log_every=1, sample_every=0)


class _Regression(Stage):
    """A tiny conv net whose losses depend on the weights, the optimiser state and the global RNG (dropout,
    noise), so only an exact resume reproduces a straight run's losses."""

    name = "toy"
    images_per_step = 4

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Dropout(0.2), torch.nn.Conv2d(4, 1, 3, padding=1))

    def setup(self, accelerator):
        self.net = accelerator.prepare(self.net)

    def modules(self):
        return {"net": self.net}

    def trainable_parameters(self):
        return list(self.net.parameters())

    def loss(self, step, micro):
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(step))
        noise = torch.randn(4, 1, 8, 8)
        return {"loss": ((self.net(x + 0.1 * noise) - x.roll(1, -1)) ** 2).mean()}

    def export(self, out_dir):
        pass


def _losses(out):
    with open(out / "losses.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def _steps(out):
    with open(out / "losses.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The losses of an uninterrupted run: what every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    fit(_Regression(), CONFIG, out, progress=False)
    return _losses(out)


@pytest.fixture
def stopped(tmp_path):
    """A run preempted after step 6: checkpoints step-0000004 and step-0000006, log rows 1..6."""
    out = tmp_path / "run"
    fit(_Regression(), CONFIG, out, progress=False, stop_at=6)
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000004", "step-0000006"]
    return out


def _resume(out, **kwargs):
    return fit(_Regression(), CONFIG, out, resume=True, progress=False, **kwargs)


def _assert_matches(out, straight):
    resumed = _losses(out)
    assert sorted(resumed) == list(range(1, 9))
    for step in resumed:
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), step


def test_missing_latest_pointer_resumes_from_the_newest_checkpoint(stopped, straight, capsys):
    (stopped / "checkpoints" / "latest").unlink()
    summary = _resume(stopped)
    assert summary["resumed_from"] == 6  # not step 0, which would retrain over the run
    assert "latest is missing" in capsys.readouterr().err
    _assert_matches(stopped, straight)


def test_latest_naming_a_missing_step_resumes_from_the_newest_checkpoint(stopped, straight, capsys):
    (stopped / "checkpoints" / "latest").write_text("step-0000009\n")
    summary = _resume(stopped)
    assert summary["resumed_from"] == 6
    err = capsys.readouterr().err
    assert "step-0000009" in err and "step-0000006" in err
    assert (stopped / "checkpoints" / "latest").read_text().strip() == "step-0000008"
    _assert_matches(stopped, straight)


def test_truncated_newest_weights_fall_back_to_the_older_checkpoint(stopped, straight, capsys):
    _truncate(stopped / "checkpoints" / "step-0000006" / "net.safetensors")
    summary = _resume(stopped)
    assert summary["resumed_from"] == 4
    err = capsys.readouterr().err
    assert "resuming toy from" in err and "step-0000004" in err
    assert "skipped step-0000006: net.safetensors is damaged" in err
    _assert_matches(stopped, straight)  # steps 5 and 6 are redone exactly


def test_truncated_trainer_json_falls_back_or_is_named(stopped, straight):
    _truncate(stopped / "checkpoints" / "step-0000006" / "trainer.json")
    summary = _resume(stopped, stop_at=6)
    assert summary["resumed_from"] == 4
    assert any("step-0000006: trainer.json is not valid JSON" in note for note in summary["resume_notes"])
    # now the only checkpoints left are damaged: a clear refusal that names the file, and nothing touched
    _truncate(stopped / "checkpoints" / "step-0000006" / "trainer.json")
    _truncate(stopped / "checkpoints" / "step-0000004" / "optimizer.safetensors", 0.9)
    log = (stopped / "losses.csv").read_bytes()
    with pytest.raises(ValueError, match="no intact checkpoint") as caught:
        _resume(stopped)
    message = str(caught.value)
    assert "\n" not in message
    assert "step-0000006: trainer.json is not valid JSON" in message
    assert "step-0000004: optimizer.safetensors is damaged" in message
    assert (stopped / "losses.csv").read_bytes() == log
    assert {p.name for p in (stopped / "checkpoints").glob("step-*")} == {"step-0000004", "step-0000006"}


def test_resume_without_any_checkpoint_is_refused(tmp_path):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / "losses.csv").write_text("step,loss,lr,images_per_second\n1,0.5,0.01,3.0\n")
    with pytest.raises(ValueError, match="--resume: .* holds no checkpoint"):
        fit(_Regression(), CONFIG, out, resume=True, progress=False)
    assert (out / "losses.csv").read_text() == "step,loss,lr,images_per_second\n1,0.5,0.01,3.0\n"
    assert not (out / "checkpoints").exists()


def test_cli_resume_without_checkpoint_is_one_line_error(tiny_prepared, tmp_path):
    from testing_constants import CONFIGS

    result = run_cli("train", "vae", "--data", tiny_prepared, "--out", tmp_path / "vae", "--config",
                     CONFIGS / "vae.tiny.json", "--resume", "--no-progress")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume") and "holds no checkpoint" in lines[0]
    assert not (tmp_path / "vae" / "checkpoints").exists()


def test_log_keeps_its_earlier_rows(stopped, straight):
    before = (stopped / "losses.csv").read_text()
    with open(stopped / "losses.csv", "a") as f:
        f.write("7,0.12")  # a row cut short by the kill
    _truncate(stopped / "checkpoints" / "step-0000006" / "rng.safetensors")
    _resume(stopped)
    after = (stopped / "losses.csv").read_text()
    # rows 1..4 are the very lines the first run wrote; 5.. are redone from step-0000004, appended
    kept = before.splitlines(keepends=True)[:5]
    assert after.startswith("".join(kept))
    assert _steps(stopped) == list(range(1, 9))
    _assert_matches(stopped, straight)


def test_rotation_after_resume_keeps_the_older_intact_checkpoint(stopped, straight):
    checkpoints = stopped / "checkpoints"
    _truncate(checkpoints / "step-0000006" / "net.safetensors")
    assert _resume(stopped, stop_at=5)["resumed_from"] == 4
    # the damaged step-0000006 must not count as one of the two kept: step-0000004 stays beside step-0000005
    assert {p.name for p in checkpoints.glob("step-*")} == {"step-0000004", "step-0000005", "step-0000006"}
    assert checkpoint_damage(checkpoints / "step-0000004", ["net"]) is None
    assert checkpoint_damage(checkpoints / "step-0000005", ["net"]) is None
    assert _resume(stopped)["resumed_from"] == 5
    # step-0000006 was rewritten intact on the way; rotation went back to the newest two
    assert {p.name for p in checkpoints.glob("step-*")} == {"step-0000006", "step-0000008"}
    assert checkpoint_damage(checkpoints / "step-0000006", ["net"]) is None
    _assert_matches(stopped, straight)


def test_a_damaged_log_row_is_named_not_dropped(stopped):
    with open(stopped / "losses.csv", "a") as f:
        f.write("<<<<<<< merged by hand\n")
    before = (stopped / "losses.csv").read_text()
    with pytest.raises(ValueError, match=r"losses.csv line 8 is not a log row"):
        _resume(stopped)
    assert (stopped / "losses.csv").read_text() == before
