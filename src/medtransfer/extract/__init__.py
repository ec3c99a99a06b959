"""Stage: run frozen backbones over the images once and fill the feature store."""

from medtransfer.device import resolve_device
from medtransfer.extract.pipeline import (
    ExtractResult,
    expand_backbones,
    extract_features,
    extract_many,
)
from medtransfer.extract.pixels import PixelCache, fill_pixel_cache, open_pixel_cache

__all__ = [
    "ExtractResult",
    "PixelCache",
    "expand_backbones",
    "extract_features",
    "extract_many",
    "fill_pixel_cache",
    "open_pixel_cache",
    "resolve_device",
]
