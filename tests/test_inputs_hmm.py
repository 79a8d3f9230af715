"""HMM paper: bad input gets a ValueError/TypeError naming the parameter; long sequences stay
finite and correct (log-likelihoods); an empty prefix gives the prior predictive row."""

import math

import numpy as np
import pytest
import torch

from mechverify.constructions.hmm import error_terms, hmm_construction
from mechverify.theory.algorithms.hmm import (bayes_mixture_predictive, bruteforce_mixture_weights, bruteforce_predictive,
                                   demo_regression, forward, forward_predictive, gd_matrix_iterates, hankel_matrix,
                                   log_likelihood, phi_features, regression_predictive, window_features,
                                   windowed_predictive)
from mechverify.theory.tasks.hmm import HMM, random_hmm, random_hmms, sample_prompts, sample_sequences
from mechverify.training.hmm import HMMTrainConfig

T2 = np.array([[0.9, 0.1], [0.2, 0.8]])
E2 = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
PI2 = np.array([0.5, 0.5])
H = HMM(T2, E2, PI2)


@pytest.mark.parametrize("kwargs, param", [
    (dict(transition=[[0.9, 0.2], [0.2, 0.8]], emission=E2, initial=PI2), "transition"),
    (dict(transition=[[1.1, -0.1], [0.2, 0.8]], emission=E2, initial=PI2), "transition"),
    (dict(transition=np.ones((2, 3)) / 3, emission=E2, initial=PI2), "transition"),
    (dict(transition=T2, emission=E2[:, :2], initial=PI2), "emission"),
    (dict(transition=T2, emission=np.ones((3, 3)) / 3, initial=PI2), "emission"),
    (dict(transition=T2, emission=E2, initial=[0.3, 0.3]), "initial"),
    (dict(transition=T2, emission=E2, initial=[1.0, 0.0, 0.0]), "initial"),
    (dict(transition=np.where(T2 > 0.5, np.nan, T2), emission=E2, initial=PI2), "transition"),
    (dict(transition=T2, emission=E2, initial=PI2, factors=(np.eye(2), np.eye(2))), "factors"),
])
def test_hmm_rejects(kwargs, param):
    with pytest.raises(ValueError, match=param):
        HMM(**kwargs)


@pytest.mark.parametrize("call, param, exc", [
    (lambda: forward_predictive(H, [0, 3, 1]), "obs", ValueError),
    (lambda: forward_predictive(H, [0, -1]), "obs", ValueError),
    (lambda: forward_predictive(H, np.zeros((0, 3), dtype=int)), "obs", ValueError),
    (lambda: forward_predictive(H, np.zeros((0, 0), dtype=int)), "obs", ValueError),
    (lambda: forward_predictive(H, [0.5, 1.0]), "obs", TypeError),
    (lambda: forward_predictive(H, np.zeros((1, 2, 3), dtype=int)), "obs", ValueError),
    (lambda: forward(H, np.zeros((2, 2, 3), dtype=int), paired=True), "obs", ValueError),
    (lambda: forward_predictive("hmm", [0, 1]), "hmms", TypeError),
    (lambda: forward_predictive([], [0, 1]), "hmms", ValueError),
    (lambda: forward_predictive([H, random_hmm(3, 3, seed=0)], [0, 1]), "hmms", ValueError),
    (lambda: log_likelihood(H, [[0, 1], [2, 5]]), "obs", ValueError),
    (lambda: bruteforce_predictive(H, [0] * 30), "obs", ValueError),
    (lambda: windowed_predictive(H, [0, 1], 0), "r", ValueError),
    (lambda: hankel_matrix(H, 0), "past", ValueError),
    (lambda: phi_features(H, [0, 1]), "hmm", ValueError),
    (lambda: window_features([[0, 4]], 3, 1), "obs", ValueError),
    (lambda: gd_matrix_iterates(np.ones((1, 3, 2)), np.ones((1, 2, 2)), 0.1, 1), "Y", ValueError),
    (lambda: gd_matrix_iterates(np.ones((1, 3, 2)), np.ones((1, 3, 2)), 0.1, -1), "steps", ValueError),
])
def test_algorithms_reject(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


HS = [H, HMM(T2[::-1].copy(), E2, PI2)]
DEMOS = np.zeros((2, 3, 4), dtype=int)
TEST = np.zeros((2, 5), dtype=int)


@pytest.mark.parametrize("call, param", [
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.5], DEMOS[:1], TEST), "demos"),
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.5], DEMOS[0], TEST), "demos"),
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.5], DEMOS + 3, TEST), "demos"),
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.5], DEMOS[:0], TEST[:0]), "test"),
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.5], DEMOS, TEST[:, None]), "test"),
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.5], DEMOS, TEST - 1), "test"),
    (lambda: bayes_mixture_predictive(HS, [0.5, 0.6], DEMOS, TEST), "prior"),
    (lambda: bayes_mixture_predictive(HS, [1.0], DEMOS, TEST), "prior"),
    (lambda: demo_regression(np.zeros((2, 3), dtype=int), 3, 1), "demos"),
    (lambda: regression_predictive(np.zeros((2, 3, 4)), TEST, 3, 1), "W"),
    (lambda: bruteforce_mixture_weights(HS, [0.5, 0.5], DEMOS[0] + 3, TEST[0]), "demos"),
    (lambda: error_terms(HS, [0, 2], DEMOS, TEST, 1, 1, 0.1, 5.0), "tasks"),
    (lambda: error_terms(HS, [0, 1], DEMOS[:1], TEST, 1, 1, 0.1, 5.0), "demos"),
    (lambda: error_terms(HS, [0, 1], DEMOS, TEST, 0, 1, 0.1, 5.0), "r"),
    (lambda: error_terms(HS, [0, 1], DEMOS, TEST, 1, 1, 0.1, 5.0, model_pred=np.zeros((2, 5, 2))), "model_pred"),
])
def test_mixture_rejects(call, param):
    with pytest.raises(ValueError, match=param):
        call()


@pytest.mark.parametrize("call, param, exc", [
    (lambda: random_hmm(0, 3, seed=0), "S", ValueError),
    (lambda: random_hmm(3, 3, 4, seed=0), "rank", ValueError),
    (lambda: random_hmm(3, 3, seed=-1), "seed", ValueError),
    (lambda: random_hmm(3, 3, seed=0, duplicate_eps=2.0), "duplicate_eps", ValueError),
    (lambda: random_hmm(3, 3, seed=0, self_loop=1.0), "self_loop", ValueError),
    (lambda: random_hmm(3, 3, seed=0, initial="first"), "initial", ValueError),
    (lambda: random_hmm(3, 3.0, seed=0), "O", TypeError),
    (lambda: random_hmms(0, 3, 3, seed=0), "K", ValueError),
    (lambda: sample_sequences(H, 0, 3, seed=0), "n_sequences", ValueError),
    (lambda: sample_sequences([H], 2, 3, seed=0), "hmm", TypeError),
    (lambda: sample_sequences(H, 2, 0, seed=0), "length", ValueError),
    (lambda: sample_prompts(HS, 2, -1, 3, 3, seed=0), "n_demos", ValueError),
    (lambda: sample_prompts(HS, 2, 1, 0, 3, seed=0), "demo_len", ValueError),
    (lambda: sample_prompts(HS, 2, 1, 3, 3, seed=0, tasks=[0, 2]), "tasks", ValueError),
])
def test_generators_reject(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


@pytest.mark.parametrize("call, param, exc", [
    (lambda: hmm_construction(3, 0, 1, 0.1, 5.0, 8), "r", ValueError),
    (lambda: hmm_construction(3, 1, 1, 0.1, 0.0, 8), "beta", ValueError),
    (lambda: hmm_construction(3, 1, 1, float("nan"), 5.0, 8), "lr", ValueError),
    (lambda: hmm_construction(3, 9, 1, 0.1, 5.0, 8), "r", ValueError),
    (lambda: hmm_construction(3, 1, 1, 0.1, 5.0, 8)(torch.zeros(2, 2, 4, dtype=torch.long),
                                                    torch.zeros(3, 4, dtype=torch.long)), "demos", ValueError),
    (lambda: hmm_construction(3, 1, 1, 0.1, 5.0, 8)(torch.zeros(2, 2, 4, dtype=torch.long),
                                                    torch.full((2, 4), 3, dtype=torch.long)), "test", ValueError),
    (lambda: hmm_construction(3, 1, 1, 0.1, 5.0, 8)(torch.zeros(2, 2, 9, dtype=torch.long),
                                                    torch.zeros(2, 4, dtype=torch.long)), "demos", ValueError),
    (lambda: hmm_construction(3, 1, 1, 0.1, 5.0, 8)(torch.zeros(2, 2, 4), torch.zeros(2, 4, dtype=torch.long)),
     "demos", TypeError),
])
def test_construction_rejects(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


@pytest.mark.parametrize("kwargs, param", [
    (dict(n_hmms=0), "n_hmms"), (dict(rank=9), "rank"), (dict(loss="mse"), "loss"),
    (dict(d_model=30), "d_model"), (dict(max_demos=-1), "max_demos"), (dict(lr=0.0), "lr"),
    (dict(seed=-1), "seed"), (dict(emission_concentration=0.0), "emission_concentration"),
])
def test_train_config_rejects(kwargs, param):
    with pytest.raises(ValueError, match=param):
        HMMTrainConfig(**kwargs)


def _scaled_forward_loglik(hmm: HMM, obs: np.ndarray) -> float:
    """Probability-space forward with per-step normalisation (a second, independent route)."""
    alpha = hmm.initial * hmm.emission[:, obs[0]]
    c = alpha.sum()
    total = math.log(c)
    alpha = alpha / c
    for o in obs[1:]:
        alpha = (alpha @ hmm.transition) * hmm.emission[:, o]
        c = alpha.sum()
        total += math.log(c)
        alpha = alpha / c
    return total


def test_long_sequence_finite_and_correct():
    """A sequence of length 1e5 (P(o_1..o_T) ~ e^{-1e5}, far below float range): the batched
    forward stays finite, every predictive row sums to 1, and the log-likelihood matches a
    plain one-sequence scaled forward loop to 1e-9 relative."""
    hmm = random_hmm(3, 4, seed=0)
    obs, _ = sample_sequences(hmm, 1, 100_000, seed=0)
    res = forward(hmm, obs[0])
    pred = np.exp(res.log_predictive)
    assert np.all(np.isfinite(res.log_predictive)) and np.all(np.isfinite(res.log_prefix))
    assert np.abs(pred.sum(-1) - 1).max() < 1e-12
    ref = _scaled_forward_loglik(hmm, obs[0])
    assert abs(res.log_prefix[-1] - ref) <= 1e-9 * abs(ref)
    assert res.log_prefix[-1] < -1000                      # exp of it would underflow


def test_impossible_observation_is_minus_infinity():
    """An observation of probability 0 gives log-likelihood -inf (exactly), not nan."""
    hmm = HMM(np.eye(2), np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1.0, 0.0]))
    assert log_likelihood(hmm, [0, 1]) == -np.inf
    assert np.all(np.isfinite(forward_predictive(hmm, [0, 1])))


def test_empty_prefix_is_the_prior_predictive():
    """T = 0 is the contract's first row: forward_predictive of an empty sequence is the one
    row P(o_1 = .) = initial @ emission (also by enumeration), log P(empty) = 0, and a batch
    of empty sequences gives one such row each."""
    prior_row = PI2 @ E2
    np.testing.assert_allclose(forward_predictive(H, np.array([], dtype=int)), prior_row[None], rtol=0, atol=1e-15)
    np.testing.assert_allclose(forward_predictive(H, []), bruteforce_predictive(H, []), rtol=0, atol=1e-15)
    np.testing.assert_allclose(forward_predictive(HS, np.zeros((3, 0), dtype=int)),
                               np.broadcast_to(np.stack([h.initial @ h.emission for h in HS])[:, None, None], (2, 3, 1, 3)),
                               rtol=0, atol=1e-15)
    assert log_likelihood(H, []) == 0.0
    res = forward(H, [])
    assert res.log_filtered.shape == (0, 2) and res.log_state.shape == (1, 2)
    np.testing.assert_allclose(np.exp(res.log_state[0]), PI2, rtol=0, atol=1e-15)


def test_mixture_empty_test_is_the_demo_posterior_predictive():
    """An empty test sequence: one row sum_k w_k(demos) P_k(o_1 = .), the weights those of the
    demonstrations alone (checked by enumeration), and that row is row 0 of the same prompt
    with any test sequence (row 0 conditions on no test observation)."""
    hmms = random_hmms(3, 2, 3, seed=4)
    prior = np.array([0.2, 0.5, 0.3])
    demos = np.array([[0, 2, 1, 1], [2, 2, 0, 1]])
    pred, w = bayes_mixture_predictive(hmms, prior, demos, np.array([], dtype=int), return_weights=True)
    w_ref = bruteforce_mixture_weights(hmms, prior, demos, [])
    assert pred.shape == (1, 3) and w.shape == (1, 3)
    np.testing.assert_allclose(w[0], w_ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(pred[0], sum(wk * h.initial @ h.emission for wk, h in zip(w_ref, hmms)), rtol=0, atol=1e-14)
    np.testing.assert_allclose(pred[0], bayes_mixture_predictive(hmms, prior, demos, [1, 0, 2])[0], rtol=0, atol=1e-15)
    batch = bayes_mixture_predictive(hmms, prior, np.stack([demos, demos[::-1]]), np.zeros((2, 0), dtype=int))
    assert batch.shape == (2, 1, 3)
    np.testing.assert_allclose(batch[0], pred, rtol=0, atol=1e-15)
    no_demos = bayes_mixture_predictive(hmms, prior, np.zeros((0, 4), dtype=int), np.array([], dtype=int))
    np.testing.assert_allclose(no_demos[0], sum(p * h.initial @ h.emission for p, h in zip(prior, hmms)), rtol=0,
                               atol=1e-15)


def test_sampling_is_deterministic():
    a = sample_prompts(HS, 3, 2, 4, 5, seed=7)
    b = sample_prompts(HS, 3, 2, 4, 5, seed=7)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("task", "demos", "test", "test_states"))
    assert random_hmm(4, 3, 2, seed=1).transition.tobytes() == random_hmm(4, 3, 2, seed=1).transition.tobytes()
