"""Bad input gets a ValueError/TypeError naming the parameter (never an assert, never a clip)."""

import numpy as np
import pytest
import torch

from mechverify.constructions.gd_icl import (gd_transformer, gdpp_transformer, preconditioned_gd_transformer,
                                  relu_gd_transformer)
from mechverify.constructions.modules import LinearAttention, Layout
from mechverify.constructions.sparse_regression import fit_preprocessing_heads, pto_transformer
from mechverify.theory.algorithms.regression import (gd_predict, gdpp_predict, lasso_weights, ols_predict,
                                          preconditioned_gd_predict, pto_predict, ridge_predict)
from mechverify.theory.algorithms.risk import gd_conditional_risk, ols_risk, ridge_conditional_risk
from mechverify.theory.algorithms.tuning import SparseComparison, tune_sparse_method
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training.gd_icl import LSATrainConfig
from mechverify.training.sparse_regression import SparseTrainConfig

B, n, d = 3, 5, 2
rng = np.random.default_rng(0)
X, y, xq = rng.standard_normal((B, n, d)), rng.standard_normal((B, n)), rng.standard_normal((B, d))


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(n_prompts=0, n=5, d=2), "n_prompts", ValueError),
    (dict(n_prompts=2, n=0, d=2), "n", ValueError),
    (dict(n_prompts=2, n=5, d=0), "d", ValueError),
    (dict(n_prompts=2, n=5, d=2.0), "d", TypeError),
    (dict(n_prompts=2, n=5, d=2, noise=-1.0), "noise", ValueError),
    (dict(n_prompts=2, n=5, d=2, noise=float("nan")), "noise", ValueError),
    (dict(n_prompts=2, n=5, d=2, sparsity=3), "sparsity", ValueError),
    (dict(n_prompts=2, n=5, d=2, cov=np.eye(3)), "cov", ValueError),
    (dict(n_prompts=2, n=5, d=2, cov=np.array([[1.0, 2.0], [2.0, 1.0]])), "cov", ValueError),
    (dict(n_prompts=2, n=5, d=2, cov=np.array([[1.0, 0.5], [0.0, 1.0]])), "cov", ValueError),
    (dict(n_prompts=2, n=5, d=2, x_dist="cauchy"), "x_dist", ValueError),
    (dict(n_prompts=2, n=5, d=2, w_prior="inverse_cov"), "w_prior", ValueError),
    (dict(n_prompts=2, n=5, d=2, seed=-1), "seed", ValueError),
])
def test_sampler_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        sample_regression(**kwargs)


@pytest.mark.parametrize("call, param", [
    (lambda: gd_predict(X[0], y, xq, 0.1, 1), "X"),
    (lambda: gd_predict(X, y[:, :-1], xq, 0.1, 1), "y"),
    (lambda: gd_predict(X, y, xq[:, :1], 0.1, 1), "x_query"),
    (lambda: gd_predict(X, y, xq, float("inf"), 1), "lr"),
    (lambda: gd_predict(X, y, xq, 0.1, -1), "steps"),
    (lambda: gd_predict(X, y, xq, 0.1, 1, w0=np.ones(d + 1)), "w0"),
    (lambda: gd_predict(np.where(X > 0, np.nan, X), y, xq, 0.1, 1), "X"),
    (lambda: gd_predict(X, y, np.full_like(xq, np.inf), 0.1, 1), "x_query"),
    (lambda: preconditioned_gd_predict(X, y, xq, []), "preconditioners"),
    (lambda: preconditioned_gd_predict(X, y, xq, np.eye(d)), "preconditioners"),
    (lambda: preconditioned_gd_predict(X, y, xq, [np.eye(d), -np.eye(d)]), r"preconditioners\[1\]"),
    (lambda: preconditioned_gd_predict(X, y, xq, [np.array([[1.0, 1.0], [0.0, 1.0]])]), r"preconditioners\[0\]"),
    (lambda: preconditioned_gd_predict(X, y, xq, [np.eye(d + 1)]), r"preconditioners\[0\]"),
    (lambda: ridge_predict(X, y, xq, 0.0), "lam"),
    (lambda: ridge_predict(X, y, xq, -1.0), "lam"),
    (lambda: ols_predict(X, y[:1], xq), "y"),
    (lambda: gdpp_predict(X, y, xq, 0.1, float("nan"), 1), "gamma"),
])
def test_references_reject(call, param):
    with pytest.raises((ValueError, TypeError), match=param):
        call()


@pytest.mark.parametrize("call, param", [
    (lambda: gd_transformer(0, 1, 0.1), "d"),
    (lambda: gd_transformer(2, 0, 0.1), "n_layers"),
    (lambda: gd_transformer(2, 1, float("nan")), "lr"),
    (lambda: gd_transformer(2, 1, 0.1, w0=np.ones(3)), "w0"),
    (lambda: relu_gd_transformer(2, 0, 0.1), "n_layers"),
    (lambda: gdpp_transformer(2, 1, 0.1, float("inf")), "gamma"),
    (lambda: preconditioned_gd_transformer([]), "preconditioners"),
    (lambda: preconditioned_gd_transformer(np.eye(2)), "preconditioners"),
    (lambda: preconditioned_gd_transformer([np.eye(2), np.diag([1.0, -1.0])]), r"preconditioners\[1\]"),
    (lambda: preconditioned_gd_transformer([np.array([[1.0, 0.3], [0.0, 1.0]])]), r"preconditioners\[0\]"),
    (lambda: preconditioned_gd_transformer([np.eye(2), np.eye(3)]), r"preconditioners\[1\]"),
    (lambda: LinearAttention(0), "d_model"),
    (lambda: LinearAttention(3, n_heads=0), "n_heads"),
    (lambda: LinearAttention(3, activation="gelu"), "activation"),
    (lambda: Layout((("x", 2), ("x", 1))), "distinct"),
    (lambda: Layout((("x", 0),)), "width"),
])
def test_constructions_reject(call, param):
    with pytest.raises((ValueError, TypeError), match=param):
        call()


@pytest.mark.parametrize("args, param", [
    (lambda t: (t(X[0]), t(y), t(xq)), "X"),
    (lambda t: (t(X), t(y[:, 1:]), t(xq)), "y"),
    (lambda t: (t(X), t(y), t(xq[:1])), "x_query"),
    (lambda t: (t(X[..., :1]), t(y), t(xq[:, :1])), "X"),
    (lambda t: (t(np.where(X > 0, np.inf, X)), t(y), t(xq)), "X"),
    (lambda t: (X, t(y), t(xq)), "X"),
])
def test_predict_rejects(args, param):
    model = gd_transformer(d, 1, 0.1)
    with pytest.raises((ValueError, TypeError), match=param):
        model.predict(*args(torch.from_numpy))


@pytest.mark.parametrize("kwargs, param", [
    (dict(d=0), "d"), (dict(steps=0), "steps"), (dict(lr=0.0), "lr"), (dict(optimizer="lbfgs"), "optimizer"),
    (dict(parametrization="x"), "parametrization"), (dict(parametrization="zfb", n_layers=2), "n_layers"),
    (dict(dtype="float16"), "dtype"), (dict(cov_diag=(1.0, 2.0)), "cov_diag"),
    (dict(d=2, x_dist="gaussian", cov_diag=(1.0, -2.0)), "cov_diag"),
    (dict(d=2, init_G=((1.0, 0.0),)), "init_G"), (dict(noise=-0.1), "noise"),
])
def test_train_config_rejects(kwargs, param):
    with pytest.raises((ValueError, TypeError), match=param):
        LSATrainConfig(**kwargs)


# --- Sparse regression (issue 3): s > d, s < 0, sigma < 0, n < 1, lr <= 0, non-finite data ---
X_nan = X.copy()
X_nan[0, 0, 0] = np.nan


@pytest.mark.parametrize("call, param", [
    (lambda: sample_regression(2, 5, 2, sparsity=-1), "sparsity"),
    (lambda: pto_predict(X, y, xq, 0.0, 2), "lr"),
    (lambda: pto_predict(X, y, xq, -0.1, 2), "lr"),
    (lambda: pto_predict(X, y, xq, np.array([0.1, 0.0, 0.2]), 2), "lr"),
    (lambda: pto_predict(X_nan, y, xq, 0.1, 2), "X"),
    (lambda: pto_predict(X, y, xq, 0.1, -1), "steps"),
    (lambda: lasso_weights(X, y, -0.1), "lam"),
    (lambda: lasso_weights(X_nan, y, 0.1), "X"),
    (lambda: ridge_conditional_risk(X, np.zeros((B, d)), -1.0, 0.1), "noise"),
    (lambda: gd_conditional_risk(X, np.zeros((B, d)), 0.5, 0.0, 3), "lr"),
    (lambda: ols_risk(5, 4, 0.5), "n"),
    (lambda: ols_risk(10, 2, -0.5), "noise"),
    (lambda: pto_transformer(3, 2, 0.0), "lr"),
    (lambda: pto_transformer(0, 2, 0.1), "d"),
    (lambda: pto_transformer(3, -1, 0.1), "n_gd_layers"),
    (lambda: fit_preprocessing_heads(2, 0, torch.zeros(1, 3, 5, dtype=torch.float64), 2), "n_heads"),
    (lambda: tune_sparse_method("adam", X, y, np.zeros((B, d)), 0.5), "method"),
    (lambda: tune_sparse_method("gd", X, y, np.zeros((B, d)), -0.5), "noise"),
    (lambda: SparseComparison(4, 5, 8, 0.5), "s"),
    (lambda: SparseComparison(4, 0, 8, 0.5), "s"),
    (lambda: SparseComparison(4, 2, 0, 0.5), "n"),
    (lambda: SparseComparison(4, 2, 8, -0.5), "noise"),
    (lambda: SparseTrainConfig(s=9, d=8), "s"),
    (lambda: SparseTrainConfig(noise=-1.0), "noise"),
    (lambda: SparseTrainConfig(arch="rnn"), "arch"),
    (lambda: SparseTrainConfig(arch="softmax", width=66, n_heads=4), "width"),
])
def test_sparse_regression_rejects(call, param):
    with pytest.raises((ValueError, TypeError), match=param):
        call()
