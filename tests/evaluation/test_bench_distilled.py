"""benchmarks/bench_distilled.py: it times both models at both pass sizes for every contrast, measures the student's
same-seed difference from the teacher beside the teacher's own seed-to-seed one, and refuses a student that is not
guidance-distilled."""

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_distilled")


def test_both_models_are_timed_and_the_student_compared(bench, tiny_pipeline, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(tiny_pipeline, student)
    info = json.loads((student / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["guidance_distilled"] = {"guidance": 2.0}
    (student / "dallebrain.json").write_text(json.dumps(info))
    out = bench.main(["--student", str(student), "--teacher", str(tiny_pipeline), "--rounds", "1", "--seeds", "2",
                     "--steps", "2"])
    assert set(out["seconds_per_image"]) == {f"{m} {c} x{k}" for m in ("student", "teacher") for c in bench.CONTRASTS
                                             for k in (1, 8)}
    assert all(v > 0 for v in out["seconds_per_image"].values())
    assert set(out["difference"]) == {f"{c} {a}" for c in bench.CONTRASTS for a in (20, 85)}
    # the same UNet read without guidance: its slices differ from the guided teacher's, and seeds differ
    assert all(d["student_vs_teacher"] > 0 and d["teacher_seed_vs_seed"] > 0 for d in out["difference"].values())


def test_a_student_that_is_not_distilled_is_refused(bench, tiny_pipeline, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--student", str(tiny_pipeline), "--teacher", str(tiny_pipeline), "--rounds", "1"])
    assert exit_info.value.code != 0 and "is not guidance-distilled" in capsys.readouterr().err


def test_a_low_noise_student_is_compared_with_those_steps_unguided(bench, tiny_pipeline, tmp_path):
    """The student here is the teacher's own copy, so on its steps it gives the teacher's conditional prediction:
    exactly the teacher with those steps unguided, which is the comparison the benchmark prints beside it."""
    student = tmp_path / "hybrid"
    shutil.copytree(tiny_pipeline, student)
    shutil.copytree(student / "unet", student / "unet_distilled")
    info = json.loads((student / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["guidance_distilled"] = {"guidance": 2.0, "below_timestep": 999, "sampler": "dpm",
                                                             "sampler_steps": 2}
    (student / "dallebrain.json").write_text(json.dumps(info))
    out = bench.main(["--student", str(student), "--teacher", str(tiny_pipeline), "--rounds", "0", "--seeds", "2",
                      "--steps", "2"])
    assert out["seconds_per_image"] == {}
    for record in out["difference"].values():
        assert record["student_vs_teacher"] > 0
        assert record["student_vs_teacher"] == pytest.approx(record["unguided_vs_teacher"], abs=1e-7)
