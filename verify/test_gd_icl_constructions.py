"""Claims: hand-built linear self-attention = (preconditioned) gradient descent (docs/gd_icl.md §3, §7)."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from mechverify.constructions.gd_icl import (gd_transformer, preconditioned_gd_transformer,
                                  relu_gd_transformer, vo_code_forward, vo_code_weights)
from mechverify.theory.algorithms.regression import (gd_predict, gd_weights,
                                          preconditioned_gd_predict)
from verify.instances import (depths, dims, lengths, problem_scale, random_spd, regression_prompts, seeds,
                              stable_lr, to_torch)

EPS = 1e-12  # float64 exact claims: EPS * (problem scale)


def _check_exact(record_claim, err, *scale_of):
    """Record ``err`` against the float64 tolerance EPS * :func:`problem_scale` of ``scale_of``, and
    assert it holds."""
    tol = EPS * problem_scale(*scale_of)
    record_claim(err, tol)
    assert err <= tol


@pytest.mark.claim(id="gd-icl/vo-exact", paper="von-oswald-2023", provenance="paper-code", kind="exact")
@given(d=dims, n=lengths, L=depths, seed=seeds, twentieths=st.integers(1, 20))
def test_vo_exact(record_claim, d, n, L, seed, twentieths):
    b = regression_prompts(seed, n, d)
    w0 = np.random.default_rng(seed).standard_normal(d)
    lr = stable_lr(b.X, twentieths / 20)
    model = gd_transformer(d, L, lr, w0=w0)
    X, y, xq = to_torch(b.X, b.y, b.x_query)
    ref = gd_predict(b.X, b.y, b.x_query, lr, L, w0)
    residuals = b.y - np.einsum("bnd,bd->bn", b.X, gd_weights(b.X, b.y, lr, L, w0) - w0)
    err = 0.0
    for grad in (True, False):          # torch route (autograd on), numpy CPU kernel (no grad)
        with torch.set_grad_enabled(grad):
            Z = model(model.embed(X, y, xq)).detach().numpy()
        pred = Z[:, -1] @ model.readout.numpy()
        err = max(err, np.abs(pred - ref).max(), np.abs(Z[:, :n, d] - residuals).max())
    _check_exact(record_claim, err, ref, b.y)


@pytest.mark.claim(id="gd-icl/vo-permutation-invariance", paper="von-oswald-2023",
                   provenance="reconstructed", kind="exact")
@given(d=dims, n=lengths, L=depths, seed=seeds)
def test_vo_permutation_invariance(record_claim, d, n, L, seed):
    b = regression_prompts(seed, n, d)
    perm = np.random.default_rng(seed).permutation(n)
    model = gd_transformer(d, L, stable_lr(b.X, 0.5))
    pred = model.predict(*to_torch(b.X, b.y, b.x_query)).detach().numpy()
    pred_perm = model.predict(*to_torch(b.X[:, perm], b.y[:, perm], b.x_query)).detach().numpy()
    err = np.abs(pred - pred_perm).max()
    _check_exact(record_claim, err, pred, b.y)


@pytest.mark.claim(id="gd-icl/vo-code-convention", paper="von-oswald-2023", provenance="paper-code",
                   kind="exact")
@given(d=dims, n=lengths, L=depths, seed=seeds)
def test_vo_code_convention(record_claim, d, n, L, seed):
    b = regression_prompts(seed, n, d)
    lr = stable_lr(b.X, 0.5)
    model = gd_transformer(d, L, lr)
    Z0 = model.embed(*to_torch(b.X, b.y, b.x_query))
    ours = model(Z0).detach().numpy()
    theirs = vo_code_forward(Z0, vo_code_weights(d, n, lr), L).detach().numpy()
    err = max(np.abs(ours - theirs).max(), np.abs(ours[:, -1] @ model.readout.numpy() + theirs[:, -1, -1]).max())
    _check_exact(record_claim, err, ours)


@pytest.mark.claim(id="gd-icl/ahn-pgd-exact", paper="ahn-2023", provenance="paper-code", kind="exact")
@given(d=dims, n=lengths, L=depths, seed=seeds)
def test_ahn_pgd_exact(record_claim, d, n, L, seed):
    b = regression_prompts(seed, n, d)
    rng = np.random.default_rng(seed)
    lr = stable_lr(b.X, 1.0)
    As = [lr * random_spd(rng, d) for _ in range(L)]
    model = preconditioned_gd_transformer(As)
    pred = model.predict(*to_torch(b.X, b.y, b.x_query)).detach().numpy()
    ref = preconditioned_gd_predict(b.X, b.y, b.x_query, As)
    err = np.abs(pred - ref).max()
    _check_exact(record_claim, err, ref, b.y)


@pytest.mark.claim(id="gd-icl/bai-relu-gd", paper="bai-2023", provenance="reconstructed", kind="exact")
@given(d=dims, n=lengths, L=depths, seed=seeds)
def test_bai_relu_gd(record_claim, d, n, L, seed):
    b = regression_prompts(seed, n, d)
    w0 = np.random.default_rng(seed).standard_normal(d)
    lr = stable_lr(b.X, 0.5)
    inputs = to_torch(b.X, b.y, b.x_query)
    relu = relu_gd_transformer(d, L, lr, w0=w0)
    linear = gd_transformer(d, L, lr, w0=w0)
    Zr = relu(relu.embed(*inputs)).detach().numpy()
    Zl = linear(linear.embed(*inputs)).detach().numpy()
    err = np.abs(Zr - Zl).max()
    _check_exact(record_claim, err, Zl)
