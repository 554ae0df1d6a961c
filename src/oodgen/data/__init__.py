"""Data layer: IDX reading, checksummed datasets on a search path, synthetic OOD sets."""
from .datasets import (ALL_SETS, PAPER_SETTINGS, SETTINGS, SUBSETS, SYNTHETIC_SETS, DataError, ImageSet,
                       available, cache_dir, load, load_real, locate, ood_sets, search_path,
                       synthetic)
from .idx import IDXError, parse_idx, read_idx, write_idx

__all__ = ["ALL_SETS", "PAPER_SETTINGS", "SETTINGS", "SUBSETS", "SYNTHETIC_SETS", "DataError", "IDXError", "ImageSet",
           "available", "cache_dir", "load", "load_real", "locate", "ood_sets", "parse_idx",
           "read_idx", "search_path", "synthetic", "write_idx"]
