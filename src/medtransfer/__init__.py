"""medtransfer: how well do pretrained backbones transfer to your medical-imaging task?

Pipeline: data (manifests) -> splits -> extract (feature cache) -> probe / adapt -> results -> report.
Every CLI command is a thin wrapper over a function importable from here or from its stage package.
"""

from medtransfer.errors import MedtransferError

__version__ = "0.1.0"

__all__ = ["MedtransferError", "__version__"]
