"""Compact sparse codes (re-exported from :mod:`hal.codes`, where the backends that produce
them can reach the type): ``k`` indices and ``k`` values per sample over ``n_atoms`` atoms."""
from hal.codes import SparseCodes, codes_to_dense

__all__ = ["SparseCodes", "codes_to_dense"]
