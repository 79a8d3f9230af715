"""Claims: preprocess-then-optimize in linear attention, exact part (docs/sparse_regression.md §3-4, §7).

Everything here is our reconstruction of Chen, Zhao, Zou (2024): the paper's exact
preprocessing map and weights were not available (docs/sparse_regression.md §9)."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from mechverify.constructions.sparse_regression import (fit_preprocessing_heads, preprocessing_target, pto_layout,
                                             pto_transformer, summed_head_layer)
from mechverify.theory.algorithms.regression import correlation, loss_gradient, pto_iterates, pto_predict, pto_weights
from mechverify.theory.symbolic.sparse_regression import (one_step_cubic_residual, operator_schmidt_rank,
                                 preconditioned_identity_residual, realignment)
from mechverify.theory.tasks.regression import sample_regression
from verify.instances import depths, dims, lengths, problem_scale, seeds, stable_lr, to_torch

EPS = 1e-12  # float64 exact claims: EPS * (problem scale)
PAPER = "chen-zhao-zou-2024"


def _sparse_prompts(seed: int, n: int, d: int, batch: int = 4):
    return sample_regression(batch, n, d, sparsity=min(2, d), noise=0.5, seed=seed)


@pytest.mark.claim(id="pto/construction-exact", paper=PAPER, provenance="reconstructed", kind="exact")
@given(d=dims, n=lengths, T=st.integers(0, 8), seed=seeds, twentieths=st.integers(1, 20))
def test_construction_exact(record_claim, d, n, T, seed, twentieths):
    """Layer 1 writes r_hat * x into xt; after T GD layers the prediction is pto_predict's and
    the context y-slots hold the residuals y_j - <w_tilde_T, x_tilde_j>."""
    b = _sparse_prompts(seed, n, d)
    r = correlation(b.X, b.y)
    lr = stable_lr(b.X * r[:, None, :], twentieths / 20)
    model = pto_transformer(d, T, lr)
    layout = model.layout
    with torch.no_grad():
        _, states = model(model.embed(*to_torch(b.X, b.y, b.x_query)), return_all=True)
    Z1, Z = states[1].numpy(), states[-1].numpy()
    pred = -Z[:, -1, layout.index("y")]
    ref = pto_predict(b.X, b.y, b.x_query, lr, T)
    w = pto_weights(b.X, b.y, lr, T)
    residuals = b.y - np.einsum("bnd,bd->bn", b.X, w)           # <w_tilde, x_tilde> = <w, x>
    xt = np.concatenate([b.X, b.x_query[:, None]], axis=1) * r[:, None, :]
    err = max(np.abs(pred - ref).max(), np.abs(Z[:, :n, layout.index("y")] - residuals).max(),
              np.abs(Z1[..., layout.slice("xt")] - xt).max())
    tol = EPS * problem_scale(ref, b.y, xt)
    record_claim(err, tol, detail={"d": d, "n": n, "T": T, "lr": lr})
    assert err <= tol


def _preprocessing_map(d: int):
    """C -> the layer-1 update's matrix: xt_k row, x_k column gets C[y, x_k]."""
    layout = pto_layout(d)
    y, xt = layout.index("y"), layout.slice("xt").start

    def f(C):
        M = np.zeros_like(C)
        for k in range(d):
            M[xt + k, k] = C[y, k]
        return M
    return f, layout.width


@pytest.mark.claim(id="pto/head-lower-bound", paper=PAPER, provenance="reconstructed", kind="exact")
@settings(max_examples=6, deadline=None)
@given(d=st.integers(2, 4), h=st.integers(1, 4), seed=seeds)
@example(d=3, h=3, seed=0)
@example(d=4, h=3, seed=1)
def test_head_lower_bound(record_claim, d, h, seed):
    """(i) Rank: the preprocessing map C -> (C[y, x_k])_k has operator-Schmidt rank d (sympy,
    exact), one head's C -> P C K rank 1, so h heads reach rank <= h < d.
    (ii) Fit: an h-head layer fitted by alternating least squares to the preprocessing
    update on 48 prompts leaves a relative residual > 1e-6 on 48 fresh prompts when h < d,
    and < 1e-10 when h = d (so the fit does find exact solutions where they exist).
    The Eckart-Young value sqrt((d-h)/d) (best rank-h approximation of the realigned operator,
    over all matrices C, not only second moments) is recorded for comparison."""
    h = min(h, d)
    f, D = _preprocessing_map(d)
    assert operator_schmidt_rank(f, D, exact=True) == d
    rng = np.random.default_rng(seed)
    P, K = rng.standard_normal((2, D, D))
    assert operator_schmidt_rank(lambda C: P @ C @ K, D) == 1
    sv = np.linalg.svd(realignment(f, D), compute_uv=False)
    eckart_young = float(np.sqrt(np.sum(sv[h:] ** 2) / np.sum(sv**2)))

    def embedded(first):
        b = sample_regression(48, 12, d, sparsity=1, noise=0.5, seed=seed, first=first)
        return pto_transformer(d, 0, 1.0).embed(*to_torch(b.X, b.y, b.x_query))
    # The ALS objective has several local minima (e.g. d = 2, h = 1: 0.635 and 0.586 from different
    # starts), so the fit is the best of 10 starts in three groups.  Convergence means the best
    # start stopped by ALS's own rule (exact fit, or < 0.1 % progress over 25 sweeps), not at the
    # sweep cap: "residual > 1e-6" is then not a fit cut short.  The groups' residuals are recorded
    # (different basins differ by a few per cent; all must stay above the bound).
    Z_fit = embedded(0)
    fits = [fit_preprocessing_heads(d, h, Z_fit, 12, restarts=2, seed=seed),
            fit_preprocessing_heads(d, h, Z_fit, 12, iters=4000, restarts=4, seed=seed + 1),
            fit_preprocessing_heads(d, h, Z_fit, 12, iters=4000, restarts=4, seed=seed + 2)]
    layer, fit_resid, converged = min(fits, key=lambda f: f[1])
    Z = embedded(48)
    with torch.no_grad():
        target = preprocessing_target(Z, 12, d)
        resid = float((layer(Z, 12) - target).norm() / target.norm())
    detail = {"d": d, "h": h, "fit_residual": fit_resid, "group_residuals": [f[1] for f in fits],
              "converged": converged, "fresh_residual": resid, "eckart_young": eckart_young}
    if h < d:
        record_claim(1e-6, resid, detail=detail)          # error/tolerance < 1 means residual > 1e-6
        assert converged, detail                          # the best fit was not cut short
        assert fit_resid > 1e-6 and resid > 1e-6, detail
    else:
        record_claim(resid, 1e-10, detail=detail)
        assert resid < 1e-10, detail


@pytest.mark.claim(id="pto/summed-head-fails", paper=PAPER, provenance="reconstructed", kind="exact")
@settings(max_examples=8, deadline=None)
@given(d=st.integers(2, 6), n=st.integers(4, 40), seed=seeds)
def test_summed_head_fails(record_claim, d, n, seed):
    """The d preprocessing heads summed into one head, and the best single head fitted by
    least squares, both miss the preprocessing update by a relative error > 1e-3.  The single
    head's fit is the best of 10 starts in three groups (the ALS objective has local minima)
    and is checked for convergence: the best start stopped by ALS's own rule, not at the sweep
    cap (so the bound is not met by a fit cut short)."""
    b = sample_regression(48, n, d, sparsity=min(2, d), noise=0.5, seed=seed)
    Z = pto_transformer(d, 0, 1.0).embed(*to_torch(b.X, b.y, b.x_query))
    with torch.no_grad():
        target = preprocessing_target(Z, n, d)
        summed = float((summed_head_layer(d)(Z, n) - target).norm() / target.norm())
    fits = [fit_preprocessing_heads(d, 1, Z, n, iters=600, restarts=2, seed=seed),
            fit_preprocessing_heads(d, 1, Z, n, iters=600, restarts=4, seed=seed + 1),
            fit_preprocessing_heads(d, 1, Z, n, iters=600, restarts=4, seed=seed + 2)]
    _, best, converged = min(fits, key=lambda f: f[1])
    detail = {"d": d, "n": n, "summed_head_error": summed, "best_single_head_error": best,
              "group_errors": [f[1] for f in fits], "converged": converged}
    record_claim(1e-3, min(summed, best), detail=detail)
    assert converged, detail                              # the best fit was not cut short
    assert summed > 1e-3 and best > 1e-3, detail


@pytest.mark.claim(id="pto/preconditioned-identity", paper=PAPER, provenance="reconstructed", kind="exact")
@given(d=dims, n=lengths, T=depths, seed=seeds, twentieths=st.integers(1, 20))
def test_preconditioned_identity(record_claim, d, n, T, seed, twentieths):
    """r_hat * w_tilde_t equals preconditioned GD on raw features, w <- w - lr R^2 grad L(w),
    at every step (numeric), and the one-step identity holds symbolically (sympy, n <= 3, d <= 2)."""
    for ns in (1, 2, 3):
        for ds in (1, 2):
            assert all(e == 0 for e in preconditioned_identity_residual(ns, ds))
    b = _sparse_prompts(seed, n, d)
    r = correlation(b.X, b.y)
    lr = stable_lr(b.X * r[:, None, :], twentieths / 20)
    w = np.zeros((b.X.shape[0], d))
    err, scale = 0.0, 1.0
    for t, w_pto in enumerate(pto_iterates(b.X, b.y, lr, T)):
        if t > 0:
            w = w - lr * r**2 * loss_gradient(b.X, b.y, w)
        err = max(err, float(np.abs(w_pto - w).max()))
        scale = max(scale, problem_scale(w))
    record_claim(err, EPS * scale)
    assert err <= EPS * scale


@pytest.mark.claim(id="pto/one-step-cubic", paper=PAPER, provenance="reconstructed", kind="exact")
@given(d=dims, n=lengths, seed=seeds, twentieths=st.integers(1, 20))
def test_one_step_cubic(record_claim, d, n, seed, twentieths):
    """One PtO step from 0: w_1 = lr * r_hat^3 (sympy for n <= 3, d <= 2; numeric on random prompts)."""
    for ns in (1, 2, 3):
        for ds in (1, 2):
            assert all(e == 0 for e in one_step_cubic_residual(ns, ds))
    b = _sparse_prompts(seed, n, d)
    r = correlation(b.X, b.y)
    lr = twentieths / 20
    w1 = pto_weights(b.X, b.y, lr, 1)
    err = float(np.abs(w1 - lr * r**3).max())
    tol = EPS * problem_scale(w1)
    record_claim(err, tol)
    assert err <= tol
