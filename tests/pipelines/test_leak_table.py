"""The leak table (pipelines/leak_table.py): per (plane, contrast, level band) the mean training latent and its
change with age and sex, fitted by least squares; a prompt's start mean at what it states, the marginal where it
is silent; refused in one line when the file is bad; written by `train ldm`, read by the pipelines."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from dallebrain.api import load_pipeline
from dallebrain.data.prompts import PromptFields, parse_prompt
from dallebrain.models.unet import make_scheduler
from dallebrain.pipelines import leak_table as LT
from dallebrain.pipelines.signal_leak import start_latents
from dallebrain.pipelines.text2mri import initial_noise

SHAPE = (4, 6, 6)


def synthetic_cohort(subjects: int = 12, seed: int = 0):
    """Latents that are exactly base[plane, contrast, band] + age slope * decades + male shift, over 12 subjects
    (two bands of axial T1w and one of coronal FLAIR), with the table that describes them."""
    rng = np.random.default_rng(seed)
    base = {key: rng.normal(size=SHAPE) for key in [("axial", "T1w", 0), ("axial", "T1w", 1), ("coronal", "FLAIR", 0)]}
    slope, shift = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    rows, latents = [], []
    for s in range(subjects):
        age, sex = 20 + 6 * s, "M" if s % 2 else "F"
        for (plane, contrast, band), b in base.items():
            rows.append({"orientation": plane, "modality": contrast, "slice_mm": 12.0 * band + 3, "age": age,
                         "sex": sex, "subject_id": f"sub-{s:02d}"})
            latents.append(b + slope * (age - 53) / 10 + shift * (sex == "M"))
    return np.stack(latents).astype(np.float16), pd.DataFrame(rows), base, slope, shift


def test_the_fit_recovers_a_linear_cohort_and_a_prompt_gets_its_conditional_mean():
    latents, table, base, slope, shift = synthetic_cohort()
    fitted = LT.fit_leak_table(latents, table)
    assert fitted.keys == [("axial", "T1w", 0), ("axial", "T1w", 1), ("coronal", "FLAIR", 0)]
    np.testing.assert_allclose(fitted.age_slope[0].numpy(), slope, atol=5e-3)
    np.testing.assert_allclose(fitted.male_shift[2].numpy(), shift, atol=5e-3)
    # a prompt stating every attribute gets that slice's latent; the band is read from its level in mm
    asked = PromptFields(orientation="axial", modality="T1w", slice_mm=15.0, age=80.0, sex="M")
    np.testing.assert_allclose(fitted.start_mean(asked).numpy(), base[("axial", "T1w", 1)]
                               + slope * (80 - 53) / 10 + shift, atol=2e-2)
    # silent on age and sex: the group's own mean, as the cohort has them
    silent = fitted.start_mean(PromptFields(orientation="coronal", modality="FLAIR", slice_mm=3.0)).numpy()
    np.testing.assert_allclose(silent, latents[table.modality == "FLAIR"].astype(np.float64).mean(0), atol=1e-3)
    # silent on the level: every band of the plane, weighted by its slices (here equal)
    no_level = fitted.start_mean(PromptFields(orientation="axial", modality="T1w")).numpy()
    np.testing.assert_allclose(no_level, latents[table.modality == "T1w"].astype(np.float64).mean(0), atol=1e-3)
    # a level beyond the table's bands takes the nearest band; a contrast it lacks, every group
    far = fitted.start_mean(PromptFields(orientation="axial", modality="T1w", slice_mm=70.0)).numpy()
    np.testing.assert_allclose(far, latents[(table.modality == "T1w") & (table.slice_mm > 12)].astype(float).mean(0),
                               atol=1e-3)
    unknown = fitted.start_mean(PromptFields(orientation="axial", modality="PDw")).numpy()
    np.testing.assert_allclose(unknown, latents.astype(np.float64).mean(0), atol=1e-3)
    # the words of a prompt reach it through parse_prompt
    words = fitted.start_mean(parse_prompt("axial T1-weighted slice of a healthy 80-year-old man at z = 15 mm"))
    np.testing.assert_allclose(words.numpy(), fitted.start_mean(asked).numpy(), atol=1e-6)


def test_groups_of_few_subjects_are_left_out_and_rows_without_demographics_only_inform_the_mean():
    latents, table, *_ = synthetic_cohort(subjects=12)
    few = table.copy()
    few.loc[few.orientation == "coronal", "subject_id"] = "sub-00"  # one subject: its latent would be stored
    assert ("coronal", "FLAIR", 0) not in LT.fit_leak_table(latents, few).keys
    with pytest.raises(ValueError, match="no group of training slices holds 20 subjects"):
        LT.fit_leak_table(latents, table, min_subjects=20)
    blind = table.assign(age=np.nan, sex="unknown")
    fitted = LT.fit_leak_table(latents, blind)
    assert torch.count_nonzero(fitted.age_slope) == 0 and torch.count_nonzero(fitted.male_shift) == 0
    first = ((table.modality == "T1w") & (table.slice_mm == 3.0)).to_numpy()
    np.testing.assert_allclose(fitted.mean[0].numpy(), latents[first].astype(np.float64).mean(0), atol=1e-3)


def test_the_table_round_trips_through_safetensors_and_a_bad_file_is_refused_in_one_line(tmp_path):
    latents, table, *_ = synthetic_cohort()
    fitted = LT.fit_leak_table(latents, table)
    path = tmp_path / LT.FILENAME
    fitted.save(path)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = LT.load_leak_table(path, 4, 6)
    assert loaded.keys == fitted.keys and loaded.band_mm == LT.BAND_MM
    torch.testing.assert_close(loaded.mean, fitted.mean.half().float())
    torch.testing.assert_close(loaded.counts, fitted.counts.long())
    with pytest.raises(LT.LeakTableError, match=r"'mean' must have shape \(3, 4, 8, 8\) for this model"):
        LT.load_leak_table(path, 4, 8)
    (tmp_path / "junk").write_bytes(b"not a safetensors file")
    with pytest.raises(LT.LeakTableError, match="is not readable") as info:
        LT.load_leak_table(tmp_path / "junk", 4, 6)
    assert "\n" not in str(info.value)
    fitted.mean[1, 0, 0, 0] = float("nan")
    fitted.save(tmp_path / "nan.safetensors")
    with pytest.raises(LT.LeakTableError, match="'mean' holds non-finite values"):
        LT.load_leak_table(tmp_path / "nan.safetensors", 4, 6)


def test_train_ldm_writes_the_table_of_its_cache_and_sampling_starts_from_the_prompts_row(
        tiny_prepared, tiny_vae, tmp_path, monkeypatch):
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training import ldm
    from dallebrain.training.config import load_config
    from dallebrain.training.ldm import LdmTrainConfig
    from testing_constants import CONFIGS

    monkeypatch.setattr(LT, "MIN_SUBJECTS", 1)  # the tiny cohort has 4 subjects
    out = tmp_path / "model"
    ldm.main(["--data", str(tiny_prepared), "--out", str(out), "--vae", str(tiny_vae), "--config",
              str(CONFIGS / "ldm.tiny.json"), "--set", "max_steps=1", "--no-progress"])
    pipe = load_pipeline(out, device="cpu")
    assert pipe.leak_table is not None and pipe.start_kind == "leak table"
    cached = np.load(out / "cache" / "latents.npy")
    config = load_config(LdmTrainConfig, CONFIGS / "ldm.tiny.json")
    # the rows the cache was made of, in its order: as ldm.main picks them
    table = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows or None, seed=config.seed).table
    assert len(table) == len(cached)
    refit = LT.fit_leak_table(cached, table, min_subjects=1)
    assert pipe.leak_table.keys == refit.keys
    torch.testing.assert_close(pipe.leak_table.mean, refit.mean, atol=2e-3, rtol=1e-3)

    prompt = "coronal FLAIR slice of a healthy 70-year-old woman at y = -20 mm"
    first_inputs = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: first_inputs.append(args[0].clone()))
    result = pipe(prompt, seed=4, steps=3, sampler="ddim")
    hook.remove()
    assert result.settings["start"] == "leak table"
    scheduler = make_scheduler("ddim", pipe.scheduler_config)
    scheduler.set_timesteps(3)
    unet = pipe.unet.config
    noise = initial_noise((unet.in_channels, unet.sample_size, unet.sample_size), 4)
    row = pipe.leak_table.start_mean(parse_prompt(prompt))[None]
    torch.testing.assert_close(first_inputs[0][:1], start_latents(scheduler, noise, row))
    # `sample` (the evaluation's path) starts each prompt from its own row: image i as the prompt's own call
    other = "axial T1-weighted slice of a healthy 25-year-old man at z = 30 mm"
    both = pipe.sample([prompt, other], [4, 4], steps=3, sampler="ddim")
    np.testing.assert_array_equal(both[0], result.images[0])
    assert np.abs(both[1] - both[0]).max() > 1e-3


def test_a_folder_with_a_bad_leak_table_is_refused_when_it_loads(tiny_pipeline, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_pipeline, bad, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    (bad / LT.FILENAME).write_bytes(b"\x00" * 16)
    with pytest.raises(LT.LeakTableError, match="leak table .* is not readable"):
        load_pipeline(bad, device="cpu")
