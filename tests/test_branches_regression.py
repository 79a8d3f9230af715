"""Branches of the regression references (``theory/algorithms/regression.py``) that the
claims reach only through an aggregate, or not at all (found by ``make mutation``).

Each reference is checked against a plain per-prompt implementation of its formula (loops
and ``np.linalg``, no einsum), on instances where the branch matters: a per-prompt step
size, a per-prompt start w0, preconditioners that differ per step (their order matters),
GD++ with gamma != 0 and more than one step, an all-zero feature column for the Lasso.
"""

import numpy as np
import pytest

from mechverify.theory.algorithms.regression import (correlation, gd_iterates, gd_predict, gd_weights,
                                                     gdpp_predict, lasso_predict, lasso_weights,
                                                     loss_gradient, ols_predict, ols_weights,
                                                     preconditioned_gd_predict, pto_predict,
                                                     pto_weights, ridge_predict, ridge_weights)

TOL = 1e-12


def _instance(B=3, n=7, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, d))
    y = rng.standard_normal((B, n))
    xq = rng.standard_normal((B, d))
    return X, y, xq


def _grad(X, y, w):  # one prompt: (1/n) X^T (X w - y)
    return X.T @ (X @ w - y) / len(y)


def test_loss_gradient_formula():
    X, y, _ = _instance()
    w = np.random.default_rng(1).standard_normal((3, 4))
    expected = np.stack([_grad(X[b], y[b], w[b]) for b in range(3)])
    np.testing.assert_allclose(loss_gradient(X, y, w), expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("w0_shape", ["none", "shared", "per-prompt"])
def test_gd_from_w0_with_per_prompt_steps(w0_shape):
    X, y, xq = _instance()
    rng = np.random.default_rng(2)
    lr = np.array([0.1, 0.3, 0.05])
    w0 = {"none": None, "shared": rng.standard_normal(4), "per-prompt": rng.standard_normal((3, 4))}[w0_shape]
    steps = 3
    preds, finals = [], []
    for b in range(3):
        w = np.zeros(4) if w0 is None else (w0 if w0.ndim == 1 else w0[b]).copy()
        for _ in range(steps):
            w = w - lr[b] * _grad(X[b], y[b], w)
        finals.append(w)
        preds.append(w @ xq[b])
    np.testing.assert_allclose(gd_weights(X, y, lr, steps, w0), np.stack(finals), rtol=0, atol=TOL)
    np.testing.assert_allclose(gd_predict(X, y, xq, lr, steps, w0), preds, rtol=0, atol=TOL)
    iterates = list(gd_iterates(X, y, lr, steps, w0))
    assert len(iterates) == steps + 1
    if w0 is not None:  # the start is w0 itself, not a view that later steps overwrite
        np.testing.assert_array_equal(iterates[0], np.broadcast_to(w0, (3, 4)))


def test_preconditioners_apply_in_order():
    X, y, xq = _instance()
    rng = np.random.default_rng(3)
    mats = []
    for _ in range(3):
        M = rng.standard_normal((4, 4))
        mats.append(M @ M.T / 4 + 0.5 * np.eye(4))
    expected = []
    for b in range(3):
        w = np.zeros(4)
        for A in mats:
            w = w - A @ _grad(X[b], y[b], w)
        expected.append(w @ xq[b])
    np.testing.assert_allclose(preconditioned_gd_predict(X, y, xq, mats), expected, rtol=0, atol=TOL)
    reversed_pred = preconditioned_gd_predict(X, y, xq, mats[::-1])
    assert np.max(np.abs(reversed_pred - np.array(expected))) > 1e-6  # the order matters here


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_gdpp_per_prompt_recursion(gamma):
    """GD++ written on the weights: w <- w + lr X^T r / n, then the inputs (context and
    query) move by x <- (I - gamma S) x with S = X^T X / n of the current inputs; the
    prediction is the running sum of the query's updates."""
    X, y, xq = _instance()
    lr, steps = 0.2, 3
    expected = []
    for b in range(3):
        Xc, r, q, pred = X[b].copy(), y[b].copy(), xq[b].copy(), 0.0
        n = len(r)
        for _ in range(steps):
            g = Xc.T @ r / n
            S = Xc.T @ Xc / n
            r = r - lr * Xc @ g
            pred = pred + lr * q @ g
            T = np.eye(4) - gamma * S
            Xc = Xc @ T.T
            q = T @ q
        expected.append(pred)
    got = gdpp_predict(X, y, xq, lr, gamma, steps)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    if gamma == 0:
        np.testing.assert_allclose(got, gd_predict(X, y, xq, lr, steps), rtol=0, atol=TOL)


def test_ridge_normal_equations_and_ols_limits():
    X, y, xq = _instance(n=9)
    lam = 0.7
    w = ridge_weights(X, y, lam)
    for b in range(3):
        lhs = (X[b].T @ X[b] / 9 + lam * np.eye(4)) @ w[b]
        np.testing.assert_allclose(lhs, X[b].T @ y[b] / 9, rtol=0, atol=TOL)
    np.testing.assert_allclose(ridge_predict(X, y, xq, lam), np.einsum("bd,bd->b", w, xq), rtol=0, atol=TOL)
    # lam = 0 and n > d: ridge is the least-squares solution
    np.testing.assert_allclose(ridge_weights(X, y, 0.0), ols_weights(X, y), rtol=0, atol=1e-10)


def test_ols_minimum_norm_when_underdetermined():
    X, y, xq = _instance(n=3, d=5)
    w = ols_weights(X, y)
    for b in range(3):
        np.testing.assert_allclose(X[b] @ w[b], y[b], rtol=0, atol=1e-10)   # interpolates
        coef = np.linalg.lstsq(X[b].T, w[b], rcond=None)[0]                  # w in the row space
        np.testing.assert_allclose(X[b].T @ coef, w[b], rtol=0, atol=1e-10)
    np.testing.assert_allclose(ols_predict(X, y, xq), np.einsum("bd,bd->b", w, xq), rtol=0, atol=TOL)


def _lasso_kkt(X, y, w, lam, atol):
    n = len(y)
    grad = X.T @ (X @ w - y) / n
    for k in range(len(w)):
        if w[k] != 0:
            assert abs(grad[k] + lam * np.sign(w[k])) <= atol
        else:
            assert abs(grad[k]) <= lam + atol


def test_lasso_kkt_with_a_zero_column():
    X, y, xq = _instance(n=12, d=5)
    X[:, :, 2] = 0.0                       # no information on coordinate 2: w_2 must be 0
    y = y + 3 * X[:, :, 0]                 # one large coefficient that survives the threshold
    lam = 0.05
    w = lasso_weights(X, y, lam, tol=1e-13)
    assert np.all(w[:, 2] == 0)
    assert np.all(np.abs(w[:, 0]) > 1)     # the soft threshold keeps the sign and shrinks by lam/G_kk
    for b in range(3):
        _lasso_kkt(X[b], y[b], w[b], lam, atol=1e-9)
    np.testing.assert_allclose(lasso_predict(X, y, xq, lam, tol=1e-13), np.einsum("bd,bd->b", w, xq),
                               rtol=0, atol=TOL)
    # lam = 0 with n > d on the informative columns: least squares
    Xf, yf, _ = _instance(n=12, d=3, seed=4)
    np.testing.assert_allclose(lasso_weights(Xf, yf, 0.0, tol=1e-14), ols_weights(Xf, yf), rtol=0, atol=1e-9)


def test_lasso_large_penalty_is_zero_and_unconverged_raises():
    X, y, _ = _instance(n=10, d=3)
    lam = 1.01 * np.max(np.abs(np.einsum("bnd,bn->bd", X, y) / 10))
    np.testing.assert_array_equal(lasso_weights(X, y, lam), 0.0)
    with pytest.raises(RuntimeError, match="max_iter=1"):
        lasso_weights(X, y, 1e-3, tol=1e-12, max_iter=1)


def test_lasso_prompts_stop_independently():
    """A prompt that converged keeps its weights while the others continue."""
    X, y, _ = _instance(B=4, n=10, d=3)
    X[0] *= 1e-3                      # a prompt whose coordinates barely move
    both = lasso_weights(X, y, 0.01, tol=1e-12)
    for b in range(4):
        np.testing.assert_allclose(both[b], lasso_weights(X[b:b + 1], y[b:b + 1], 0.01, tol=1e-12)[0],
                                   rtol=0, atol=1e-10)


def test_correlation_and_pto_formula():
    X, y, xq = _instance()
    r = correlation(X, y)
    np.testing.assert_allclose(r, np.stack([X[b].T @ y[b] / 7 for b in range(3)]), rtol=0, atol=TOL)
    lr = np.array([0.5, 0.2, 0.1])
    steps = 2
    expected_w, expected_pred = [], []
    for b in range(3):
        Xt = X[b] * r[b]
        wt = np.zeros(4)
        for _ in range(steps):
            wt = wt - lr[b] * _grad(Xt, y[b], wt)
        expected_w.append(r[b] * wt)
        expected_pred.append(wt @ (r[b] * xq[b]))
    np.testing.assert_allclose(pto_weights(X, y, lr, steps), np.stack(expected_w), rtol=0, atol=TOL)
    np.testing.assert_allclose(pto_predict(X, y, xq, lr, steps), expected_pred, rtol=0, atol=TOL)


@pytest.mark.parametrize("lr", [0.0, -0.1, np.array([0.1, 0.0, 0.2]), np.array([0.1, -1.0, 0.2])])
def test_pto_rejects_nonpositive_steps(lr):
    X, y, _ = _instance()
    with pytest.raises(ValueError, match="lr"):
        pto_weights(X, y, lr, 1)


def test_zero_steps_return_the_start():
    X, y, xq = _instance()
    w0 = np.random.default_rng(5).standard_normal(4)
    np.testing.assert_array_equal(gd_predict(X, y, xq, 0.1, 0, w0), xq @ w0)
    np.testing.assert_array_equal(gdpp_predict(X, y, xq, 0.1, 0.3, 0), 0.0)
    np.testing.assert_array_equal(pto_weights(X, y, 0.1, 0), 0.0)
