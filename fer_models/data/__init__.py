"""Datasets: readers, the on-disk cache, the synthetic faces and the one loading entry point."""

from fer_models.data.cache import cached_load
from fer_models.data.errors import DatasetError
from fer_models.data.fer2013 import read_fer2013_csv, read_fer2013_folder
from fer_models.data.loading import load_dataset
from fer_models.data.store import SPLIT_NAMES, FaceStore
from fer_models.data.synthetic import generate_synthetic

__all__ = [
    "FaceStore",
    "SPLIT_NAMES",
    "DatasetError",
    "load_dataset",
    "generate_synthetic",
    "read_fer2013_csv",
    "read_fer2013_folder",
    "cached_load",
]
