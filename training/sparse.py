"""Sparse linear regression (Chen, Zhao, Zou 2024): cached algorithm comparisons."""

from __future__ import annotations

from theory.algorithms.tuning import SparseComparison, compare_sparse_methods
from training.cache import cached


def comparison(config: SparseComparison, recompute: bool = False) -> dict:
    """:func:`theory.algorithms.tuning.compare_sparse_methods`, cached under the config's hash."""
    return cached(config, lambda: compare_sparse_methods(config), recompute=recompute)
