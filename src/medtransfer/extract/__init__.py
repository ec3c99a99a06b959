"""Stage: run frozen backbones over the images once and fill the feature store."""

from medtransfer.device import resolve_device
from medtransfer.extract.pipeline import (
    ExtractOptions,
    ExtractResult,
    expand_backbones,
    extract_features,
    extract_many,
)
from medtransfer.extract.pixels import PixelCache, PixelCacheFolder, fill_pixel_cache, open_pixel_cache

__all__ = [
    "ExtractOptions",
    "ExtractResult",
    "PixelCache",
    "PixelCacheFolder",
    "expand_backbones",
    "extract_features",
    "extract_many",
    "fill_pixel_cache",
    "open_pixel_cache",
    "resolve_device",
]
