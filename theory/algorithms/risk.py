"""Closed-form excess risks of linear estimators (numpy only; standard results [reconstructed]).

Data: y = X w* + sigma * eps, eps ~ N(0, I_n), X (B, n, d) fixed; Sigma_hat = X^T X / n.
The conditional excess risk is E_eps |w_hat - w*|^2 (the excess prediction risk when
x ~ N(0, I_d)).  Both estimators below are linear in y, w_hat = M X^T y / n, so the risk is
|(M Sigma_hat - I) w*|^2 (bias) + (sigma^2 / n) tr(M Sigma_hat M^T) (variance).
"""

from __future__ import annotations

import numpy as np

from mechverify.theory.checks import check_array, check_int, check_real


def _spectrum(X, w_true, noise):
    X = check_array("X", X, ndim=3)
    w_true = check_array("w_true", w_true, shape=(X.shape[0], X.shape[2]))
    noise = check_real("noise", noise, nonnegative=True)
    n = X.shape[1]
    evals, evecs = np.linalg.eigh(np.einsum("bnd,bne->bde", X, X) / n)
    evals = np.clip(evals, 0.0, None)                 # round-off below 0 on rank-deficient X
    coef = np.einsum("bdk,bd->bk", evecs, w_true)     # w* in the eigenbasis of Sigma_hat
    return evals, coef, noise, n


def ridge_conditional_risk(X, w_true, noise: float, lam: float) -> np.ndarray:
    """E_eps |w_lam - w*|^2 = lam^2 w*^T (S + lam I)^{-2} w* + (sigma^2/n) tr(S (S + lam I)^{-2}): (B,)."""
    lam = check_real("lam", lam, positive=True)
    s, c, noise, n = _spectrum(X, w_true, noise)
    return np.sum(lam**2 * c**2 / (s + lam) ** 2, axis=1) + noise**2 / n * np.sum(s / (s + lam) ** 2, axis=1)


def gd_conditional_risk(X, w_true, noise: float, lr: float, steps: int) -> np.ndarray:
    """GD from 0 (step lr, t steps): w*^T (I - lr S)^{2t} w* + (sigma^2/n) tr(S^+ [I - (I - lr S)^t]^2): (B,)."""
    lr = check_real("lr", lr, positive=True)
    steps = check_int("steps", steps, minimum=0)
    s, c, noise, n = _spectrum(X, w_true, noise)
    shrink = (1.0 - lr * s) ** steps
    # S^+ with a rank cutoff relative to each prompt's largest eigenvalue (round-off on a
    # rank-deficient X is ~1e-16 of it); an absolute floor dropped real directions of a small X
    pinv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 1e-12 * s.max(axis=1, keepdims=True))
    return np.sum(shrink**2 * c**2, axis=1) + noise**2 / n * np.sum(pinv * (1.0 - shrink) ** 2, axis=1)


def ols_risk(n: int, d: int, noise: float) -> float:
    """E |w_OLS - w*|^2 = sigma^2 d / (n - d - 1) for x ~ N(0, I_d), n > d + 1 (E (X^T X)^{-1} = I/(n-d-1))."""
    n, d = check_int("n", n), check_int("d", d)
    noise = check_real("noise", noise, nonnegative=True)
    if n <= d + 1:
        raise ValueError(f"n must be > d + 1 = {d + 1} for a finite OLS risk; got {n}")
    return noise**2 * d / (n - d - 1)
