"""The benchmark's public data sets as presets: ``DATASETS`` maps a task name to its preset.

Adding a data set is one module with a ``DatasetPreset`` (its facts cited in the module docstring) and one line
below.
"""

from medtransfer.datasets.aiforcovid import AFC, AFC_M
from medtransfer.datasets.cocross import CC
from medtransfer.datasets.covid19_ar import CAR
from medtransfer.datasets.preset import DatasetPreset, Figures, PreparedDataset, PresetOverrides, prepare_dataset
from medtransfer.datasets.stony_brook import NY_ALL, NY_SMALL
from medtransfer.registry import Registry

DATASETS: Registry[DatasetPreset] = Registry("data set preset")
for _preset in (AFC, AFC_M, CAR, CC, NY_SMALL, NY_ALL):
    DATASETS.add(_preset)

__all__ = ["DATASETS", "DatasetPreset", "Figures", "PreparedDataset", "PresetOverrides", "prepare_dataset"]
