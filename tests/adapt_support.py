"""Moved to ``medtransfer.testing.backbones`` (this name goes once every test imports it from there)."""

from medtransfer.testing.backbones import *  # noqa: F403
from medtransfer.testing.backbones import SIZE, TINY_CNN, TINY_OPEN_CLIP, TINY_TIMM, TINY_VIT, TinyCNN  # noqa: F401
