"""Data: reading cases (NIfTI / nnU-Net / Decathlon / Synapse / ACDC / demo atlas), checking
datasets, splitting by case and serving slices or patches to PyTorch.

A case in memory is a :class:`Volume` (image (C, *spatial) float32, label (*spatial) int64,
affine (4, 4)); bad input raises :class:`morse.errors.DataError` naming the file, the problem
and the fix. The names below are the front door; everything else is imported from its module
(e.g. :mod:`morse.data.files` for NIfTI file names, :mod:`morse.data.nifti` for grids and label
maps, :mod:`morse.data.synapse` for the Synapse readers).

Importing this package registers every data format (each module registers its own).
"""

from . import acdc, atlas_demo, mni_tissue, nnunet, synapse  # noqa: F401  (each registers its format)
from .atlas_demo import load_atlas_demo
from .cases import list_cases, load_case
from .check import Problem, check_dataset, format_problems
from .dataset_json import read_dataset_json
from .datasets import PatchDataset, SliceDataset
from .formats import DataFormat, Loaded, available_formats, register_format
from .nifti import read_nifti, write_array_like, write_label_like
from .split import Split, split_cases
from .volume import Volume

__all__ = [
    "Volume",
    # NIfTI files and nnU-Net / Decathlon folders
    "read_nifti",
    "write_label_like",
    "write_array_like",
    "read_dataset_json",
    "list_cases",
    "load_case",
    "check_dataset",
    "Problem",
    "format_problems",
    # formats
    "DataFormat",
    "Loaded",
    "register_format",
    "available_formats",
    "load_atlas_demo",
    # splits and PyTorch datasets
    "Split",
    "split_cases",
    "SliceDataset",
    "PatchDataset",
]
