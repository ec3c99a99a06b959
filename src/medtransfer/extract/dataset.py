"""The images of a manifest as backbone inputs; decode errors travel back as data, not worker tracebacks."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from medtransfer.backbones.registry import Preprocessing
from medtransfer.data.images import load_image
from medtransfer.errors import MedtransferError
from medtransfer.extract.preprocess import to_input


class ImageDataset(Dataset):
    """Item i -> (i, input tensor, error message or ""), so the main process can name the failing image."""

    def __init__(self, paths: list[str], rows: list[int], preprocessing: Preprocessing, *, force_dicom: bool = False):
        self.paths = paths
        self.rows = rows
        self.preprocessing = preprocessing
        self.force_dicom = force_dicom  # read DICOM files without the preamble / file meta (``--force-dicom``)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> tuple[int, torch.Tensor, str]:
        row = self.rows[item]
        try:
            return item, to_input(load_image(self.paths[row], force_dicom=self.force_dicom), self.preprocessing), ""
        except MedtransferError as exc:
            size = self.preprocessing.input_size
            return item, torch.zeros(3, size, size), str(exc)
