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

from mechverify.theory.checks import (check_array, check_int, check_preconditioners, check_real,
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


def gd_iterates(X, y, lr, steps: int, w0=None):
    """Yield w_0, w_1, ..., w_steps of GD with step ``lr`` from w0 (default 0), each (B, d).

    ``lr`` is one real step size, or one per prompt (shape (B,))."""
    X = check_array("X", X, ndim=3)
    y = check_array("y", y, shape=X.shape[:2])
    if np.ndim(lr) == 0:
        lr = check_real("lr", lr)
    else:
        lr = check_array("lr", lr, shape=(X.shape[0],))[:, None]
    steps = check_int("steps", steps, minimum=0)
    w = _check_w0(w0, X.shape[0], X.shape[2])
    yield w
    for _ in range(steps):
        w = w - lr * loss_gradient(X, y, w)
        yield w


def gd_weights(X, y, lr, steps: int, w0=None) -> np.ndarray:
    """w_T after ``steps`` GD steps of size ``lr`` from w0 (default 0): (B, d)."""
    for w in gd_iterates(X, y, lr, steps, w0):
        pass
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


def ols_weights(X, y) -> np.ndarray:
    """w_OLS = X^+ y, the minimum-norm least-squares solution (pseudo-inverse): (B, d)."""
    X = check_array("X", X, ndim=3)
    y = check_array("y", y, shape=X.shape[:2])
    return np.einsum("bdn,bn->bd", np.linalg.pinv(X), y)


def ols_predict(X, y, x_query) -> np.ndarray:
    """<w_OLS, x_q> with w_OLS from :func:`ols_weights`."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    return np.einsum("bd,bd->b", ols_weights(X, y), x_query)


def _soft_threshold(v: np.ndarray, threshold) -> np.ndarray:
    """S_t(v) = sign(v) max(|v| - t, 0), entrywise (t broadcast over the last axis)."""
    return np.sign(v) * np.maximum(np.abs(v) - threshold, 0.0)


def _lasso_kkt_residual(gram: np.ndarray, rhs: np.ndarray, w: np.ndarray, lam: float) -> np.ndarray:
    """The optimality residual of each coordinate, dist(0, grad_k L(w) + lam d|w_k|): (B, d)."""
    grad = np.matmul(gram, w[..., None])[..., 0] - rhs
    return np.where(w != 0, np.abs(grad + lam * np.sign(w)), np.maximum(np.abs(grad) - lam, 0.0))


def _solve_each(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve of M x = b; a singular system gives a row of nan instead of an error."""
    try:
        return np.linalg.solve(M, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full(b.shape, np.nan)
        for i in range(M.shape[0]):
            try:
                out[i] = np.linalg.solve(M[i], b[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _active_set_candidate(gram: np.ndarray, rhs: np.ndarray, w: np.ndarray, lam: float) -> np.ndarray:
    """A guess of the Lasso optimum from the support A and signs s of w: v_A solves
    G_AA v_A = c_A - lam s_A, v = 0 off A; coordinates whose sign flips leave A and the
    solve is repeated (at most d times).  (B, d); a row of nan where some G_AA is singular.
    Only a guess: the caller checks the optimality conditions."""
    d = w.shape[1]
    on = w != 0
    target = np.where(on, rhs - lam * np.sign(w), 0.0)
    diag = np.arange(d)
    for _ in range(d):
        M = np.where(on[:, :, None] & on[:, None, :], gram, 0.0)
        M[:, diag, diag] += ~on                               # identity rows off A: v_k = 0
        v = _solve_each(M, np.where(on, target, 0.0))
        flipped = on & (np.sign(v) != np.sign(w)) & np.isfinite(v)
        if not flipped.any():
            break
        on &= ~flipped
    return v


def ista_weights(X, y, lam: float, steps: int, lr=None) -> np.ndarray:
    """Proximal gradient descent (ISTA) on L(w) + lam |w|_1, L(w) = |y - X w|^2 / (2n), from w = 0:
    w <- S_{lr lam}(w - lr grad L(w)), ``steps`` times; ``lr`` defaults to 1 / lambda_max(X^T X / n)
    per prompt (the step of the proximal-GD Lasso of Bai et al.).  (B, d)."""
    X = check_array("X", X, ndim=3)
    y = check_array("y", y, shape=X.shape[:2])
    lam = check_real("lam", lam, nonnegative=True)
    steps = check_int("steps", steps, minimum=0)
    n = X.shape[1]
    gram = np.einsum("bnd,bne->bde", X, X) / n
    rhs = np.einsum("bnd,bn->bd", X, y) / n
    if lr is None:
        lr = 1.0 / np.maximum(np.linalg.eigvalsh(gram)[:, -1], 1e-300)
    else:
        lr = np.full(X.shape[0], check_real("lr", lr, positive=True))
    lr = lr[:, None]
    w = np.zeros(rhs.shape)
    for _ in range(steps):
        w = _soft_threshold(w - lr * (np.matmul(gram, w[..., None])[..., 0] - rhs), lr * lam)
    return w


def lasso_weights(X, y, lam: float, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """argmin_w L(w) + lam |w|_1 per prompt: (B, d), by cyclic coordinate descent finished
    by an exact solve on the active set.

    With G = X^T X / n and c = X^T y / n, coordinate k is set to its exact minimiser given
    the others, w_k = S_lam(c_k - sum_{j != k} G_kj w_j) / G_kk (S the soft threshold; w_k = 0
    when column k of X is zero), for k = 1..d in turn, from w_0 = 0.  After every sweep in
    which a prompt's support and signs did not change, the optimum is guessed from them:
    v_A = G_AA^{-1} (c_A - lam sign(w_A)) on the support A, 0 elsewhere (coordinates whose
    sign flips dropped from A and the solve repeated); the guess is kept, and the prompt
    stops, if it satisfies the optimality (KKT) conditions within the bound below, which
    holds only for the right support and signs: the answer is then exact up to the linear
    solve.  Otherwise a prompt stops after the first sweep in which no coordinate moved by
    tol or more.  Either way every KKT residual dist(0, grad_k L(w) + lam d|w_k|) is at most
    tol * sum_{j != k} |G_kj| (after a converged sweep: the later coordinates of that sweep
    moved by < tol each).  Raises RuntimeError (naming the prompts and their last change)
    if some prompt has not stopped after ``max_iter`` sweeps; nothing is returned unconverged.
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
    diag = np.einsum("bkk->bk", gram)
    inv_diag = np.divide(1.0, diag, out=np.zeros_like(diag), where=diag > 0)
    bound = tol * (np.abs(gram).sum(axis=2) - np.abs(diag))         # (B, d) the KKT bound
    w = np.zeros((B, d))
    r = rhs.copy()                                                  # r = c - G w, kept up to date
    active = np.arange(B)
    change = np.zeros(B)
    for _ in range(max_iter):
        G, wa, ra, dg, idg = gram[active], w[active], r[active], diag[active], inv_diag[active]
        before = wa.copy()
        for k in range(d):
            old = wa[:, k].copy()
            v = ra[:, k] + dg[:, k] * old                           # c_k - sum_{j != k} G_kj w_j
            new = (v - np.minimum(np.maximum(v, -lam), lam)) * idg[:, k]   # soft threshold, / G_kk
            ra -= (new - old)[:, None] * G[:, k]                    # G symmetric: row k is column k
            wa[:, k] = new
        moved = np.abs(wa - before).max(axis=1)
        stopped = moved < tol
        try_exact = np.flatnonzero(np.all(np.sign(wa) == np.sign(before), axis=1))
        if try_exact.size:
            cand = _active_set_candidate(G[try_exact], rhs[active[try_exact]], wa[try_exact], lam)
            ok = np.all(_lasso_kkt_residual(G[try_exact], rhs[active[try_exact]], cand, lam)
                        <= bound[active[try_exact]], axis=1)        # False for a nan guess
            wa[try_exact[ok]] = cand[ok]
            stopped[try_exact[ok]] = True
        w[active], r[active], change[active] = wa, ra, moved
        active = active[~stopped]
        if active.size == 0:
            return w
    raise RuntimeError(f"lasso_weights: coordinate descent did not reach tol={tol:g} within "
                       f"max_iter={max_iter} sweeps for {active.size} of {B} prompts (e.g. prompt "
                       f"{int(active[0])}, last change {change[active[0]]:.3g}); raise max_iter or tol")


def lasso_predict(X, y, x_query, lam: float, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """<w_lasso, x_q> with w_lasso = argmin_w L(w) + lam |w|_1 (coordinate descent, see lasso_weights)."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    return np.einsum("bd,bd->b", lasso_weights(X, y, lam, tol, max_iter), x_query)


def correlation(X, y) -> np.ndarray:
    """r_hat = (1/n) X^T y for each prompt: (B, d).  E r_hat = w* for x ~ N(0, I_d)."""
    X = check_array("X", X, ndim=3)
    y = check_array("y", y, shape=X.shape[:2])
    return np.einsum("bnd,bn->bd", X, y) / X.shape[1]


def pto_iterates(X, y, lr, steps: int):
    """Preprocess-then-optimize [reconstructed] (Chen, Zhao, Zou 2024), as raw-feature weights.

    Preprocess x_tilde = r_hat * x (r_hat = (1/n) X^T y, the same map for the query), then GD
    of step ``lr`` (> 0; one value or one per prompt) from 0 on L(w_tilde) with inputs
    x_tilde.  Yields w_t = r_hat * w_tilde_t, t = 0..steps, so <w_t, x_q> = <w_tilde_t, r_hat * x_q>.
    """
    r = correlation(X, y)
    if np.ndim(lr) == 0:
        check_real("lr", lr, positive=True)
    elif np.any(np.asarray(lr) <= 0):
        raise ValueError("lr must be > 0 for every prompt")
    for w_tilde in gd_iterates(X * r[:, None, :], y, lr, steps):
        yield r * w_tilde


def pto_weights(X, y, lr, steps: int) -> np.ndarray:
    """w_T = r_hat * w_tilde_T of :func:`pto_iterates`: (B, d)."""
    for w in pto_iterates(X, y, lr, steps):
        pass
    return w


def pto_predict(X, y, x_query, lr, steps: int) -> np.ndarray:
    """<w_tilde_T, r_hat * x_q>: the PtO prediction after ``steps`` GD steps of size ``lr``."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    return np.einsum("bd,bd->b", pto_weights(X, y, lr, steps), x_query)
