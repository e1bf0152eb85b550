"""End to end on a toy cohort whose images depend on age only: an LDM whose captions never mention age learns
age through the attribute conditioning, and a same-seed sweep shows it."""

import numpy as np
import pandas as pd
import pytest
import torch

from dallebrain.data.slicing import save_png16

pytestmark = pytest.mark.slow

AGES = (20.0, 85.0)


def _toy_image(age: float, rng: np.random.Generator) -> np.ndarray:
    """A 'brain' disc whose dark central 'ventricle' grows with age (radius 4 px at 20, 14 px at 85)."""
    yy, xx = np.mgrid[:64, :64] - 31.5
    r = np.hypot(yy, xx)
    image = np.where(r < 28, 0.7, 0.0) + rng.normal(0, 0.02, (64, 64))
    image[r < 4 + 10 * (age - 20) / 65] = 0.1
    return np.clip(image, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def toy_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_ageing")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(32):
        age = AGES[i % 2]
        path = f"slices/{i:03d}.png"
        (root / "slices").mkdir(exist_ok=True)
        save_png16(_toy_image(age, rng), root / path)
        caption = "axial T1-weighted brain MRI slice"  # the text never says the age
        rows.append({"subject_id": f"toy-{i:03d}", "image_path": path, "modality": "T1w", "orientation": "axial",
                     "slice_mm": 23.0, "age": age, "sex": "F", "field_strength": 3.0, "ventricles_z": 0.0,
                     "brain_volume_z": 0.0, "split": "train", "caption": caption, "captions": [caption]})
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet")
    return root


def test_age_is_learned_through_the_attributes_alone(toy_prepared, tmp_path):
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.vae import VaeConfig, build_vae, decode_latents
    from dallebrain.training import ldm
    from dallebrain.training.config import load_config
    from dallebrain.training.loop import fit
    from testing_constants import CONFIGS

    torch.manual_seed(0)
    vae = build_vae(VaeConfig(block_out_channels=(8, 8), norm_num_groups=4, mid_block_attention=False,
                              sample_size=64))  # untrained: a fixed deterministic encoder/decoder is enough here
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                         ["max_steps=400", "max_rows=0", "learning_rate=2e-3", "warmup_steps=20", "caption_dropout=0",
                          "attribute_dropout=0.2", "checkpoint_every=400", "batch_size=8", "ema_decay=0"])
    dataset = SliceDataset(toy_prepared, "train")
    stage = ldm.LdmStage(config, dataset, tmp_path / "vae", None, tmp_path / "run", progress=False)
    fit(stage, config, tmp_path / "run", progress=False)
    pipe = stage.pipeline()
    prompts = {age: f"axial T1-weighted brain MRI slice of a {age:g}-year-old woman" for age in AGES}
    seeds = list(range(6))
    generated = {age: pipe.sample([p] * len(seeds), seeds, steps=20, guidance=1.0) for age, p in prompts.items()}
    # what the decoder makes of each age's training latents: the targets the sweep should land near
    with torch.no_grad():
        reference = {age: decode_latents(pipe.vae, stage.cache.latents[np.flatnonzero(dataset.table.age == age)]
                                         .float()).mean(0)[0].numpy() for age in AGES}
    for age, images in generated.items():
        other = AGES[1 - AGES.index(age)]
        own = np.abs(images - reference[age]).mean(axis=(1, 2))
        wrong = np.abs(images - reference[other]).mean(axis=(1, 2))
        assert (own < wrong).all(), (age, own, wrong)  # every seed lands on its asked age
