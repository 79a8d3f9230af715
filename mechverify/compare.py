"""Comparison helpers for claims: exact comparisons with a tolerance derived from the dtype and the
problem's scale, and a Monte Carlo check against k standard errors that reports its power.

Both return the numbers a claim records (``record_claim(result.error, result.tolerance,
detail=result.detail)``) and raise ``AssertionError`` with those numbers when the check fails.
numpy only; anything ``numpy.asarray`` accepts (a CPU torch tensor too) can be compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Closeness", "MonteCarlo", "assert_close", "mc_check", "power", "relative_error", "rounding_tolerance"]


def _array(name: str, value) -> np.ndarray:
    try:
        out = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be array-like; got {type(value).__name__}") from err
    if not (np.issubdtype(out.dtype, np.number) or out.dtype == bool):
        raise TypeError(f"{name} must be numeric; got dtype {out.dtype}")
    return out


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be finite and > 0; got {value}")
    return float(value)


def rounding_tolerance(dtype, *, scale: float = 1.0, ops: int = 1, safety: float = 8.0) -> float:
    """``safety * ops * eps(dtype) * scale``: the rounding budget of a result of magnitude
    ``scale`` computed through about ``ops`` dependent floating-point operations (a dot product of
    length k counts as k; L stacked layers multiply their counts).  Integer dtypes count as
    float64.  A bug shows up orders of magnitude above this; rounding stays below it."""
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype if np.issubdtype(dtype, np.inexact) else np.float64).eps)
    if isinstance(ops, bool) or not isinstance(ops, (int, np.integer)) or ops < 1:
        raise ValueError(f"ops must be an integer >= 1; got {ops!r}")
    return _positive("safety", safety) * int(ops) * eps * _positive("scale", scale)


def relative_error(actual, expected, scale: float | None = None) -> float:
    """``max |actual - expected| / scale`` with ``scale = 1 + max |expected|`` by default: a
    relative error that degrades to an absolute one near zero (NaN anywhere gives inf)."""
    a, e = _array("actual", actual), _array("expected", expected)
    if a.shape != e.shape:
        raise ValueError(f"actual and expected must have the same shape; got {a.shape} and {e.shape}")
    if a.size == 0:
        raise ValueError("actual and expected must not be empty")
    scale = 1.0 + float(np.abs(e).max()) if scale is None else _positive("scale", scale)
    diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    return math.inf if np.isnan(diff).any() else float(diff.max()) / scale


@dataclass(frozen=True)
class Closeness:
    """The result of :func:`assert_close`: the relative error and the tolerance it met."""

    error: float
    tolerance: float
    dtype: str
    ops: int

    @property
    def detail(self) -> dict:
        return {"dtype": self.dtype, "ops": self.ops}


def assert_close(actual, expected, *, ops: int = 1, safety: float = 8.0, dtype=None,
                 scale: float | None = None, record=None) -> Closeness:
    """Assert ``relative_error(actual, expected, scale) <= rounding_tolerance(dtype, ops=ops,
    safety=safety)``; ``dtype`` defaults to the coarser of the two arrays' dtypes, ``scale`` to
    ``1 + max |expected|`` (pass the magnitude of the intermediate values when they are larger).
    ``record`` (e.g. the ``record_claim`` fixture) is called with the numbers before the assertion,
    so a failing instance is the one the claims table reports."""
    a, e = _array("actual", actual), _array("expected", expected)
    if dtype is None:
        dtype = max((a.dtype, e.dtype), key=lambda t: np.finfo(t).eps if np.issubdtype(t, np.inexact) else 0.0)
    error = relative_error(a, e, scale)
    tol = rounding_tolerance(dtype, ops=ops, safety=safety)
    result = Closeness(error, tol, str(np.dtype(dtype)), int(ops))
    if record is not None:
        record(result.error, result.tolerance, detail=result.detail)
    if not error <= tol:
        raise AssertionError(f"relative error {error:.3g} > tolerance {tol:.3g} ({result.dtype}, ops={ops}, "
                             f"safety={safety})")
    return result


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def power(effect: float, se: float, k: float = 3.0) -> float:
    """Probability that a two-sided check ``|mean - target| <= k se`` rejects when the true mean
    is ``effect`` away from the target (normal approximation)."""
    se, k = _positive("se", se), _positive("k", k)
    shift = abs(float(effect)) / se
    return _phi(shift - k) + _phi(-shift - k)


@dataclass(frozen=True)
class MonteCarlo:
    """The result of :func:`mc_check`."""

    mean: float
    target: float
    se: float
    n: int
    k: float
    effect: float
    power: float

    @property
    def error(self) -> float:
        return abs(self.mean - self.target)

    @property
    def tolerance(self) -> float:
        return self.k * self.se

    @property
    def detail(self) -> dict:
        return {"mean": self.mean, "target": self.target, "se": self.se, "n": self.n, "k": self.k,
                "effect": self.effect, "power": self.power}


def mc_check(samples, target: float, *, effect: float, k: float = 3.0, min_power: float = 0.8,
             record=None) -> MonteCarlo:
    """Check that the mean of i.i.d. ``samples`` equals ``target`` within ``k`` standard errors.

    ``effect`` is the smallest deviation the check must detect (e.g. the gap a wrong formula
    would leave); the check first asserts its power against that deviation is at least
    ``min_power`` (an underpowered check could not fail), then asserts
    ``|mean - target| <= k se``.  For a paired comparison pass the differences and target 0.
    ``record`` (e.g. ``record_claim``) receives the numbers before either assertion."""
    x = _array("samples", samples).astype(np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"samples must hold at least 2 draws; got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError("samples must be finite")
    target = float(target)
    effect = _positive("effect", effect)
    k = _positive("k", k)
    if not 0 < min_power < 1:
        raise ValueError(f"min_power must be in (0, 1); got {min_power}")
    se = float(x.std(ddof=1)) / math.sqrt(x.size)
    if se == 0.0:
        se = math.ulp(max(abs(target), 1.0))     # constant samples: an exact comparison
    result = MonteCarlo(float(x.mean()), target, se, int(x.size), k, effect, power(effect, se, k))
    if record is not None:
        record(result.error, result.tolerance, detail=result.detail)
    if result.power < min_power:
        raise AssertionError(f"underpowered: power {result.power:.3f} < {min_power} against an effect of "
                             f"{effect:.3g} with n = {x.size} (se {se:.3g}); draw more samples")
    if not result.error <= result.tolerance:
        raise AssertionError(f"mean {result.mean:.6g} differs from {target:.6g} by {result.error:.3g} > "
                             f"{k:g} se = {result.tolerance:.3g} (n = {x.size})")
    return result
