"""Brain-CLIP as a zero-shot classifier of contrast and plane: an image embedding's nearest class text (CLIP's
prompt ensembles: each class text averaged over a few phrasings). Used to report Brain-CLIP's own accuracy in
training (training/clip.py) and to say what an unCLIP variation kept of its source (pipelines/variation_check.py).
"""

from __future__ import annotations

import torch

CONTRAST_PROMPTS = {"T1w": "T1-weighted", "T2w": "T2-weighted", "PDw": "PD-weighted", "FLAIR": "FLAIR"}
ORIENTATION_PROMPTS = {"axial": "axial", "coronal": "coronal", "sagittal": "sagittal"}
# Zero-shot class embeddings average a few phrasings, as CLIP's prompt ensembles do.
PROMPT_TEMPLATES = ("{} brain MRI", "{} MRI slice of a healthy brain", "a {} slice of the brain")


@torch.no_grad()
def class_embeddings(model, names: dict[str, str]) -> torch.Tensor:
    """(classes, D) unit text embeddings of each class's phrasings, averaged."""
    rows = []
    for label in names.values():
        e = model.encode_text([t.format(label) for t in PROMPT_TEMPLATES]).mean(0)
        rows.append(torch.nn.functional.normalize(e, dim=0))
    return torch.stack(rows)


@torch.no_grad()
def zero_shot(model, image_embeds: torch.Tensor) -> tuple[list[str], list[str]]:
    """The contrast and plane Brain-CLIP reads in each of (n, D) unit image embeddings."""
    out = []
    for names in (CONTRAST_PROMPTS, ORIENTATION_PROMPTS):
        scores = image_embeds.float() @ class_embeddings(model, names).float().t().to(image_embeds.device)
        out.append([list(names)[i] for i in scores.argmax(1).tolist()])
    return out[0], out[1]
