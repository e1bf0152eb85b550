"""Dall-e Brain: text-prompted synthetic healthy brain MRI, and the toolkit to build it."""

from dallebrain._env import configure_offline

configure_offline()

__version__ = "0.1.0"
