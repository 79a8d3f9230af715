"""Hypothesis strategies shared by the claims: small integers -> seeded numpy instances.

Draw dimensions, lengths and seeds (readable when a failure shrinks) and build arrays
from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from mechverify.theory.tasks.regression import sample_regression

dims = st.integers(min_value=1, max_value=10)
lengths = st.integers(min_value=1, max_value=40)
depths = st.integers(min_value=1, max_value=8)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def to_torch(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def random_spd(rng: np.random.Generator, d: int, cond: float = 10.0) -> np.ndarray:
    """A random SPD matrix with eigenvalues in [1/cond, 1] (random orthogonal eigenbasis)."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = np.exp(rng.uniform(-np.log(cond), 0.0, size=d))
    return (Q * eig) @ Q.T


def regression_prompts(seed: int, n: int, d: int, batch: int = 4, noise: float = 0.1):
    """A small batch of Gaussian regression prompts with noise."""
    return sample_regression(batch, n, d, noise=noise, seed=seed)


def stable_lr(X: np.ndarray, fraction: float) -> float:
    """A step size ``fraction / lambda_max`` of the batch's largest empirical covariance."""
    S = np.einsum("bnd,bne->bde", X, X) / X.shape[1]
    return fraction / max(float(np.linalg.eigvalsh(S).max()), 1e-3)


def problem_scale(*arrays) -> float:
    """1 + the largest magnitude in ``arrays``: the scale of float64 exact tolerances."""
    return 1.0 + max(float(np.abs(a).max()) for a in arrays)


# --- statistical verdicts -------------------------------------------------------------------
# A Monte Carlo claim asserts its deviation against Z_ALARM standard errors (two-sided false
# alarm 6e-5 per check, so seeds 1..20 over every check stay below a few per cent in all) and
# checks its power: a true deviation of the spec's tolerance would exceed the Z_ALARM band with
# probability >= 95% only if (Z_ALARM + Z_POWER) SE <= tolerance.
Z_ALARM = 4.0
Z_POWER = 1.645


def mean_se(values) -> tuple[float, float]:
    """Sample mean and its standard error."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def se_verdict(deviation: float, se: float, tolerance: float) -> dict:
    """{"z", "se", "powered", "consistent"}: ``consistent`` when |deviation| <= Z_ALARM SE,
    ``powered`` when (Z_ALARM + Z_POWER) SE <= ``tolerance`` (the spec's tolerance would be seen)."""
    z = abs(float(deviation)) / float(se) if se > 0 else (0.0 if deviation == 0 else np.inf)
    return {"z": float(z), "se": float(se), "powered": bool((Z_ALARM + Z_POWER) * se <= tolerance),
            "consistent": bool(z <= Z_ALARM)}


def mixed_seed(seed: int, instance_seed: int) -> int:
    """A 32-bit seed from a hypothesis-drawn ``seed`` and the ``instance_seed`` fixture: the
    first hypothesis example (always the minimal one, seed 0) still draws new instances for
    every --hypothesis-seed."""
    return int(np.random.SeedSequence([int(seed), int(instance_seed)]).generate_state(1)[0])
