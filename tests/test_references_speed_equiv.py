"""The fast references give the same answers as straightforward ones.

HMMs: the batched, normalised forward filter and the Bayes mixture predictor
(``theory.algorithms.hmm``) against a plain log-space forward written here (one HMM, one
sequence at a time, log-sum-exp over states, as the package computed it before the filter
was batched), to 1e-12.  Lasso: ``lasso_weights`` (coordinate descent finished by an
active-set solve) against scikit-learn's ``Lasso`` and against the optimality (KKT)
conditions."""

import numpy as np
import pytest
from scipy.special import logsumexp

from mechverify.theory.algorithms import hmm as hmm_mod
from mechverify.theory.algorithms.hmm import (bayes_mixture_predictive, forward, forward_predictive, log_likelihood,
                                              mixture_log_weights)
from mechverify.theory.algorithms.regression import lasso_weights
from mechverify.theory.tasks.hmm import HMM, random_hmms, sample_prompts
from mechverify.theory.tasks.regression import sample_regression

TOL = 1e-12


def _log(a):
    with np.errstate(divide="ignore"):
        return np.log(a)


def _ref_forward(h: HMM, obs):
    """Log-space forward for one HMM and one sequence: (log_predictive (T+1, O), log_prefix
    (T+1,), log_state (T+1, S), log_filtered (T, S)); an impossible o_t keeps the prior law."""
    lT, lE = _log(h.transition), _log(h.emission)
    lb = _log(h.initial)
    pred, prefix, state, filt = [], [0.0], [], []
    for o in obs:
        state.append(lb)
        pred.append(logsumexp(lb[:, None] + lE, axis=0))
        x = lb + lE[:, o]
        lpo = logsumexp(x)
        prefix.append(prefix[-1] + lpo)
        lf = x - lpo if np.isfinite(lpo) else lb
        filt.append(lf)
        lb = logsumexp(lf[:, None] + lT, axis=0)
    state.append(lb)
    pred.append(logsumexp(lb[:, None] + lE, axis=0))
    S = h.n_states
    return np.array(pred), np.array(prefix), np.array(state), np.array(filt).reshape(-1, S)


def _ref_mixture(hmms, prior, demos, test):
    """(T+1, O) predictive and (T+1, K) weights of one prompt, every likelihood by _ref_forward."""
    logw, rows = [], []
    for k, h in enumerate(hmms):
        lw = np.log(prior[k]) + sum(_ref_forward(h, d)[1][-1] for d in demos)
        pred, prefix, _, _ = _ref_forward(h, test)
        logw.append(lw + prefix)
        rows.append(np.exp(pred))
    logw = np.array(logw)                                     # (K, T+1)
    w = np.exp(logw - logsumexp(logw, axis=0))
    return np.einsum("kt,kto->to", w, np.array(rows)), w.T


def _assert_log_close(a, b):
    """Same -inf positions, finite entries within TOL (absolute, or relative for large logs)."""
    assert a.shape == b.shape
    assert np.array_equal(np.isneginf(a), np.isneginf(b))
    fin = np.isfinite(b)
    np.testing.assert_allclose(a[fin], b[fin], rtol=TOL, atol=TOL)


def _cases():
    for seed in range(6):
        rng = np.random.default_rng(seed)
        K, S, O = int(rng.integers(1, 6)), int(rng.integers(2, 6)), int(rng.integers(2, 6))
        hmms = random_hmms(K, S, O, min(S, 2), seed=seed, emission_concentration=float(rng.choice([0.1, 1.0])))
        p = sample_prompts(hmms, 3, int(rng.integers(0, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 30)),
                           seed=seed)
        yield hmms, rng.dirichlet(np.ones(K)), p


@pytest.mark.parametrize("case", range(6))
def test_forward_matches_plain_log_space(case):
    hmms, _, p = list(_cases())[case]
    res = forward(hmms, p.test)                               # (K, N, ...)
    pred = forward_predictive(hmms, p.test)
    ll = log_likelihood(hmms, p.test)
    for k, h in enumerate(hmms):
        for i, obs in enumerate(p.test):
            ref = _ref_forward(h, obs)
            for got, want in zip((res.log_predictive, res.log_prefix, res.log_state, res.log_filtered), ref):
                _assert_log_close(got[k, i], want)
            np.testing.assert_allclose(pred[k, i], np.exp(ref[0]), rtol=0, atol=TOL)
            _assert_log_close(np.asarray(ll[k, i]), np.asarray(ref[1][-1]))


def test_forward_zero_probabilities_and_impossible_observations():
    """Exact zeros (identity transitions, a zero emission) and an impossible observation:
    -inf at the same places as the plain log-space forward, finite predictive rows."""
    h = HMM(np.eye(2), np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1.0, 0.0]))
    for obs in ([0, 1], [0, 1, 0, 0], [1, 1, 0], [0, 0, 0]):
        res = forward(h, obs)
        for got, want in zip((res.log_predictive, res.log_prefix, res.log_state, res.log_filtered),
                             _ref_forward(h, obs)):
            _assert_log_close(got, want)


@pytest.mark.parametrize("case", range(6))
def test_mixture_matches_plain_log_space(case):
    hmms, prior, p = list(_cases())[case]
    pred, w = bayes_mixture_predictive(hmms, prior, p.demos, p.test, return_weights=True)
    logw = mixture_log_weights(hmms, prior, p.demos, p.test)
    for b in range(p.test.shape[0]):
        ref_pred, ref_w = _ref_mixture(hmms, prior, p.demos[b], p.test[b])
        np.testing.assert_allclose(pred[b], ref_pred, rtol=0, atol=TOL)
        np.testing.assert_allclose(w[b], ref_w, rtol=0, atol=TOL)
        np.testing.assert_allclose(np.exp(logw[b]), ref_w, rtol=0, atol=TOL)


def test_mixture_chunking_does_not_change_the_answer(monkeypatch):
    """A state budget small enough to force one prompt per chunk gives the same arrays (up to
    the rounding of differently sized matrix products)."""
    hmms, prior, p = list(_cases())[3]
    whole = bayes_mixture_predictive(hmms, prior, p.demos, p.test, return_weights=True)
    monkeypatch.setattr(hmm_mod, "STATE_BUDGET", 1)
    chunked = bayes_mixture_predictive(hmms, prior, p.demos, p.test, return_weights=True)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


# --- Lasso --------------------------------------------------------------------------------------

def _gram_rhs(X, y):
    n = X.shape[1]
    return np.einsum("bnd,bne->bde", X, X) / n, np.einsum("bnd,bn->bd", X, y) / n


def _kkt_residual(X, y, w, lam):
    gram, rhs = _gram_rhs(X, y)
    grad = np.einsum("bde,be->bd", gram, w) - rhs
    return np.where(w != 0, np.abs(grad + lam * np.sign(w)), np.maximum(np.abs(grad) - lam, 0.0))


def _objective(X, y, w, lam):
    return 0.5 * np.mean((np.einsum("bnd,bd->bn", X, w) - y) ** 2, axis=1) + lam * np.abs(w).sum(axis=1)


@pytest.mark.parametrize("d, n, lam", [(32, 16, 0.1), (32, 64, 0.05), (8, 40, 0.01), (16, 8, 0.3)])
def test_lasso_optimum_kkt_and_sklearn(d, n, lam):
    """The optimum: every KKT residual within the documented bound tol * sum_{j != k} |G_kj|
    (here in fact <= 1e-12), the objective no larger than scikit-learn's at tol 1e-12 (plus
    1e-12), and the coefficients within 1e-6 of scikit-learn's (its own stopping error)."""
    from sklearn.linear_model import Lasso
    B, tol = 40, 1e-8
    b = sample_regression(B, n, d, sparsity=2, noise=0.5, seed=d + n)
    w = lasso_weights(b.X, b.y, lam, tol=tol)
    gram, _ = _gram_rhs(b.X, b.y)
    bound = tol * (np.abs(gram).sum(axis=2) - np.abs(np.einsum("bkk->bk", gram)))
    resid = _kkt_residual(b.X, b.y, w, lam)
    assert np.all(resid <= bound)
    assert resid.max() <= 1e-12, resid.max()
    w_sk = np.stack([Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(b.X[i], b.y[i]).coef_
                     for i in range(B)])
    assert np.all(_objective(b.X, b.y, w, lam) <= _objective(b.X, b.y, w_sk, lam) + 1e-12)
    assert np.abs(w - w_sk).max() <= 1e-6, np.abs(w - w_sk).max()


def test_lasso_degenerate_designs_still_converge():
    """lam = 0 with n < d (singular Gram: the active-set guess can fail and coordinate descent
    must finish alone), duplicated and zero columns: the returned weights meet the KKT bound."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 6, 4))
    X[:, :, 3] = X[:, :, 0]                                    # duplicate column
    X[1, :, 2] = 0.0                                           # zero column
    y = rng.standard_normal((5, 6))
    for lam, tol in ((0.0, 1e-9), (0.05, 1e-10)):
        w = lasso_weights(X, y, lam, tol=tol)
        gram, _ = _gram_rhs(X, y)
        bound = tol * (np.abs(gram).sum(axis=2) - np.abs(np.einsum("bkk->bk", gram))) + 1e-13
        assert np.all(_kkt_residual(X, y, w, lam) <= bound)
        assert np.all(w[1, 2] == 0.0)
    Xw = rng.standard_normal((3, 5, 8))                        # n < d, lam = 0: interpolation
    yw = rng.standard_normal((3, 5))
    w = lasso_weights(Xw, yw, 0.0, tol=1e-10)
    assert np.abs(np.einsum("bnd,bd->bn", Xw, w) - yw).max() < 1e-7
