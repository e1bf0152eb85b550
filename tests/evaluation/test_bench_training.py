"""benchmarks/bench_training.py --step-parts: the whole step's "now" is what training runs on this CPU (bf16
autocast where native, fp32 where not), and every part it sums is timed."""

import re

import pytest


@pytest.mark.parametrize("native", [True, False])
def test_step_parts_compares_what_training_runs(load_benchmark, monkeypatch, capsys, native):
    bench = load_benchmark("bench_training")
    monkeypatch.setattr("dallebrain.pipelines.precision.native_bf16", lambda device: native)
    bench.step_parts("tiny", rounds=1, compiled=False)
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \|", out, flags=re.M))
    assert ("forward + backward, bf16 autocast (now)" in rows) is native
    for part in ("forward + backward", "gradient clipping", "AdamW, per-tensor loop (before)", "AdamW, fused (now)",
                 "EMA, loop over tensors (before)", "EMA, one foreach call (now)"):
        assert float(rows[part]) > 0
    summary = re.search(r"before \(fp32, loop AdamW and EMA\) (\d+) ms .* now \((\w+)[^)]*\) (\d+) ms .*: ([0-9.]+)x",
                        out)
    assert summary is not None, out
    assert summary.group(2) == ("bf16" if native else "fp32")
    before, after, ratio = float(summary.group(1)), float(summary.group(3)), float(summary.group(4))
    # the printed milliseconds are rounded to whole ones, the ratio is not
    assert (before - 0.5) / (after + 0.5) - 0.005 <= ratio <= (before + 0.5) / (after - 0.5) + 0.005
