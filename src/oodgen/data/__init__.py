"""Data layer: IDX reading, checksummed datasets on a search path (downloaded when missing), synthetic OOD sets."""
from .datasets import (PAPER_SETTINGS, SETTINGS, ImageSet, available, load, load_real, ood_sets, resolve,
                       synthetic)
from .files import DataError, DatasetNotFoundError, cache_dir, locate, search_path
from .idx import IDXError, parse_idx, read_idx, write_idx
from .sources import ALL_SETS, SUBSETS, SYNTHETIC_SETS

__all__ = ["ALL_SETS", "PAPER_SETTINGS", "SETTINGS", "SUBSETS", "SYNTHETIC_SETS", "DataError",
           "DatasetNotFoundError", "IDXError", "ImageSet", "available", "cache_dir", "load", "load_real",
           "locate", "ood_sets", "parse_idx", "read_idx", "resolve", "search_path", "synthetic", "write_idx"]
