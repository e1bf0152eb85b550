"""Dall-e Brain: text-prompted synthetic healthy brain MRI, and the toolkit to build it."""

from dallebrain._env import configure_offline
from dallebrain._version import __version__  # noqa: F401 - the package version

configure_offline()


def load_pipeline(*args, **kwargs):
    """See dallebrain.api.load_pipeline (imported lazily: `import dallebrain` stays instant)."""
    from dallebrain.api import load_pipeline as _load

    return _load(*args, **kwargs)
