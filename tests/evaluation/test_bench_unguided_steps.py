"""benchmarks/bench_unguided_steps.py: it times every case at both pass sizes and says which unguided timestep each
case ran with (read from the results' settings, not from what was asked); a bad --rounds or --steps is refused."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_unguided_steps")


def test_every_case_is_timed_and_labelled_with_what_ran(bench, tiny_pipeline, capsys):
    out = bench.main(["--model", str(tiny_pipeline), "--rounds", "1", "--steps", "4"])
    # the tiny model records no table: "model" cases ran guided, 0 is guided too, 400 ran unguided below 400
    assert set(out) == {f"{c} {label} x{k}" for c, label in (("PD-weighted", "none (model)"),
                                                              ("PD-weighted", "none (set)"),
                                                              ("T1-weighted", "none (model)"),
                                                              ("T1-weighted", "400 (set)")) for k in (1, 8)}
    assert all(v > 0 for v in out.values())
    assert "400 (set)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [(["--rounds", "0"], "--rounds must be at least 1"),
                                           (["--steps", "0"], "--steps must be at least 1")])
def test_bad_rounds_or_steps_are_refused(bench, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code != 0 and message in capsys.readouterr().err
