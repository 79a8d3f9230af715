"""Public strategies (mechverify.strategies) and comparison helpers (mechverify.compare)."""

import math

import numpy as np
import pytest
from hypothesis import find, given, settings

from mechverify import compare, strategies
from mechverify.theory.tasks.hmm import sample_sequences, stationary
from mechverify.theory.tasks.markov import sample_sequences as markov_sequences, teacher_matrices
from mechverify.theory.tasks.regression import RegressionBatch


@given(strategies.regression_prompts(max_d=5, max_n=6))
def test_dense_prompts(batch):
    assert isinstance(batch, RegressionBatch)
    B, n, d = batch.X.shape
    assert batch.y.shape == (B, n) and batch.w.shape == (B, d) and 1 <= d <= 5 and 1 <= n <= 6


@given(strategies.regression_prompts(max_d=6, sparse=True))
def test_sparse_prompts_have_a_support(batch):
    supports = (batch.w != 0).sum(axis=1)
    assert (supports >= 1).all() and (supports <= batch.w.shape[1]).all()
    assert len(set(supports.tolist())) == 1        # one support size per batch


def test_sparse_prompts_reach_proper_supports():
    batch = find(strategies.regression_prompts(sparse=True), lambda b: (b.w != 0).sum(axis=1).max() < b.w.shape[1])
    assert (batch.w == 0).any()


@given(strategies.hmms(low_rank=True))
def test_hmms_are_valid(hmm):
    obs, states = sample_sequences(hmm, 2, 3, seed=0)
    assert obs.max() < hmm.n_obs and states.max() < hmm.n_states
    assert hmm.factors is None or np.allclose(hmm.factors[0] @ hmm.factors[1], hmm.transition)


def test_hmms_include_non_stationary_starts():
    hmm = find(strategies.hmms(initials=("random",)),
               lambda h: np.abs(h.initial @ h.transition - h.initial).max() > 0.1)
    assert not np.allclose(hmm.initial, stationary(hmm.transition))
    with pytest.raises(ValueError, match="initials"):
        strategies.hmms(initials=("equilibrium",))


@settings(max_examples=40)
@given(strategies.markov_teachers())
def test_markov_teachers_are_usable(task):
    A = teacher_matrices(task)
    assert A.shape == (task.h, task.d, task.d) and np.isfinite(A).all()
    assert markov_sequences(task, 2, seed=0).shape[0] == 2


@given(strategies.lda_corpora())
def test_lda_corpora(corpus):
    assert corpus.tokens.shape[0] == corpus.theta.shape[0] and np.allclose(corpus.theta.sum(axis=1), 1)
    assert corpus.tokens.max() < corpus.vocab_size


@pytest.mark.parametrize("call, error", [
    (lambda: strategies.regression_prompts(max_d=0), ValueError),
    (lambda: strategies.regression_prompts(max_n=2.5), TypeError),
    (lambda: strategies.regression_prompts(noises=(-1.0,)), ValueError),
    (lambda: strategies.markov_teachers(max_d=1), ValueError),
    (lambda: strategies.lda_corpora(max_docs=True), TypeError),
])
def test_strategy_arguments_are_checked(call, error):
    with pytest.raises(error):
        call()


def test_rounding_tolerance_follows_dtype_scale_and_ops():
    t64 = compare.rounding_tolerance(np.float64)
    assert t64 == 8 * np.finfo(np.float64).eps
    assert compare.rounding_tolerance(np.float32) / t64 == pytest.approx(2.0 ** 29)
    assert compare.rounding_tolerance("float64", scale=10.0, ops=4) == pytest.approx(40 * t64)
    for bad in (dict(ops=0), dict(scale=-1.0), dict(safety=math.nan)):
        with pytest.raises(ValueError):
            compare.rounding_tolerance(np.float64, **bad)


def test_assert_close():
    rng = np.random.default_rng(0)
    A, x = rng.standard_normal((20, 20)), rng.standard_normal(20)
    exact = A @ x
    summed = np.array([math.fsum(A[i] * x) for i in range(20)])
    ok = compare.assert_close(exact, summed, ops=20)
    assert 0 < ok.error <= ok.tolerance and ok.dtype == "float64"
    # the float32 computation fails the float64 budget but meets its own
    low = (A.astype(np.float32) @ x.astype(np.float32))
    with pytest.raises(AssertionError, match="relative error"):
        compare.assert_close(low.astype(np.float64), summed, ops=20)
    assert compare.assert_close(low, summed, ops=20).dtype == "float32"
    # a one-ulp-of-the-problem bug is caught; NaN is never close
    with pytest.raises(AssertionError):
        compare.assert_close(exact + 1e-9, summed, ops=20)
    assert compare.relative_error([np.nan], [0.0]) == math.inf
    with pytest.raises(ValueError, match="same shape"):
        compare.relative_error(np.zeros(2), np.zeros(3))


def test_power_formula():
    assert compare.power(0.0, 1.0, 3.0) == pytest.approx(2 * (1 - 0.9986501019683699))
    assert compare.power(5.0, 1.0, 3.0) == pytest.approx(0.97725, abs=1e-4)    # Phi(2) + Phi(-8)
    assert compare.power(1e9, 1.0) == pytest.approx(1.0)


def test_mc_check_passes_fails_and_reports_power():
    rng = np.random.default_rng(1)
    draws = rng.normal(0.5, 1.0, size=4000)
    result = compare.mc_check(draws, 0.5, effect=0.1)
    assert result.error <= result.tolerance and result.power > 0.8 and result.n == 4000
    assert set(result.detail) >= {"se", "power", "n", "mean"}
    with pytest.raises(AssertionError, match="differs from"):
        compare.mc_check(draws, 0.6, effect=0.1)             # 0.1 away: detected
    with pytest.raises(AssertionError, match="underpowered"):
        compare.mc_check(draws[:50], 0.5, effect=0.1)       # 50 draws cannot see 0.1
    with pytest.raises(ValueError, match="at least 2"):
        compare.mc_check([1.0], 1.0, effect=0.1)
    with pytest.raises(ValueError, match="effect"):
        compare.mc_check(draws, 0.5, effect=0.0)


def test_mc_check_false_alarm_rate_matches_k():
    """Under the null the check at k = 2 rejects about 4.6 % of the time (normal approximation)."""
    rng = np.random.default_rng(2)
    rejections = 0
    for _ in range(2000):
        try:
            compare.mc_check(rng.normal(size=200), 0.0, effect=0.5, k=2.0)
        except AssertionError:
            rejections += 1
    rate = rejections / 2000
    assert abs(rate - 0.0455) < 3 * math.sqrt(0.0455 * 0.9545 / 2000) + 0.005, rate


def test_helpers_record_before_asserting():
    seen = []

    def record(error, tolerance, detail=None):
        seen.append((error, tolerance, detail))
    with pytest.raises(AssertionError):
        compare.assert_close([1.0], [1.1], record=record)
    with pytest.raises(AssertionError):
        compare.mc_check([0.9, 1.1] * 500, 0.0, effect=0.5, record=record)
    assert seen[0][0] == pytest.approx(0.1 / 2.1) and seen[1][2]["n"] == 1000 and seen[1][0] == pytest.approx(1.0)
