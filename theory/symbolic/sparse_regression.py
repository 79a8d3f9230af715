"""Derivations behind preprocess-then-optimize (Chen, Zhao, Zou 2024) [reconstructed].

* ``preconditioned_identity_residual``: r_hat * w_tilde_{t+1} = w_t - lr R^2 grad L(w_t)
  (R = diag(r_hat), w_t = r_hat * w_tilde_t): PtO is GD on raw features preconditioned by R^2.
* ``one_step_cubic_residual``: one PtO step from 0 gives w_1 = lr * r_hat^3 (entrywise).
* ``operator_schmidt_rank``: the rank of the Van Loan-Pitsianis realignment of a linear map
  on (D x D) matrices.  One attention head maps the context moment C to P C K: rank 1; the
  preprocessing map C -> sum_k e_{xt_k} C[y, x_k] e_{x_k}^T has rank d, so it needs d heads.

The sympy residuals are expanded expressions that must simplify to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy as sp

from mechverify.theory.checks import check_int


def _problem(n: int, d: int):
    X = sp.Matrix(n, d, lambda i, j: sp.Symbol(f"x_{i}_{j}"))
    y = sp.Matrix(n, 1, lambda i, _: sp.Symbol(f"y_{i}"))
    r = X.T * y / n
    return X, y, r, sp.diag(*r)


def preconditioned_identity_residual(n: int, d: int) -> sp.Matrix:
    """R w_tilde_1 - (w_0 - lr R^2 grad L(w_0)) for one GD step on X R from a symbolic w_tilde_0."""
    n, d = check_int("n", n), check_int("d", d)
    X, y, r, R = _problem(n, d)
    lr = sp.Symbol("lr")
    wt0 = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"wt_{i}"))
    Xt = X * R
    wt1 = wt0 - lr * Xt.T * (Xt * wt0 - y) / n
    w0 = R * wt0
    grad = X.T * (X * w0 - y) / n
    return (R * wt1 - (w0 - lr * R * R * grad)).applyfunc(sp.expand)


def one_step_cubic_residual(n: int, d: int) -> sp.Matrix:
    """R w_tilde_1 - lr r_hat^3 for one GD step on X R from w_tilde_0 = 0."""
    n, d = check_int("n", n), check_int("d", d)
    X, y, r, R = _problem(n, d)
    lr = sp.Symbol("lr")
    Xt = X * R
    wt1 = -lr * Xt.T * (-y) / n
    return (R * wt1 - lr * r.applyfunc(lambda v: v**3)).applyfunc(sp.expand)


def realignment(f: Callable[[np.ndarray], np.ndarray], D: int) -> np.ndarray:
    """The (D^2 x D^2) realigned matrix M[(a, c), (e, b)] = f(E_ce)[a, b] of a linear map f on
    D x D matrices; f(C) = P C K realigns to vec(P) vec(K)^T (rank 1)."""
    D = check_int("D", D)
    T = np.zeros((D, D, D, D))                     # T[a, b, c, e] = f(E_ce)[a, b]
    for c in range(D):
        for e in range(D):
            E = np.zeros((D, D))
            E[c, e] = 1.0
            T[:, :, c, e] = f(E)
    return T.transpose(0, 2, 3, 1).reshape(D * D, D * D)


def operator_schmidt_rank(f: Callable[[np.ndarray], np.ndarray], D: int, exact: bool = False) -> int:
    """Operator-Schmidt rank of f: sympy's exact rank (``exact=True``; integer-valued maps)
    or the number of singular values above 1e-10 times the largest."""
    M = realignment(f, D)
    if exact:
        return int(sp.Matrix(np.rint(M).astype(int)).rank())
    sv = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(sv > 1e-10 * sv[0])) if sv.size and sv[0] > 0 else 0
