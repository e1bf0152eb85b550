"""Bad input found by a review of every command (2026-12-07): each gets one line and exit 2, never a traceback,
"Aborted!" or a run that goes ahead, and nothing already written is lost or left half-written."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dallebrain.cli import app
from dallebrain.cli._common import first_line


def _refused(args, words, cwd=None):
    result = CliRunner().invoke(app, [str(a) for a in args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, (args, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (args, result.output)
    return lines[0]


def test_an_exception_without_a_message_still_says_what_it_was():
    assert first_line(EOFError()) == "EOFError"
    assert first_line(ValueError("first\nsecond")) == "first"
    assert first_line(KeyError("subject_id")) == "'subject_id'"


def test_prepare_and_simulate_refuse_what_used_to_fail_late_or_in_a_traceback(tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    prepare = ["data", "prepare", "--source", "simulated", "--input", cohort]
    _refused([*prepare, "--out", afile], "--out exists and is not a folder")  # was a FileExistsError traceback
    _refused([*prepare, "--out", tmp_path / "p", "--seed", "-1"], "--seed")  # was refused after every subject
    _refused([*prepare, "--out", tmp_path / "p", "--workers", "0"], "--workers must be at least 1")  # was 1
    _refused(["data", "simulate", "--subjects", "2", "--out", tmp_path / "s", "--seed", "-3"], "--seed")
    assert afile.read_text() == "x" and not (tmp_path / "p").exists() and not (tmp_path / "s").exists()


def _table(folder, **columns):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_parquet(folder / "metadata.parquet", index=False)
    return folder


def test_a_table_without_the_columns_a_command_reads_is_refused_by_name(tmp_path):
    from dallebrain.data.dataset import SliceDataset, read_metadata

    longitudinal = _table(tmp_path / "longi", session_id=["ses-01", "ses-02"], image_path=["a.png", "b.png"])
    _refused(["evaluate-ageing", "--data", longitudinal, "--out", tmp_path / "ea"], "lacks the column(s) subject_id")
    real = _table(tmp_path / "real", split=["train", "test"], image_path=["a.png", "b.png"])
    synthetic = _table(tmp_path / "syn", image_path=["a.png"])
    _refused(["evaluate-utility", "--real", real, "--synthetic", synthetic, "--out", tmp_path / "eu"],
             "--real")  # was KeyError: 'subject_id'
    assert not (tmp_path / "ea").exists() and not (tmp_path / "eu").exists()
    with pytest.raises(ValueError, match="lacks the column"):
        SliceDataset(synthetic)  # no split column, and a split asked for
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "metadata.parquet").write_bytes((real / "metadata.parquet").read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable table") as info:
        read_metadata(tmp_path / "cut")
    assert "\n" not in str(info.value)


def test_evaluate_utility_keeps_an_earlier_report_and_checks_out_before_training(tmp_path):
    real = _table(tmp_path / "real", split=["train", "test"], image_path=["a.png", "b.png"], subject_id=["1", "2"])
    synthetic = _table(tmp_path / "syn", image_path=["a.png"])
    report = tmp_path / "report"
    report.mkdir()
    (report / "utility.json").write_text('{"kept": true}')
    args = ["evaluate-utility", "--real", real, "--synthetic", synthetic]
    _refused([*args, "--out", report], "--overwrite")
    assert json.loads((report / "utility.json").read_text()) == {"kept": True}
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused([*args, "--out", afile / "report"], "cannot be written")


def test_two_ages_that_share_a_frame_name_are_refused():
    from dallebrain.ageing.sequence import frame_stem, parse_ages

    assert frame_stem(30.0) == frame_stem(30.04)  # one file name: the first frame would be overwritten
    with pytest.raises(ValueError, match="repeats an age"):
        parse_ages("30,30.04")
    assert parse_ages("30,30.1") == [30.0, 30.1]


def test_damaged_judge_weights_are_refused_in_one_line(tmp_path):
    from dallebrain.judges.tissue import SHIPPED

    folder = tmp_path / "judge"
    shutil.copytree(SHIPPED, folder)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.full((128, 128), 90, np.uint8)).save(image)
    line = _refused(["judge", "tissue", image, "--weights", folder], "unreadable tissue judge")
    assert "SafetensorError" in line


def test_an_export_that_fails_half_way_leaves_no_folder_behind(tmp_path, monkeypatch):
    from dallebrain.api import default_model
    from dallebrain.pipelines import text_encoder

    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(["export", "--out", afile], "exists and is not a folder")

    def broken(folder):
        raise ValueError("the MiniLM package is not installed")

    monkeypatch.setattr(text_encoder, "load_pipeline_text_encoder", broken)
    _refused(["export", "--model", default_model(), "--out", tmp_path / "stock"], "MiniLM")
    assert not (tmp_path / "stock").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]  # no temporary folder left either


@pytest.mark.parametrize("args, words", [
    (["generate", "a prompt", "--n", "abc"], "dallebrain generate: Invalid value for '--n'"),
    (["generate"], "dallebrain generate: Missing argument"),
    (["data", "prepare", "--bogus", "1"], "dallebrain data prepare: No such option: --bogus"),
])
def test_options_click_refuses_are_one_line_too(args, words):
    import subprocess
    import sys

    # the installed command and `python -m dallebrain.cli` go through cli.main, which turns click's usage block
    # (Usage / Try --help / blank / Error) into the one line every other bad input gets
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", *args], capture_output=True, text=True,
                            timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], \
        result.stderr
    helped = subprocess.run([sys.executable, "-m", "dallebrain.cli"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 2 and "Commands:" in helped.stdout + helped.stderr  # alone: the help, as before


def test_a_file_cut_short_is_named_not_aborted(monkeypatch, capsys):
    import typer

    import dallebrain.cli as cli

    cut = typer.Typer()

    @cut.command()
    def read():
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(cli, "app", cut)
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1 and lines == [
        "error: a file ended before its data did (Compressed file ended before the end-of-stream marker was reached)"]


def test_a_slice_to_vary_reads_the_same_grey_whatever_its_png_mode(tmp_path):
    from PIL import Image

    from dallebrain import api

    grey = (np.arange(64 * 64).reshape(64, 64) % 200 + 20).astype(np.uint8)
    expected = grey / 255.0
    alpha = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(np.full_like(grey, 255))])
    palette = Image.fromarray(grey).convert("P")  # a palette of the greys: indices are not intensities
    forms = {"L": Image.fromarray(grey), "LA": alpha, "RGB": Image.fromarray(grey).convert("RGB"), "P": palette}
    for mode, image in forms.items():
        image.save(tmp_path / f"{mode}.png")
        read = api.load_slice(tmp_path / f"{mode}.png", 64)
        assert np.abs(read - expected).max() < 2 / 255, mode
    dark16 = (grey.astype(np.uint16) * 2)  # 16-bit values 40..438: a dark scan, not 8-bit data
    Image.fromarray(dark16).save(tmp_path / "dark16.png")
    assert np.allclose(api.load_slice(tmp_path / "dark16.png", 64), dark16 / 65535.0, atol=1e-6)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(ValueError, match="no usable signal"):
        api.load_slice(tmp_path / "black.png", 64)
    Image.fromarray(grey > 100).save(tmp_path / "mask.png")  # 1-bit
    assert set(np.unique(api.load_slice(tmp_path / "mask.png", 64))) == {0.0, 1.0}


def test_a_synthesis_folder_is_claimed_once_and_a_damaged_record_refused(tmp_path):
    from dallebrain.data.io import create_json_exclusive
    from dallebrain.synthesize.mix import parse_mix
    from dallebrain.synthesize.options import SynthesisOptions, claim_folder

    path = tmp_path / "record.json"
    assert create_json_exclusive(path, {"a": 1}) is True
    assert create_json_exclusive(path, {"a": 2}) is False  # the second claimant leaves the first's record
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["record.json"]
    record = {"identity": {"n": 4, "seed": 0}}
    out = tmp_path / "synthetic"
    assert claim_folder(out, record) is False  # new: claimed
    assert claim_folder(out, record) is True  # the same settings (another process of the launch): resumed
    with pytest.raises(ValueError, match="other settings"):
        claim_folder(out, {"identity": {"n": 4, "seed": 1}})
    (out / "synthesize.json").write_text('{"identity": []}')  # was an AttributeError traceback
    with pytest.raises(ValueError, match="not a readable synthesis record"):
        claim_folder(out, record)
    no_paths = _table(tmp_path / "judge", split=["train"], modality=["T1w"], orientation=["axial"])
    with pytest.raises(ValueError, match="--judge .* lacks the column"):  # was a KeyError after claiming --out
        SynthesisOptions(n=2, out=tmp_path / "s2", mix=parse_mix(), judge=no_paths).check()
    assert not (tmp_path / "s2").exists()


def test_judge_training_refuses_before_reading_a_slice(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    table = _table(tmp_path / "nosplit", image_path=["a.png"], age=[40.0], subject_id=["1"])
    _refused(["judge", "train", "--data", table, "--out", tmp_path / "j"], "lacks the column(s) split")
    _refused(["judge", "fit-age", "--data", table, "--out", tmp_path / "a"], "lacks the column(s) split")
    _refused(["judge", "fit-age", "--data", table, "--out", tmp_path / "a", "--max-slices", "0"], "--max-slices")
    _refused(["judge", "train", "--data", table, "--out", afile], "--out exists and is not a folder")
    _refused(["judge", "train", "--data", table, "--out", tmp_path / "j", "--crop", "20"], "--crop")


def test_an_age_judge_with_garbled_numbers_is_refused_when_it_loads(tmp_path):
    from dallebrain.judges.age import MODEL_FILE, SHIPPED, load_age_judge

    whole = json.loads((SHIPPED / MODEL_FILE).read_text())
    for change in ({"age_range": None}, {"coef": whole["coef"][:-1]}, {"scale": [0.0] * len(whole["scale"])},
                   {"intercept": "forty"}):
        folder = tmp_path / "age"
        folder.mkdir(exist_ok=True)
        (folder / MODEL_FILE).write_text(json.dumps({**whole, **change}))
        with pytest.raises(ValueError, match="unreadable age judge") as info:
            load_age_judge(folder)
        assert "\n" not in str(info.value), change


def test_a_damaged_evaluation_cache_is_read_again_not_fatal(tmp_path):
    from dallebrain.evaluation.reference import load_train_split, save_train_split

    folder = tmp_path / "train_split"
    save_train_split(folder, "k", np.zeros((3, 8, 8), np.float16), None, [])
    assert load_train_split(folder, "k", 3, 8, False) is not None
    (folder / "key.json").write_text("[]")  # was an AttributeError traceback
    assert load_train_split(folder, "k", 3, 8, False) is None
    save_train_split(folder, "k", np.zeros((3, 8, 8), np.float16), None, [])
    (folder / "work.npy").write_bytes(b"")  # was an EOFError
    assert load_train_split(folder, "k", 3, 8, False) is None


def test_what_no_check_foresaw_is_one_line_and_its_traceback_one_variable_away(monkeypatch, capsys):
    import typer

    import dallebrain.cli as cli

    broken = typer.Typer()

    @broken.command()
    def read():
        raise KeyError("subject_id")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1 and len(lines) == 1
    assert lines[0].startswith("error: unexpected KeyError: 'subject_id'") and cli.TRACEBACK_VARIABLE in lines[0]
    monkeypatch.setenv(cli.TRACEBACK_VARIABLE, "1")
    with pytest.raises(KeyError):
        cli.main([])


def test_training_and_serving_options_are_checked_before_any_work(tmp_path):
    table = _table(tmp_path / "nocaptions", split=["train"], image_path=["a.png"], subject_id=["1"])
    vae = tmp_path / "vae"
    vae.mkdir()
    _refused(["train", "ldm", "--data", table, "--vae", vae, "--out", tmp_path / "o"],
             "lacks the column(s) captions")  # was a KeyError after the latents were encoded
    _refused(["train", "ageing", "--data", table, "--out", tmp_path / "o", "--steps", "abc"],
             "dallebrain train ageing: argument --steps")  # was argparse's usage block
    _refused(["train", "ageing", "--data", table, "--out", tmp_path / "o", "--lr", "inf"], "--lr must be a positive")
    _refused(["serve", "--device", "gpu"], "not a torch device")  # the server started, every request failed
    assert not (tmp_path / "o").exists()


def test_a_benchmark_or_recipe_that_meets_what_it_did_not_check_ends_in_one_line(tmp_path, monkeypatch, capsys):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dallebrain.cli._common import TRACEBACK_VARIABLE, run_script

    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)

    def missing():
        raise FileNotFoundError(f"{tmp_path}/metadata.parquet")

    with pytest.raises(SystemExit) as exited:
        run_script(missing)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1 and len(lines) == 1 and "FileNotFoundError" in lines[0]
    with pytest.raises(SystemExit) as exited:  # its own refusals keep their code and words
        run_script(lambda: sys.exit("error: --n must be at least 1"))
    assert exited.value.code == "error: --n must be at least 1"
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(FileNotFoundError):
        run_script(missing)
    # as a developer runs one: a data folder that is not there (a FileNotFoundError traceback before; checked
    # first now, and run_script would have made it one line anyway)
    script = Path(__file__).parents[1] / "benchmarks" / "bench_level_judge.py"
    done = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "nowhere")], capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k != TRACEBACK_VARIABLE})
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: --data ") and "metadata.parquet" in done.stderr


def test_a_benchmark_empties_only_a_scratch_folder_it_made(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    from _bench import MARKER, check_at_least, fresh_scratch

    precious = tmp_path / "prepared"
    precious.mkdir()
    (precious / "metadata.parquet").write_bytes(b"a user's data set")
    with pytest.raises(SystemExit, match="holds files no benchmark made"):
        fresh_scratch(precious)  # it was shutil.rmtree'd
    assert (precious / "metadata.parquet").read_bytes() == b"a user's data set"
    scratch = fresh_scratch(tmp_path / "scratch")
    (scratch / "cohort").mkdir()
    assert list(fresh_scratch(scratch).iterdir()) == [scratch / MARKER]  # its own is emptied for the next run
    with pytest.raises(SystemExit, match="--trend-spacing-mm must be at least 0.1, got nan"):
        check_at_least(0.1, steps=3, trend_spacing_mm=float("nan"))
    assert sys.modules["_bench"].__file__.endswith("benchmarks/_bench.py")


@pytest.mark.parametrize("script", ["recipes/level_map.py", "benchmarks/bench_vae.py"])
def test_a_recipe_or_benchmark_option_that_is_not_a_number_is_one_line(script):
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / script), "--seeds" if "recipes" in script
                           else "--n", "abc"], capture_output=True, text=True)
    name = Path(script).name
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(f"error: {name}: ") and "'abc'" in done.stderr  # argparse printed its usage first
