"""Reference in-context regression algorithms (numpy only), batched over prompts.

One convention for every regression claim of the package:

    L(w)      = (1/2n) sum_i (<w, x_i> - y_i)^2
    grad L(w) = (1/n) X^T (X w - y)
    GD        w_{t+1} = w_t - lr * grad L(w_t)
    PGD       w_{t+1} = w_t - A_t grad L(w_t)
    predict   <w_T, x_q>

Shapes: X (B, n, d), y (B, n), x_query (B, d) -> predictions (B,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from theory.checks import (check_array, check_int, check_preconditioners, check_real,
                           check_regression_batch)


def loss_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(1/n) X^T (X w - y) for each prompt: (B, d)."""
    n = X.shape[1]
    residual = np.einsum("bnd,bd->bn", X, w) - y
    return np.einsum("bnd,bn->bd", X, residual) / n


def _check_w0(w0, B: int, d: int) -> np.ndarray:
    if w0 is None:
        return np.zeros((B, d))
    w0 = check_array("w0", w0)
    if w0.shape == (d,):
        return np.broadcast_to(w0, (B, d)).copy()
    if w0.shape != (B, d):
        raise ValueError(f"w0 must have shape ({d},) or ({B}, {d}); got {w0.shape}")
    return w0.copy()


def gd_weights(X, y, lr: float, steps: int, w0=None) -> np.ndarray:
    """w_T after ``steps`` GD steps of size ``lr`` from w0 (default 0): (B, d)."""
    X = check_array("X", X, ndim=3)
    y = check_array("y", y, shape=X.shape[:2])
    lr = check_real("lr", lr)
    steps = check_int("steps", steps, minimum=0)
    w = _check_w0(w0, X.shape[0], X.shape[2])
    for _ in range(steps):
        w = w - lr * loss_gradient(X, y, w)
    return w


def gd_predict(X, y, x_query, lr: float, steps: int, w0=None) -> np.ndarray:
    """<w_T, x_q> after ``steps`` steps of gradient descent with step ``lr`` from w0."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    w = gd_weights(X, y, lr, steps, w0)
    return np.einsum("bd,bd->b", w, x_query)


def preconditioned_gd_predict(X, y, x_query, preconditioners: Sequence) -> np.ndarray:
    """<w_T, x_q> with w_{t+1} = w_t - A_t grad L(w_t), w_0 = 0; one SPD (d, d) A_t per step."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    d = X.shape[2]
    mats = check_preconditioners(preconditioners, d)
    w = np.zeros((X.shape[0], d))
    for A in mats:
        w = w - loss_gradient(X, y, w) @ A.T
    return np.einsum("bd,bd->b", w, x_query)


def gdpp_predict(X, y, x_query, lr: float, gamma: float, steps: int) -> np.ndarray:
    """GD++ (von Oswald et al.): each step first takes a GD step on the current inputs, then
    transforms every input, x <- (I - gamma * S) x with S = (1/n) X^T X of the current
    context inputs (our normalisation [reconstructed]); w_0 = 0.

    Written on the data (residuals r and inputs X), as the transformer sees them: the
    prediction is minus the query's residual slot.
    """
    X, y, x_query = check_regression_batch(X, y, x_query)
    lr = check_real("lr", lr)
    gamma = check_real("gamma", gamma)
    steps = check_int("steps", steps, minimum=0)
    n, d = X.shape[1], X.shape[2]
    Xc, r = X.copy(), y.copy()
    xq, rq = x_query.copy(), np.zeros(X.shape[0])
    for _ in range(steps):
        g = np.einsum("bnd,bn->bd", Xc, r) / n          # (1/n) X^T r = -grad L(w_t)
        S = np.einsum("bnd,bne->bde", Xc, Xc) / n
        r = r - lr * np.einsum("bnd,bd->bn", Xc, g)
        rq = rq - lr * np.einsum("bd,bd->b", xq, g)
        T = np.eye(d) - gamma * S
        Xc = np.einsum("bnd,bed->bne", Xc, T)
        xq = np.einsum("bd,bed->be", xq, T)
    return -rq


def ridge_weights(X, y, lam: float) -> np.ndarray:
    """argmin_w L(w) + (lam/2)|w|^2 = (X^T X / n + lam I)^{-1} X^T y / n: (B, d)."""
    X = check_array("X", X, ndim=3)
    y = check_array("y", y, shape=X.shape[:2])
    lam = check_real("lam", lam, nonnegative=True)
    n, d = X.shape[1], X.shape[2]
    gram = np.einsum("bnd,bne->bde", X, X) / n + lam * np.eye(d)
    rhs = np.einsum("bnd,bn->bd", X, y) / n
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def ridge_predict(X, y, x_query, lam: float) -> np.ndarray:
    """<w_lam, x_q> with w_lam = (X^T X/n + lam I)^{-1} X^T y/n (lam > 0)."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    check_real("lam", lam, positive=True)
    return np.einsum("bd,bd->b", ridge_weights(X, y, lam), x_query)


def ols_predict(X, y, x_query) -> np.ndarray:
    """<w_OLS, x_q>, w_OLS the minimum-norm least-squares solution (pseudo-inverse)."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    w = np.einsum("bdn,bn->bd", np.linalg.pinv(X), y)
    return np.einsum("bd,bd->b", w, x_query)


def _soft_threshold(v: np.ndarray, threshold) -> np.ndarray:
    """S_t(v) = sign(v) max(|v| - t, 0), entrywise (t broadcast over the last axis)."""
    return np.sign(v) * np.maximum(np.abs(v) - threshold, 0.0)


def lasso_weights(X, y, lam: float, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """argmin_w L(w) + lam |w|_1 by ISTA (proximal GD), per prompt: (B, d).

    Step eta = 1 / lambda_max(X^T X / n) of each prompt (the Lipschitz constant of grad L);
    w_{t+1} = S_{eta lam}(w_t - eta grad L(w_t)) from w_0 = 0, with S the soft threshold.
    A prompt stops when max_i |w_{t+1} - w_t| < tol; the others go on.  Raises RuntimeError
    (naming the prompts and their last step) if some prompt has not stopped after
    ``max_iter`` iterations; nothing is returned unconverged.
    """
    X = check_array("X", X, ndim=3)
    B, n, d = X.shape
    if B < 1 or n < 1 or d < 1:
        raise ValueError(f"X must have shape (B, n, d) with B, n, d >= 1; got {X.shape}")
    y = check_array("y", y, shape=(B, n))
    lam = check_real("lam", lam, nonnegative=True)
    tol = check_real("tol", tol, positive=True)
    max_iter = check_int("max_iter", max_iter)
    gram = np.einsum("bnd,bne->bde", X, X) / n
    rhs = np.einsum("bnd,bn->bd", X, y) / n
    top = np.linalg.eigvalsh(gram)[:, -1]
    if np.any(top <= 0):
        raise ValueError(f"X must not be all zeros in a prompt; prompts {np.flatnonzero(top <= 0)[:5].tolist()} are")
    eta = 1.0 / top
    w = np.zeros((B, d))
    active = np.arange(B)
    last_step = np.zeros(B)
    for _ in range(max_iter):
        wa = w[active]
        grad = np.matmul(gram[active], wa[..., None])[..., 0] - rhs[active]
        ea = eta[active, None]
        w_new = _soft_threshold(wa - ea * grad, ea * lam)
        step = np.abs(w_new - wa).max(axis=1)
        w[active] = w_new
        last_step[active] = step
        active = active[step >= tol]
        if active.size == 0:
            return w
    raise RuntimeError(f"lasso_weights: ISTA did not reach tol={tol:g} within max_iter={max_iter} "
                       f"for {active.size} of {B} prompts (e.g. prompt {int(active[0])}, last step "
                       f"{last_step[active[0]]:.3g}); raise max_iter or tol")


def lasso_predict(X, y, x_query, lam: float, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """<w_lasso, x_q> with w_lasso = argmin_w L(w) + lam |w|_1 (ISTA, see lasso_weights)."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    return np.einsum("bd,bd->b", lasso_weights(X, y, lam, tol, max_iter), x_query)
