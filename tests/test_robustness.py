"""Numerical robustness: softmax constructions at temperature 10^3 and beyond stay finite and
hit their hard-attention limit; float32 runs meet float32-sized tolerances against the
float64 numpy references.  (HMM filtering at length 10^5: tests/test_inputs_hmm.py.)

float32 tolerance: a few hundred float32 roundings (eps32 = 1.2e-7) relative to the scale
of the result, i.e. ``1e-5 * (1 + max |reference|)``, against ``1e-12 * (1 + ...)`` in float64.
"""

import numpy as np
import pytest
import torch

from mechverify.constructions.gd_icl import gd_transformer
from mechverify.constructions.hmm import hmm_construction
from mechverify.constructions.markov import exact_minimal_model
from mechverify.constructions.sparse_regression import pto_transformer
from mechverify.theory.algorithms.hmm import covariance_spectrum, demo_regression, gd_matrix_iterates, window_features
from mechverify.theory.algorithms.regression import gd_predict, pto_predict
from mechverify.theory.tasks.hmm import random_hmms, sample_prompts
from mechverify.theory.tasks.markov import MarkovTask, log_softmax, sample_sequences, teacher_logits
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training.markov import model_logits

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [1e3, 1e6])
def test_hmm_construction_at_high_temperature(beta, dtype):
    """With logits beta = 10^3 and 10^6 the previous-token heads are hard: the whole construction
    equals the numpy GD iterate applied to the exact one-hot windows."""
    O, r, K, n, L = 3, 2, 4, 5, 8
    p = sample_prompts(random_hmms(2, 3, O, seed=0), 4, n, L, L, seed=0)
    X, Y = demo_regression(p.demos, O, r)
    lr = 1.0 / float(covariance_spectrum(X)[:, -1].max())
    ref = np.einsum("bop,btp->bto", gd_matrix_iterates(X, Y, lr, K)[-1], window_features(p.test, O, r, lag=0))
    model = hmm_construction(O, r, K, lr, beta, L, dtype=dtype)
    with torch.no_grad():
        raw = model(torch.from_numpy(p.demos), torch.from_numpy(p.test)).double().numpy()
    assert np.all(np.isfinite(raw))
    assert np.abs(raw - ref).max() <= TOL[dtype] * (1 + np.abs(ref).max())


@pytest.mark.parametrize("build, reference", [
    (lambda: gd_transformer(5, 4, 0.3, dtype=torch.float32), lambda b: gd_predict(b.X, b.y, b.x_query, 0.3, 4)),
    (lambda: pto_transformer(5, 4, 0.05, dtype=torch.float32), lambda b: pto_predict(b.X, b.y, b.x_query, 0.05, 4)),
], ids=["gd", "pto"])
def test_float32_constructions(build, reference):
    b = sample_regression(256, 20, 5, sparsity=2, noise=0.1, seed=3)
    ref = reference(b)
    with torch.no_grad():
        pred = build().predict(*(torch.from_numpy(a).float() for a in (b.X, b.y, b.x_query))).double().numpy()
    err = np.abs(pred - ref).max()
    assert err <= TOL[torch.float32] * (1 + np.abs(ref).max()), err
    assert err > 1e-12 * (1 + np.abs(ref).max())          # it really ran in float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [1e3, 1e6])
def test_markov_exact_model_at_high_temperature(beta, dtype):
    """The hand-built minimal model at position-logit scale 10^3 and 10^6 attends uniformly on
    each block and nowhere else: its next-token law is the teacher's (KL per position ~ 0)."""
    task = MarkovTask(d=12, sizes=(2, 2, 2), alpha=(0.7, 0.3), L=6)
    seq = sample_sequences(task, 64, 0)
    logp = log_softmax(teacher_logits(task, seq))
    with torch.no_grad():
        logits = model_logits(exact_minimal_model(task, beta, dtype=dtype), torch.from_numpy(seq), task.w)
    logq = torch.log_softmax(logits.double(), -1).numpy()
    assert np.all(np.isfinite(logq))
    kl = float((np.exp(logp) * (logp - logq)).sum(-1).max())
    assert kl <= {torch.float64: 1e-12, torch.float32: 1e-6}[dtype], kl
