"""Boundaries of input guards and small reference branches that no claim reaches (found by
``make mutation``: each test here kills a mutant that survived the 10 % sample).

A guard is tested on both sides of its boundary: the smallest valid input is accepted and the
first invalid one is refused with a message naming the parameter.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mechverify.constructions.encoders import MarkovSequences, MaskedLM, StackedRegression, regression_layout
from mechverify.constructions.hmm import hmm_construction
from mechverify.theory.algorithms.risk import gd_conditional_risk
from mechverify.theory.algorithms.tuning import SparseComparison, empirical_risk
from mechverify.theory.dynamics.gd_icl import flow_closed_form, integrate_flow
from mechverify.theory.symbolic import lsa_optimum as lsa
from mechverify.theory.tasks.zipf import zipf_markov


@pytest.mark.parametrize("call", [
    lambda noise: lsa.zfb_gamma([1.0, 2.0], 10, noise),
    lambda noise: lsa.zfb_risk(np.eye(2), np.eye(2), 10, noise),
    lambda noise: lsa.zfb_long_prompt_floor([1.0, 2.0], 10, noise),
    lambda noise: lsa.zfb_floor_bound([1.0, 2.0], noise),
    lambda noise: lsa.best_one_step_lr(2, 10, noise),
    lambda noise: lsa.ahn_inverse_prior_min_risk(2, 10, noise),
], ids=["zfb_gamma", "zfb_risk", "zfb_long_prompt_floor", "zfb_floor_bound", "best_one_step_lr",
        "ahn_inverse_prior_min_risk"])
def test_closed_forms_refuse_negative_noise(call):
    assert np.all(np.isfinite(call(0.0)))
    with pytest.raises(ValueError, match="noise"):
        call(-0.1)


def test_zero_gd_steps_is_the_zero_predictor_risk():
    rng = np.random.default_rng(0)
    X, w = rng.standard_normal((3, 8, 4)), rng.standard_normal((3, 4))
    assert np.allclose(gd_conditional_risk(X, w, 0.5, 0.1, 0), (w ** 2).sum(axis=1), rtol=1e-13)
    with pytest.raises(ValueError, match="steps"):
        gd_conditional_risk(X, w, 0.5, 0.1, -1)


def test_empirical_risk_is_half_the_mean_squared_error():
    assert empirical_risk(np.array([1.0, -2.0]), np.array([0.0, 1.0])) == 0.5 * (1.0 + 9.0) / 2


def test_sparse_comparison_takes_two_tasks():
    assert SparseComparison(d=4, s=1, n=8, noise=0.1, n_tasks=2).n_tasks == 2
    with pytest.raises(ValueError, match="n_tasks"):
        SparseComparison(d=4, s=1, n=8, noise=0.1, n_tasks=1)


def test_flow_closed_form_against_the_integrated_flow():
    """The closed form's M_Gamma is written out inline; checked against solve_ivp on the flow
    (whose M_Gamma comes from ``m_gamma``) with noise, at a scalar time and on a grid."""
    lam, N, noise = np.array([0.5, 1.0, 2.0]), 7, 0.6
    G0 = 0.1 * np.arange(9.0).reshape(3, 3)
    t = np.array([0.0, 0.3, 1.0, 4.0])
    closed = flow_closed_form(G0, lam, N, t, noise=noise)
    ode = integrate_flow(G0, lam, N, t, noise=noise, rtol=1e-12, atol=1e-14)
    assert np.abs(closed - ode).max() <= 1e-9
    single = flow_closed_form(G0, lam, N, 1.0, noise=noise)
    assert single.shape == (3, 3) and np.allclose(single, closed[2], rtol=0, atol=1e-15)
    assert flow_closed_form(G0[:1, :1], lam[:1], N, t).shape == (4, 1, 1)      # one eigenvalue
    with pytest.raises(ValueError, match="t_eval"):
        integrate_flow(G0, lam, N, [])
    assert integrate_flow(G0, lam, N, [0.5]).shape[0] == 1                     # one time


def test_zipf_sample_takes_seed_zero():
    chain = zipf_markov(vocab=8)
    assert chain.sample(2, 5, seed=0).shape == (2, 5)
    with pytest.raises(ValueError, match="seed"):
        chain.sample(2, 5, seed=-1)


def test_encoders_accept_their_smallest_inputs():
    stacked = StackedRegression(regression_layout(3))
    f64 = dict(dtype=torch.float64)
    assert stacked.encode((torch.randn(1, 1, 3, **f64), torch.randn(1, 1, **f64), torch.randn(1, 3, **f64))).shape == (1, 2, 4)
    with pytest.raises(ValueError, match="X must have shape"):                       # no prompt
        stacked.encode((torch.randn(0, 2, 3, **f64), torch.randn(0, 2, **f64), torch.randn(0, 3, **f64)))
    seqs = MarkovSequences(d=3, w=2)
    assert seqs.encode(torch.zeros(1, 3, dtype=torch.int64)).shape == (1, 2)      # L = 1
    with pytest.raises(ValueError, match="tokens"):
        seqs.encode(torch.zeros(1, 2, dtype=torch.int64))                         # L = 0


def test_masked_lm_refuses_negative_ids():
    ids = np.array([[0, -1]])
    masked = SimpleNamespace(inputs=ids, key_visible=np.ones_like(ids), selected=np.zeros_like(ids),
                             labels=np.zeros_like(ids))
    with pytest.raises(ValueError, match="inputs"):
        MaskedLM(vocab=4).encode(masked)


def test_hmm_construction_takes_one_observation():
    model = hmm_construction(n_obs=3, r=1, n_gd_layers=1, lr=0.5, beta=1.0, max_len=4)
    demos = torch.zeros(2, 1, 3, dtype=torch.int64)
    assert model(demos, torch.zeros(2, 1, dtype=torch.int64)).shape == (2, 1, 3)     # a test of length 1
    with pytest.raises(ValueError, match="test must hold sequences of length"):
        model(demos, torch.zeros(2, 0, dtype=torch.int64))
