"""Evaluation of a model folder against held-out real slices: realism, grey levels, texture, diversity,
prompt adherence, latent space and privacy, each beside the real-vs-real reference (`evaluate`).

The names below are imported on first use: `dallebrain evaluate --help` (which imports evaluation.cli, and so
this package) must not wait for torch."""

__all__ = ["EvaluationOptions", "evaluate"]


def __getattr__(name: str):
    if name == "evaluate":
        from dallebrain.evaluation.run import evaluate

        return evaluate
    if name == "EvaluationOptions":
        from dallebrain.evaluation.options import EvaluationOptions

        return EvaluationOptions
    raise AttributeError(f"module 'dallebrain.evaluation' has no attribute {name!r}")
