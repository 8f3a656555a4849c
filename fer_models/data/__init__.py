"""Datasets: readers, the on-disk cache, the synthetic faces and the one loading entry point.

``fer_models.data.clips`` (real/pseudo clips) is imported from its module, not re-exported here:
it builds on :mod:`fer_models.data.samples`, which itself imports this package.
"""

from fer_models.data.cache import cached_load
from fer_models.data.ckplus import read_ckplus
from fer_models.data.combined import combine_stores, holdout_store, leave_out_group
from fer_models.data.errors import DatasetError
from fer_models.data.fer2013 import read_fer2013_csv, read_fer2013_folder
from fer_models.data.jaffe import read_jaffe
from fer_models.data.loading import DATA_FORMATS, load_dataset
from fer_models.data.manifest import read_manifest
from fer_models.data.sequences import read_sequences
from fer_models.data.store import SPLIT_NAMES, FaceStore
from fer_models.data.subjects import subject_split
from fer_models.data.synthetic import generate_synthetic

__all__ = [
    "FaceStore",
    "SPLIT_NAMES",
    "DatasetError",
    "DATA_FORMATS",
    "load_dataset",
    "generate_synthetic",
    "read_fer2013_csv",
    "read_fer2013_folder",
    "read_ckplus",
    "read_jaffe",
    "read_manifest",
    "read_sequences",
    "combine_stores",
    "leave_out_group",
    "holdout_store",
    "subject_split",
    "cached_load",
]
