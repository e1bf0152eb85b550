"""Evaluation of a model folder against held-out real slices: realism, grey levels, texture, diversity,
prompt adherence, latent space and privacy, each beside the real-vs-real reference (`evaluate`)."""

from dallebrain.evaluation.run import evaluate

__all__ = ["evaluate"]
