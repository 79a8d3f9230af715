"""Branches found by the held-out mutation slice: the mutants whose sample position lies in
[0.10, 0.15) (``make mutation MUTATION_ARGS="--report --held-out 0.1"``), run after the branch
tests written against the 10 % sample.  Each test kills survivors of that slice: guards at
their boundary, immutability, a numerically stable softmax, a lag matrix with zero entries."""

import dataclasses

import numpy as np
import pytest
import sympy as sp
import torch

from mechverify.constructions.encoders import HMMWithSeparators, StackedRegression
from mechverify.constructions.sparse_regression import pto_layout
from mechverify.theory.algorithms.hmm import bruteforce_predictive, forward
from mechverify.theory.algorithms.regression import ista_weights, ridge_predict, ridge_weights
from mechverify.theory.algorithms.tuning import _step_size
from mechverify.theory.dynamics.gd_icl import flow_closed_form
from mechverify.theory.dynamics.markov import euler, fig10_target
from mechverify.theory.dynamics.topics import stage_samples
from mechverify.theory.symbolic.meta_learning import logit_grad_residual
from mechverify.theory.tasks.hmm import HMM, random_hmm, random_hmms, sample_prompts
from mechverify.theory.tasks.markov import MarkovTask, lag_matrices, log_softmax, teacher_logits
from mechverify.theory.tasks.topics import N_SPECIAL, sample_lda
from mechverify.theory.tasks.zipf import zipf_markov


def _regression(B=2, n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, n, d)), rng.standard_normal((B, n)), rng.standard_normal((B, d))


@pytest.mark.parametrize("call", [lambda X, y, q: ridge_weights(X, y, -0.1),
                                  lambda X, y, q: ridge_predict(X, y, q, -0.1),
                                  lambda X, y, q: ista_weights(X, y, -0.1, 3)])
def test_negative_penalties_are_rejected(call):
    with pytest.raises(ValueError, match="lam"):
        call(*_regression())


def test_ista_default_step_survives_an_all_zero_prompt():
    X, y, _ = _regression()
    X[1] = 0.0  # lambda_max = 0: the default step is 1 / max(0, tiny), finite; w stays 0
    w = ista_weights(X, y, 0.1, 5)
    assert np.all(np.isfinite(w)) and np.all(w[1] == 0)


def test_zipf_chain_rejects_a_zero_tolerance():
    with pytest.raises(ValueError, match="tol"):
        zipf_markov(vocab=8, tol=0.0)


def test_forward_result_is_immutable():
    hmm = random_hmm(3, 4, seed=0)
    res = forward([hmm], np.zeros((1, 5), dtype=np.int64))
    field = dataclasses.fields(res)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(res, field, None)


def test_hmm_factors_must_be_a_pair():
    hmm = random_hmm(3, 4, rank=2, seed=0)
    Xi, M = hmm.factors
    with pytest.raises(TypeError, match="factors"):
        HMM(hmm.transition, hmm.emission, hmm.initial, factors=(Xi, M, M))


def test_random_hmm_boundaries_and_self_loop():
    base = random_hmm(4, 5, seed=1)
    dup = random_hmm(4, 5, seed=1, duplicate_eps=1.0)  # eps = 1 is allowed (closed interval)
    assert dup.emission.shape == base.emission.shape
    loop = random_hmm(4, 5, seed=1, self_loop=0.5)      # T = 0.5 I + 0.5 T_0
    np.testing.assert_allclose(loop.transition, 0.5 * np.eye(4) + 0.5 * base.transition, rtol=0, atol=1e-15)


def test_prompt_tasks_accept_id_zero_and_reject_negatives():
    hmms = random_hmms(3, 3, 4, seed=0)
    p = sample_prompts(hmms, 3, 1, 4, 4, seed=0, tasks=np.array([0, 2, 1]))
    np.testing.assert_array_equal(p.task, [0, 2, 1])
    with pytest.raises(ValueError, match="tasks"):
        sample_prompts(hmms, 3, 1, 4, 4, seed=0, tasks=np.array([-1, 2, 1]))


def test_markov_log_softmax_is_stable_at_large_logits():
    out = log_softmax(np.array([[1000.0, 0.0, -5.0]]))
    expected = np.array([[0.0, -1000.0, -1005.0]])
    expected[0, 0] = -np.log1p(np.exp(-1000.0) + np.exp(-1005.0))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_teacher_logits_guards_negative_tokens_and_reads_sparse_lag_matrices():
    task = MarkovTask(d=3, sizes=(1, 2), m=1.0, teacher_seed=0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, task.d, size=(4, task.w + 6))
    bad = tokens.copy()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="tokens"):
        teacher_logits(task, bad)
    W = lag_matrices(task).copy()
    W[0, 0, 0] = 0.0   # a lag matrix with one zero entry (not all zero) still counts
    n_pos = tokens.shape[1]
    expected = np.zeros((4, n_pos - task.w, task.d))
    for b in range(4):
        for i, p in enumerate(range(task.w, n_pos)):
            for lag in range(1, task.w + 1):
                expected[b, i] += W[lag - 1][:, tokens[b, p - lag]]
    np.testing.assert_allclose(teacher_logits(task, tokens, W=W), expected / task.tau, rtol=0, atol=1e-12)


def test_logit_gradient_identity_holds_at_two_classes():
    assert logit_grad_residual(2, 2, 1) == sp.zeros(2, 1)


def test_lda_topics_mark_non_word_positions():
    corpus = sample_lda(6, n_topics=3, words_per_topic=4, alpha=0.5, doc_len=(2, 5), seed=0)
    words = corpus.tokens >= N_SPECIAL
    assert words.any() and (~words).any()
    assert np.all(corpus.topics[~words] == -1)   # START, END, PAD: no topic
    assert np.all(corpus.topics[words] == (corpus.tokens[words] - N_SPECIAL) // 4)


def test_enumeration_reaches_exactly_a_million_paths():
    # S^(T+1) = 100^3 = 1e6 paths is the largest case enumeration takes (0.6 s); it must
    # agree with the forward pass there, and one more state is refused.
    hmm = random_hmm(100, 2, seed=0)
    obs = np.array([1, 0])
    np.testing.assert_allclose(bruteforce_predictive(hmm, obs), np.exp(forward([hmm], obs[None]).log_predictive[0, 0]),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="too long"):
        bruteforce_predictive(random_hmm(101, 2, seed=0), obs)


def test_euler_records_from_time_zero():
    run = euler(fig10_target(), 3, t_max=1.0, dt=0.1, record_every=3)   # steps 3, 6, 9 and the last, 10
    np.testing.assert_allclose(run.t, [0.0, 0.3, 0.6, 0.9, 1.0], rtol=0, atol=1e-12)


def test_closed_form_flow_rejects_a_2d_time_array():
    with pytest.raises(ValueError, match="t must be"):
        flow_closed_form(np.zeros((2, 2)), np.ones(2), 10, np.ones((2, 3)))


def test_topic_stage_samples_reject_a_negative_keep_rate():
    with pytest.raises(ValueError, match="p_keep"):
        stage_samples(n_samples=10, p_random=0.2, p_keep=-0.1)


def test_sparse_step_size_is_c_over_the_largest_hessian_eigenvalue():
    X, y, _ = _regression(B=4, n=6, d=3)
    top = np.array([np.linalg.norm(x, 2) ** 2 / x.shape[0] for x in X])   # sigma_max(X)^2 / n
    np.testing.assert_allclose(_step_size("gd", 0.7, X, y), 0.7 / top, rtol=1e-12)


def test_regression_encoder_takes_a_single_prompt():
    X, y, q = (torch.from_numpy(a) for a in _regression(B=1, n=4, d=2))
    Z = StackedRegression(pto_layout(2)).encode((X, y, q))
    assert Z.shape[:2] == (1, 5)
    for empty in [(X[:0], y[:0], q[:0]), (X[:, :0], y[:, :0], q)]:   # no prompt; no example
        with pytest.raises(ValueError, match="B, n >= 1"):
            StackedRegression(pto_layout(2)).encode(empty)


def test_hmm_readout_checks_each_dimension_alone():
    enc = HMMWithSeparators(5, 7)
    with pytest.raises(ValueError, match="output"):
        enc.readout(torch.zeros(2, 30, 4))   # only the number of observations is wrong

