"""benchmarks/bench_prior_guidance.py: a row per prior guidance scale, the scale reaching the prior's embeddings
(plain sampling and guided sampling give different distances), and its refusals in one line."""

import math

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_prior_guidance")


def test_each_scale_gets_its_distances_to_the_real_embeddings(bench, tiny_unclip_pipeline, tiny_prepared, capsys):
    out = bench.main(["--model", str(tiny_unclip_pipeline), "--data", str(tiny_prepared), "--n", "16",
                      "--guidance", "1,4", "--steps", "3"])
    assert set(out) == {1.0, 4.0}
    for row in out.values():
        assert row["frechet"] >= 0 and row["crossed"] >= 0 and -1 <= row["cosine"] <= 1
        assert all(math.isfinite(v) for v in row.values())
    assert out[1.0]["frechet"] != out[4.0]["frechet"]  # the scale reaches the embeddings
    printed = capsys.readouterr().out
    assert "real half against real half (floor)" in printed and "closest to real: guidance" in printed


@pytest.mark.parametrize("args, message", [
    (["--guidance", "1,x"], "--guidance takes comma-separated numbers"),
    (["--guidance", "-1"], "--guidance takes non-negative numbers"),
    (["--n", "2"], "--n must be at least 8"),
])
def test_bad_options_are_refused_in_one_line(bench, tiny_prepared, args, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tiny_prepared), *args])
    assert message in str(exit_info.value.code) and str(exit_info.value.code).startswith("error: ")
