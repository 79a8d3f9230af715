"""Argument validation shared by every public function of the package.

Each check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) whose message
starts with the parameter's name and states the rule, e.g.
``"d must be an integer >= 1; got 0"``.  Nothing is clipped or broadcast silently.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_int(name: str, value, minimum: int = 1) -> int:
    """An integer (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def check_real(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite real number, optionally > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def check_array(name: str, value, ndim: int | None = None, shape: tuple | None = None) -> np.ndarray:
    """A finite float64 array of the given rank/shape (``None`` entries in ``shape`` are free)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real array; got {type(value).__name__}") from err
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


def check_spd(name: str, value, d: int | None = None, rtol: float = 1e-10) -> np.ndarray:
    """A symmetric positive-definite ``(d, d)`` matrix."""
    arr = check_array(name, value, ndim=2, shape=(d, d) if d is not None else None)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square; got shape {arr.shape}")
    scale = max(1.0, float(np.max(np.abs(arr))) if arr.size else 1.0)
    if not np.allclose(arr, arr.T, rtol=0.0, atol=rtol * scale):
        raise ValueError(f"{name} must be symmetric; max |A - A^T| = {np.max(np.abs(arr - arr.T)):.3g}")
    eig_min = float(np.linalg.eigvalsh(arr)[0]) if arr.size else 1.0
    if eig_min <= 0:
        raise ValueError(f"{name} must be positive definite; smallest eigenvalue {eig_min:.3g}")
    return arr


def check_preconditioners(preconditioners, d: int | None = None) -> list[np.ndarray]:
    """A non-empty sequence of SPD (d, d) matrices, one per step (d taken from the first
    matrix when not given)."""
    if isinstance(preconditioners, (str, bytes)) or (
            isinstance(preconditioners, np.ndarray) and preconditioners.ndim != 3):
        raise TypeError("preconditioners must be a sequence of (d, d) matrices, one per step; "
                        f"got {type(preconditioners).__name__} of shape {np.shape(preconditioners)}")
    try:
        mats = list(preconditioners)
    except TypeError as err:
        raise TypeError("preconditioners must be a sequence of (d, d) matrices") from err
    mats = [check_array(f"preconditioners[{t}]", A, ndim=2) for t, A in enumerate(mats)]
    if not mats:
        raise ValueError("preconditioners must hold at least one matrix (one per step)")
    if d is None:
        d = mats[0].shape[0]
    return [check_spd(f"preconditioners[{t}]", A, d) for t, A in enumerate(mats)]


def check_regression_batch(X, y, x_query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes (B, n, d), (B, n), (B, d), finite."""
    X = check_array("X", X, ndim=3)
    B, n, d = X.shape
    if B < 1 or n < 1 or d < 1:
        raise ValueError(f"X must have shape (B, n, d) with B, n, d >= 1; got {X.shape}")
    y = check_array("y", y, shape=(B, n))
    x_query = check_array("x_query", x_query, shape=(B, d))
    return X, y, x_query
