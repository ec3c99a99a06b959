"""Manifests, image decoding and the synthetic demo data set."""

from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest, load_manifest

__all__ = ["Manifest", "load_image", "load_manifest"]
