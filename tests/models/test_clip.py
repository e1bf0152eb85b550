import json

import pytest
import torch
from safetensors.torch import load_file

from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig
from dallebrain.models.text import HIDDEN_SIZE, MAX_TOKENS

TINY = dict(image_width=8, image_blocks_per_stage=1, image_stages=2, embed_dim=32, tuned_text_layers=1,
            image_size=32)
CAPTIONS = ["axial T1-weighted slice of a healthy 30-year-old man at the level of the lateral ventricles",
            "coronal T2-weighted MRI of a 74-year-old woman through the hippocampus",
            "sagittal FLAIR brain MRI, midline",
            "PD-weighted axial slice at the level of the cerebellum"]


def _tiny(**overrides) -> BrainCLIP:
    torch.manual_seed(0)
    return BrainCLIP(BrainCLIPConfig(**{**TINY, **overrides}))


def _images(n=4, size=32):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def model() -> BrainCLIP:
    return _tiny()


def test_encoders_give_unit_vectors_of_embed_dim(model):
    with torch.no_grad():
        images = model.encode_image(_images(3, 48))
        texts = model.encode_text(CAPTIONS[:3])
    assert images.shape == texts.shape == (3, 32)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(3))


def test_text_states_are_the_padded_token_states_the_unet_reads(model):
    with torch.no_grad():
        states, mask = model.text_states(CAPTIONS[:2])
    assert states.shape == (2, MAX_TOKENS, HIDDEN_SIZE)
    assert mask.shape == (2, MAX_TOKENS) and 0 < int(mask.sum()) < 2 * MAX_TOKENS


def test_text_embedding_does_not_depend_on_the_other_captions_of_the_batch(model):
    # encode_text trims padding to the longest caption of the batch: masked, so it must change nothing
    with torch.no_grad():
        alone = model.encode_text(CAPTIONS[2:3])
        together = model.encode_text(CAPTIONS)[2:3]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


def test_only_the_top_text_layers_train_and_frozen_ones_stay_in_eval_mode():
    model = _tiny(tuned_text_layers=2)
    model.train()
    layers = model.text_encoder.encoder.layer
    assert [layer.training for layer in layers] == [False] * 4 + [True] * 2
    assert not model.text_encoder.embeddings.training
    assert all(p.requires_grad for p in layers[4].parameters())
    assert not any(p.requires_grad for p in layers[3].parameters())
    assert not any(p.requires_grad for p in model.text_encoder.embeddings.parameters())


def test_a_training_step_changes_tuned_layers_but_not_frozen_ones():
    model = _tiny()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model.contrastive_loss(*model(_images(), CAPTIONS))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "text_encoder.encoder.layer.5.attention.self.query.weight" in changed
    assert "image_projection.weight" in changed and "logit_scale" in changed
    assert not any(k.startswith(("text_encoder.embeddings.", "text_encoder.encoder.layer.4.")) for k in changed)
    assert changed <= set(model.trained_state_dict())


def test_save_load_round_trip_ships_only_the_trained_weights(model, tmp_path):
    model.save_pretrained(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["format"] == "dallebrain-brain-clip" and record["embed_dim"] == 32
    weights = load_file(tmp_path / "model.safetensors")
    assert not any(k.startswith("text_encoder.embeddings.") for k in weights)
    text_layers = {k.split(".")[3] for k in weights if k.startswith("text_encoder.encoder.layer.")}
    assert text_layers == {"5"}
    assert (tmp_path / "model.safetensors").stat().st_size < 10e6  # MiniLM alone is ~90 MB

    loaded = BrainCLIP.from_pretrained(tmp_path)
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
        torch.testing.assert_close(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS))
        torch.testing.assert_close(loaded.scale(), model.scale())


def test_round_trip_keeps_tuned_text_weights(tmp_path):
    model = _tiny()
    with torch.no_grad():
        model.text_encoder.encoder.layer[5].output.dense.weight.add_(0.05)
    model.save_pretrained(tmp_path)
    loaded = BrainCLIP.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS))
        torch.testing.assert_close(loaded.text_states(CAPTIONS[:1])[0], model.text_states(CAPTIONS[:1])[0])
    merged = model.text_encoder_for_diffusers()
    assert type(merged).__name__ == "BertModel" and merged is not model.text_encoder
    torch.testing.assert_close(merged.encoder.layer[5].output.dense.weight,
                               model.text_encoder.encoder.layer[5].output.dense.weight)


def test_refuses_pickles_and_incomplete_folders(model, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        BrainCLIP.from_pretrained(tmp_path / "missing")
    folder = tmp_path / "pickled"
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.trained_state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        BrainCLIP.from_pretrained(folder)
    (folder / "pytorch_model.bin").rename(folder / "model.safetensors")  # a pickle under the right name
    with pytest.raises(ValueError, match="safetensors"):
        BrainCLIP.from_pretrained(folder)
    no_config = tmp_path / "no-config"
    model.save_pretrained(no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        BrainCLIP.from_pretrained(no_config)


def test_duplicate_captions_count_as_positives():
    # images 0 and 1 share a caption: matching image 0 to text 1 is as right as to text 0
    logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    soft = BrainCLIP.contrastive_loss(logits, logits.t(), ["a", "a", "b"])
    hard = BrainCLIP.contrastive_loss(logits, logits.t())
    assert float(soft) < 0.6 * float(hard)


def test_loss_falls_when_overfitting_a_fixed_batch():
    model = _tiny()
    model.train()
    images = torch.zeros(6, 1, 32, 32)
    for i in range(6):  # a distinct bright square per image
        r, c = divmod(i, 3)
        images[i, 0, 4 + 12 * r:12 + 12 * r, 2 + 10 * c:10 + 10 * c] = 1.0
    captions = [f"{o} {c} brain MRI" for o, c in zip(["axial", "coronal", "sagittal"] * 2,
                                                     ["T1-weighted"] * 3 + ["FLAIR"] * 3, strict=True)]
    optimizer = torch.optim.AdamW([{"params": model.image_parameters(), "lr": 3e-3},
                                   {"params": model.text_parameters(), "lr": 1e-4}])
    losses = []
    for _ in range(30):
        loss = model.contrastive_loss(*model(images, captions))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
