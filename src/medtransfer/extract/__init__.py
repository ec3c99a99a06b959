"""Stage: run frozen backbones over the images once and fill the feature store."""

from medtransfer.extract.pipeline import ExtractResult, extract_features, resolve_device

__all__ = ["ExtractResult", "extract_features", "resolve_device"]
