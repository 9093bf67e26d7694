"""Data: reading cases (NIfTI / nnU-Net / Decathlon / Synapse / ACDC / demo atlas), checking
datasets, splitting by case and serving slices or patches to PyTorch.

A case in memory is a :class:`Volume` (image (C, *spatial) float32, label (*spatial) int64,
affine (4, 4)); bad input raises :class:`DataError` naming the file, the problem and the fix.
"""

from . import nnunet  # noqa: F401  (registers the nnunet and msd formats)
from .acdc import (
    ACDC_CLASSES,
    acdc_patient_of,
    load_acdc_slice,
    load_acdc_slices,
    load_acdc_volume,
    load_acdc_volumes,
    read_acdc_list,
)
from .atlas_demo import (
    AAL_GROUPS,
    ATLAS_CLASSES,
    DEFAULT_TEMPLATE_DIR,
    aal_class_lut,
    downsample_volume,
    foreground_slice_range,
    group_aal_labels,
    load_atlas_demo,
    read_aal_table,
)
from .cases import CaseFiles, inspect_case, list_cases, load_case
from .check import Problem, check_dataset, format_problems
from .dataset_json import DatasetSpec, parse_dataset_json, read_dataset_json
from .datasets import PatchDataset, SliceDataset, item_seed
from .geometry import AxisMap, network_axes, plan_geometry, to_network
from .intensity import (
    INTENSITY_SCHEMES,
    apply_intensity,
    make_record,
    normalize_intensity,
    normalize_volume,
    raw_to_network,
)
from .nifti import (
    grid_problems,
    load_reference,
    read_nifti,
    try_read_nifti,
    write_array_like,
    write_label_like,
)
from .split import Split, load_split, save_split, split_cases, subset_counts
from .synapse import (
    BTCV_TO_SYNAPSE,
    SYNAPSE_CLASSES,
    diagonal_affine,
    load_synapse_slice,
    load_synapse_slices,
    load_synapse_volume,
    load_synapse_volumes,
    read_h5_arrays,
    read_list_file,
    read_synapse_list,
    remap_btcv_labels,
    synapse_case_of,
)
from .volume import Volume, display_path

__all__ = [
    # volume
    "Volume",
    "display_path",
    # nifti
    "read_nifti",
    "try_read_nifti",
    "load_reference",
    "write_label_like",
    "write_array_like",
    # nnU-Net / Decathlon
    "DatasetSpec",
    "CaseFiles",
    "read_dataset_json",
    "parse_dataset_json",
    "list_cases",
    "load_case",
    "inspect_case",
    "grid_problems",
    # check
    "Problem",
    "check_dataset",
    "format_problems",
    # Synapse
    "SYNAPSE_CLASSES",
    "BTCV_TO_SYNAPSE",
    "remap_btcv_labels",
    "read_list_file",
    "read_h5_arrays",
    "diagonal_affine",
    "synapse_case_of",
    "read_synapse_list",
    "load_synapse_slice",
    "load_synapse_slices",
    "load_synapse_volume",
    "load_synapse_volumes",
    # ACDC
    "ACDC_CLASSES",
    "acdc_patient_of",
    "read_acdc_list",
    "load_acdc_slice",
    "load_acdc_slices",
    "load_acdc_volume",
    "load_acdc_volumes",
    # split
    "Split",
    "split_cases",
    "subset_counts",
    "save_split",
    "load_split",
    # orientation and spacing
    "AxisMap",
    "network_axes",
    "plan_geometry",
    "to_network",
    # atlas demo
    "DEFAULT_TEMPLATE_DIR",
    "AAL_GROUPS",
    "ATLAS_CLASSES",
    "read_aal_table",
    "aal_class_lut",
    "group_aal_labels",
    "load_atlas_demo",
    "downsample_volume",
    "foreground_slice_range",
    # intensity
    "INTENSITY_SCHEMES",
    "apply_intensity",
    "normalize_intensity",
    "normalize_volume",
    "make_record",
    "raw_to_network",
    # datasets
    "item_seed",
    "SliceDataset",
    "PatchDataset",
]
