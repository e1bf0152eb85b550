"""Dall-e Brain: text-prompted synthetic healthy brain MRI, and the toolkit to build it."""

from dallebrain._env import configure_offline

configure_offline()

__version__ = "0.1.0"


def load_pipeline(*args, **kwargs):
    """See dallebrain.api.load_pipeline (imported lazily: `import dallebrain` stays instant)."""
    from dallebrain.api import load_pipeline as _load

    return _load(*args, **kwargs)
