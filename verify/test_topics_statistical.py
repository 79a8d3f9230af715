"""Claims: Monte Carlo checks of the topic-structure spec (docs/topics.md §4.1, §4.2,
§4.4) - generator statistics, the block optimum c*, the Bayes reference - all with the
code-exact masking.  The c* table and the Bayes loss are our reference simulation
[reconstructed], not numbers from the paper.
"""

import math

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from scipy.optimize import minimize_scalar

from mechverify.constructions.topics import attention_construction, value_construction
from mechverify.theory.dynamics.topics import half_time, stage_samples, two_stage_descent
from mechverify.theory.symbolic.topics import (bayes_loss, block_loss, block_loss_derivative, block_statistics, limit_loss,
                                         minimise_block_loss, optimal_block_contrast, pair_same_topic_probability,
                                         stationarity_residual, theta_samples)
from mechverify.theory.tasks.topics import mask_documents, sample_lda
from mechverify.training.topics import LDASetting, heldout_loss
from verify.instances import seeds

PAPER = "li-li-risteski-2023"
STAT = settings(max_examples=1, deadline=None, phases=(Phase.explicit, Phase.generate))

# docs/topics.md §4.4: (T, v, alpha, N range) -> (c*, loss at c*); the default row's c* is given as 5.66-5.68.
TABLE = {(10, 10, 0.1, (100, 150)): (5.67, 3.364), (10, 10, 0.05, (100, 150)): (5.73, 3.022),
         (10, 10, 0.5, (100, 150)): (6.27, 4.115), (10, 10, 1.0, (100, 150)): (6.70, 4.321),
         (10, 10, 0.1, (20, 30)): (5.81, 3.413), (10, 10, 0.1, (400, 600)): (5.64, 3.359),
         (100, 10, 0.1, (100, 150)): (17.9, 5.880), (5, 20, 0.1, (100, 150)): (4.70, 3.554)}


@pytest.mark.claim(id="topics/generator-pair-rate", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_generator_pair_rate(record_claim, seed):
    """Over 10k default documents, the fraction of ordered token pairs (i != j) of one document
    that share a topic is (1 + alpha)/(1 + T alpha) = 0.55 within 0.01."""
    corpus = sample_lda(10_000, seed=seed % 2**31)
    counts = np.stack([(corpus.topics == t).sum(axis=1) for t in range(10)], axis=1)
    N = corpus.lengths
    per_doc = (counts * (counts - 1)).sum(axis=1) / (N * (N - 1))
    rate = float((counts * (counts - 1)).sum() / (N * (N - 1)).sum())
    target = pair_same_topic_probability(10, 0.1)
    se = float(per_doc.std(ddof=1) / math.sqrt(per_doc.size))
    record_claim(abs(rate - target), 0.01, detail={"rate": rate, "target": target, "se": se})
    assert abs(rate - target) <= 0.01


@pytest.mark.claim(id="topics/cstar-stationarity", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_cstar_stationarity(record_claim, seed):
    """Finite lengths (default, 20k documents): the Brent minimiser c* of L(c) satisfies
    E[sum_t m_t s_t] = E[M <s, softmax(c* s)>] to a relative 1e-3.  N -> infinity (200k draws of
    theta): the minimiser of the limit loss satisfies E<theta, softmax(c theta)> = sample
    E|theta|^2 to 1e-3, the sample E|theta|^2 is within 3 SE of (1 + alpha)/(1 + T alpha), the
    mpmath root of the identity with the closed-form right side is within 0.05 of that
    minimiser, and c* at N in 400-600 lies within 0.05 of the N -> infinity root."""
    s = seed % 2**31
    stats = block_statistics(10, 10, 0.1, (100, 150), 20_000, s)
    c = minimise_block_loss(stats)
    lhs = float(np.sum(stats.m * stats.s))
    rel = abs(block_loss_derivative(c, stats)) * stats.m.sum() / lhs
    theta = theta_samples(10, 0.1, 200_000, s)
    norm2 = np.sum(theta ** 2, axis=1)
    c_lim = float(minimize_scalar(lambda x: limit_loss(x, theta, 10), bounds=(0, 60), method="bounded",
                                  options={"xatol": 1e-9}).x)
    resid = abs(stationarity_residual(c_lim, theta, float(norm2.mean())))
    z = abs(norm2.mean() - pair_same_topic_probability(10, 0.1)) / (norm2.std(ddof=1) / math.sqrt(norm2.size))
    c_root = optimal_block_contrast(10, 10, 0.1, None, n_docs=200_000, seed=s)
    c_long = optimal_block_contrast(10, 10, 0.1, (400, 600), n_docs=20_000, seed=s)
    detail = {"c_star": c, "relative_residual": rel, "c_limit_min": c_lim, "limit_residual": resid,
              "c_limit_root": c_root, "c_star_400_600": c_long, "norm2_z": float(z)}
    record_claim(max(rel, resid), 1e-3, detail=detail)
    assert rel <= 1e-3 and resid <= 1e-3, detail
    assert z <= 3 and abs(c_root - c_lim) <= 0.05 and abs(c_long - c_root) <= 0.05, detail


@pytest.fixture(scope="module")
def table_rows():
    """c* and L(c*) for every row of the spec's table (20k documents per row, seed 0)."""
    got = {}
    for row in TABLE:
        stats = block_statistics(*row, 20_000, 0)
        c = minimise_block_loss(stats)
        got[row] = (c, block_loss(c, stats))
    return got


@pytest.mark.claim(id="topics/cstar-table", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.xfail(strict=True, reason="finding: c* is not monotone in alpha - 5.73 at alpha = 0.05 > 5.67 at "
                                       "0.1 < 6.29 at 0.5 < 6.72 at 1.0 (the spec's own table shows 5.73 > 5.66-5.68); "
                                       "every row matches the table and c* rises with T (4.71, 5.67, 17.94)")
def test_cstar_table(record_claim, table_rows):
    """Every row of the docs/topics.md §4.4 table (20k documents per row): c* within 0.05 and the loss
    at c* within 0.01; c* rises with alpha (0.05 < 0.1 < 0.5 < 1) and with T (5 < 10 < 100)."""
    for row, (c, loss) in table_rows.items():
        c_ref, loss_ref = TABLE[row]
        err = max(abs(c - c_ref) / 0.05, abs(loss - loss_ref) / 0.01)
        record_claim(err, 1.0, detail={"row": [row[0], row[1], row[2], list(row[3])], "c": c, "loss": loss})
    _check_rows(table_rows)
    by_alpha = [table_rows[(10, 10, a, (100, 150))][0] for a in (0.05, 0.1, 0.5, 1.0)]
    by_T = [table_rows[(T, v, 0.1, (100, 150))][0] for T, v in ((5, 20), (10, 10), (100, 10))]
    assert np.all(np.diff(by_T) > 0), by_T
    assert np.all(np.diff(by_alpha) > 0), by_alpha


def _check_rows(table_rows):
    for row, (c, loss) in table_rows.items():
        c_ref, loss_ref = TABLE[row]
        assert abs(c - c_ref) <= 0.05 and abs(loss - loss_ref) <= 0.01, (row, c, loss)


def test_cstar_table_rows(table_rows):
    """The table part of topics/cstar-table alone (the claim's alpha trend is a finding): every
    row within c* +/- 0.05 and loss +/- 0.01, c* rising with T and with alpha from 0.1 on."""
    _check_rows(table_rows)
    by_alpha = [table_rows[(10, 10, a, (100, 150))][0] for a in (0.1, 0.5, 1.0)]
    by_T = [table_rows[(T, v, 0.1, (100, 150))][0] for T, v in ((5, 20), (10, 10), (100, 10))]
    assert np.all(np.diff(by_T) > 0) and np.all(np.diff(by_alpha) > 0), (by_alpha, by_T)


@pytest.mark.claim(id="topics/bayes-reference", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_bayes_reference(record_claim, seed):
    """The posterior-predictive loss (alpha + n_t)/(T alpha + n)/v on 20k default documents is
    3.177 within 0.01, and below the block optimum's loss on the same masked tokens."""
    s = seed % 2**31
    corpus = sample_lda(20_000, seed=s)
    m = mask_documents(corpus.tokens, corpus.vocab_size, seed=s + 1)
    loss = bayes_loss(corpus.topics, m.selected, m.key_visible, 10, 10, 0.1)
    stats = block_statistics(10, 10, 0.1, (100, 150), 20_000, s)
    block = block_loss(minimise_block_loss(stats), stats)
    record_claim(abs(loss - 3.177), 0.01, detail={"bayes": loss, "block_optimum": block})
    assert abs(loss - 3.177) <= 0.01 and loss < block


# ---------------------------------------------------------------- no claim id
def test_constructions_against_optimum():
    """On 500 default test documents: the value construction at the theory's c* has the block
    optimum's loss up to sampling (within 0.02 of 3.364), c* beats c* +/- 1, and the hand-built
    topic attention (beta = 1.8) lowers the loss further (the stage-2 gain)."""
    setting = LDASetting(n_train=1, n_test=500, seed=3)
    c_star = optimal_block_contrast(10, 10, 0.1, (100, 150))
    losses = {c: heldout_loss(value_construction(10, 10, c), setting) for c in (c_star - 1, c_star, c_star + 1)}
    attn = heldout_loss(attention_construction(10, 10, c_star, 1.8), setting)
    assert abs(losses[c_star] - 3.364) <= 0.02, losses
    assert losses[c_star] < min(losses[c_star - 1], losses[c_star + 1]), losses
    assert attn < losses[c_star] - 0.03, (attn, losses)


def test_two_stage_dynamics_model():
    """The reduced dynamics (mechverify.theory.dynamics.topics): from (c, q, k) = (0, sigma, sigma)
    the attention product beta reaches half its final value after c does, later for smaller
    sigma; with no informative queries (p_keep = p_random = 0) beta never moves."""
    samples = stage_samples(n_samples=1000, seed=0)
    runs = {sig: two_stage_descent(sig, samples, steps=600) for sig in (1e-3, 1e-2, 1e-1)}
    t_v = {s: half_time(r["c"]) for s, r in runs.items()}
    t_a = {s: half_time(r["beta"]) for s, r in runs.items()}
    assert all(t_a[s] > t_v[s] for s in runs), (t_v, t_a)
    assert t_a[1e-3] > t_a[1e-2] > t_a[1e-1], t_a
    blind = two_stage_descent(1e-2, stage_samples(n_samples=500, p_random=0.0, p_keep=0.0, seed=1), steps=200)
    assert np.allclose(blind["beta"], 1e-4)
