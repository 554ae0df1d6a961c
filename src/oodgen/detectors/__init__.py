"""OOD detectors, one method per module; every score is higher = more OOD."""
from .base import Detector, InputError, check_images, check_labels
from .oodgen import OODGen, nplus1_scores

__all__ = ["Detector", "InputError", "OODGen", "check_images", "check_labels", "nplus1_scores"]
