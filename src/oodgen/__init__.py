"""oodgen: out-of-distribution detection via generated boundary outliers (Vernekar et al. 2019)."""
__version__ = "0.1.0"
