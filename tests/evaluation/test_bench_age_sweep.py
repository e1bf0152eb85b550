"""benchmarks/bench_age_sweep.py: the sweep measures only the contrasts asked for, each seed's four ages with one
seed, and a contrast it does not know is refused before any model loads."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_age_sweep")


class MeanJudge:
    """Stands in for the tissue judge: a slice's "ventricle fraction" is its mean grey level."""

    def fractions(self, images):
        return {"ventricles": np.asarray(images).reshape(len(images), -1).mean(axis=1)}


@pytest.mark.parametrize("contrast", ["FLAIR", "PDw"])  # PDw: outside issue 11's three, on request
def test_the_sweep_measures_the_contrasts_asked_for(bench, tiny_pipeline, contrast):
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(tiny_pipeline)
    pipe.images_per_pass = 4
    result = bench.sweep(pipe, MeanJudge(), seeds=2, steps=2, guidance=2.0, contrasts=(contrast,))
    assert list(result) == [contrast]
    assert "PD-weighted" in bench.prompt("PDw", 20)
    row = result[contrast]
    assert 0 <= row["rising_share"] <= 1 and -1 <= row["spearman_mean"] <= 1
    by_age = row["mean_fraction_by_age"]
    assert list(by_age) == [str(a) for a in bench.AGES]
    assert row["ratio_85_20"] == pytest.approx(by_age["85"] / by_age["20"], rel=1e-3)


def test_an_unknown_contrast_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--real", "nowhere", "--contrasts", "T1w,CT"])
    assert exit_info.value.code != 0
    assert "--contrasts takes some of T1w, T2w, FLAIR, PDw" in capsys.readouterr().err


def test_an_unknown_sampler_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--real", "nowhere", "--sampler", "plms"])
    assert exit_info.value.code != 0
    expected = "--sampler takes one of auto, dpm, dpm-karras, dpm-sde, ddim, euler, unipc, got 'plms'"
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("value", ["8", "8@", "x@500", "8@1000", "60@500", "8@500.5"])
def test_a_bad_early_guidance_is_refused_before_any_model_loads(bench, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--real", "nowhere", "--attribute-guidance-early", value])
    assert exit_info.value.code != 0
    assert "--attribute-guidance-early takes SCALE@TIMESTEP" in capsys.readouterr().err
