"""The paper's appendix-A toy: two classes on the unit sphere in 3-D, a vector CVAE with
Type I / Type II boundary outliers, the GAN confident-classifier baseline, a coverage
measure, and ``oodgen demo`` that runs it all and draws Figures 1b, 4 and 5."""
from .coverage import boundary_coverage
from .demo import BUDGETS, add_parser, run_demo
from .gan import ConfidentGAN
from .generator import VectorCVAE, fit_class_ellipsoids, train_vector_cvae, type1_samples, type2_samples
from .sphere import CAP_ANGLE_DEG, CENTRES, OOD_SETS, PointSet, in_distribution, ood_points

__all__ = ["BUDGETS", "CAP_ANGLE_DEG", "CENTRES", "ConfidentGAN", "OOD_SETS", "PointSet", "VectorCVAE",
           "add_parser", "boundary_coverage", "fit_class_ellipsoids", "in_distribution", "ood_points", "run_demo",
           "train_vector_cvae", "type1_samples", "type2_samples"]
