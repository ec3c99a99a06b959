"""Backbone families, one file each, every file registering its entries with ``backbones.registry.register``;
importing this package imports every file (``medtransfer.registry.import_entries``)."""

from medtransfer.registry import import_entries

# the order ``medtransfer backbones`` lists them: ImageNet CNNs, the foundation ViTs, the medical CLIPs, then the
# open timm / open_clip / Hugging Face specs; a family not named here comes after these, by file name
ORDER = ("torchvision_cnns", "hf_vits", "open_clip_models", "medclip", "mae", "open_specs")
import_entries(__name__, __path__, ORDER)
