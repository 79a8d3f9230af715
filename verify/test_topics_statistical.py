"""Claims: Monte Carlo checks of the topic-structure spec (docs/topics.md §4.1, §4.2,
§4.4) - generator statistics, the block optimum c*, the Bayes reference - all with the
code-exact masking.  The c* table and the Bayes loss are our reference simulation
[reconstructed], not numbers from the paper.
"""

import functools
import math

import mpmath
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax

from mechverify.constructions.topics import attention_construction, value_construction
from mechverify.theory.dynamics.topics import half_time, stage_samples, two_stage_descent
from mechverify.theory.symbolic.topics import (bayes_loss, block_loss, block_loss_derivative, block_statistics,
                                               limit_block_contrast, limit_loss, minimise_block_loss,
                                               optimal_block_contrast, pair_same_topic_probability,
                                               stationarity_residual, theta_samples)
from mechverify.theory.tasks.topics import mask_documents, sample_lda
from mechverify.training.topics import LDASetting, heldout_loss
from verify.instances import Z_ALARM, se_verdict

PAPER = "li-li-risteski-2023"
# Each instance is a whole Monte Carlo experiment: one per run, its seed from the ``instance_seed``
# fixture (it follows --hypothesis-seed and the claim; a plain run is reproducible).

# docs/topics.md §4.4: (T, v, alpha, N range) -> (c*, loss at c*); the default row's c* is given as 5.66-5.68.
TABLE = {(10, 10, 0.1, (100, 150)): (5.67, 3.364), (10, 10, 0.05, (100, 150)): (5.73, 3.022),
         (10, 10, 0.5, (100, 150)): (6.27, 4.115), (10, 10, 1.0, (100, 150)): (6.70, 4.321),
         (10, 10, 0.1, (20, 30)): (5.81, 3.413), (10, 10, 0.1, (400, 600)): (5.64, 3.359),
         (100, 10, 0.1, (100, 150)): (17.9, 5.880), (5, 20, 0.1, (100, 150)): (4.70, 3.554)}


@pytest.mark.claim(id="topics/generator-pair-rate", paper=PAPER, provenance="reconstructed", kind="statistical")
def test_generator_pair_rate(record_claim, instance_seed):
    """Over 20k default documents, the fraction of ordered token pairs (i != j) of one document
    that share a topic is (1 + alpha)/(1 + T alpha) = 0.55: within Z_ALARM = 4 standard errors
    (of the pair-weighted ratio, documents as clusters, delta method), and the test has the power
    to see the spec's 0.01 ((4 + 1.645) SE <= 0.01; 10k documents give SE ~0.0021, too few)."""
    corpus = sample_lda(20_000, seed=instance_seed % 2**31)
    counts = np.stack([(corpus.topics == t).sum(axis=1) for t in range(10)], axis=1)
    N = corpus.lengths
    per_doc = (counts * (counts - 1)).sum(axis=1) / (N * (N - 1))
    rate = float((counts * (counts - 1)).sum() / (N * (N - 1)).sum())
    target = pair_same_topic_probability(10, 0.1)
    pairs = (N * (N - 1)).astype(float)
    same = (counts * (counts - 1)).sum(axis=1).astype(float)
    se = float(np.sqrt(np.sum((same - rate * pairs) ** 2)) / pairs.sum())      # cluster (per-document) SE
    verdict = se_verdict(rate - target, se, 0.01)
    detail = {"rate": rate, "target": target, "per_doc_mean": float(per_doc.mean()), **verdict}
    record_claim(abs(rate - target), Z_ALARM * se, detail=detail)
    assert verdict["powered"] and verdict["consistent"], detail


@pytest.mark.claim(id="topics/cstar-stationarity", paper=PAPER, provenance="reconstructed", kind="statistical")
def test_cstar_stationarity(record_claim, instance_seed):
    """Finite lengths (default, 20k documents): the Brent minimiser c* of L(c) satisfies
    E[sum_t m_t s_t] = E[M <s, softmax(c* s)>] to a relative 1e-3.  N -> infinity (200k draws of
    theta): the minimiser of the limit loss satisfies E<theta, softmax(c theta)> = sample
    E|theta|^2 to 1e-3, the sample E|theta|^2 is within 3 SE of (1 + alpha)/(1 + T alpha), the
    mpmath root of the identity with the closed-form right side is within 0.05 of that
    minimiser, and c* at N in 400-600 lies within 0.05 of the N -> infinity root."""
    s = instance_seed % 2**31
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


@functools.lru_cache(maxsize=None)
def _table_row(row, seed: int) -> tuple[float, float, float, float]:
    """c*, L(c*) and their standard errors for one row of the spec's table (20k documents;
    documents as clusters: SE(c*) = sd(per-document L') / sqrt(n) / mean per-document L'' (delta
    method at the root), SE(L) the ratio-estimator SE of the per-masked-token loss)."""
    stats = block_statistics(*row, 20_000, seed)
    c = minimise_block_loss(stats)
    M = stats.m.sum(axis=1)
    sm = softmax(c * stats.s, axis=1)
    inner = np.sum(stats.s * sm, axis=1)
    grad = -np.sum(stats.m * stats.s, axis=1) + M * inner
    curv = M * (np.sum(stats.s ** 2 * sm, axis=1) - inner ** 2)
    se_c = float(grad.std(ddof=1) / np.sqrt(M.size) / curv.mean())
    per_doc = np.sum(stats.m * (-c * stats.s + logsumexp(c * stats.s, axis=1, keepdims=True)), axis=1)
    loss = block_loss(c, stats)
    se_loss = float(np.sqrt(np.sum((per_doc - (loss - np.log(stats.words_per_topic)) * M) ** 2)) / M.sum())
    return c, loss, se_c, se_loss


ALPHA_ROWS = [(10, 10, a, (100, 150)) for a in (0.05, 0.1, 0.5, 1.0)]
T_ROWS = [(T, v, 0.1, (100, 150)) for T, v in ((5, 20), (10, 10), (100, 10))]
LIMIT_DRAWS = 2 ** 20        # N -> infinity roots: error (2 SE + Newton remainder) <= ~6e-4 each


@pytest.mark.claim(id="topics/cstar-table", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.parametrize("part", ["rows", "T-trend", pytest.param("alpha-trend", marks=pytest.mark.xfail(
    strict=True, reason="finding: c* is not monotone in alpha - at N in 100-150 (20k documents) 5.73 at "
    "alpha = 0.05 > 5.67 at 0.1 < 6.29 at 0.5 < 6.72 at 1.0 (the spec's own table shows 5.73 > 5.66-5.68), and "
    "at N -> infinity too: 5.6847 > 5.6328 < 6.4518 < 7.1808 (each +/- 3e-4, 2^22 draws with control "
    "variates); every row matches the table and c* rises with T"))])
def test_cstar_table(record_claim, instance_seed, part):
    """rows: every row of the spec's §4.4 table (20k documents per row): c* within 0.05 and the
    loss at c* within 0.01, or, where that is finer than two runs can resolve, within Z_ALARM = 4
    standard errors of the difference of two runs (the table is one 20k-document run of the same
    protocol: sqrt(2) x our SE; at T = 100 SE(c*) ~0.02, so 0.05 is ~1.8 SE of the difference and
    a fixed 0.05 failed at --hypothesis-seed 3: 17.977 vs 17.9).  T-trend: c* rises with T (5 < 10 < 100).  alpha-trend: c* rises with
    alpha (0.05 < 0.1 < 0.5 < 1) at N in 100-150 and at N -> infinity (the stationarity root of
    :func:`limit_block_contrast`, error <= ~6e-4 at 2^20 draws, asserted < 0.01 and the steps
    between neighbours larger than the errors)."""
    seed = instance_seed % 2**31
    if part == "rows":
        for row, (c_ref, loss_ref) in TABLE.items():
            c, loss, se_c, se_loss = _table_row(row, seed)
            tol_c = max(0.05, Z_ALARM * np.sqrt(2) * se_c)
            tol_loss = max(0.01, Z_ALARM * np.sqrt(2) * se_loss)
            err = max(abs(c - c_ref) / tol_c, abs(loss - loss_ref) / tol_loss)
            detail = {"row": [row[0], row[1], row[2], list(row[3])], "c": c, "loss": loss, "se_c": se_c,
                      "se_loss": se_loss, "allowed_c": tol_c, "allowed_loss": tol_loss}
            record_claim(err, 1.0, detail=detail)
            assert abs(c - c_ref) <= tol_c and abs(loss - loss_ref) <= tol_loss, detail
        return
    rows = T_ROWS if part == "T-trend" else ALPHA_ROWS
    finite = [_table_row(row, seed)[0] for row in rows]
    detail = {"rows": [list(r[:3]) for r in rows], "c_star": finite}
    ok = bool(np.all(np.diff(finite) > 0))
    if part == "alpha-trend":
        limit = [limit_block_contrast(10, a, LIMIT_DRAWS, seed) for _, _, a, _ in rows]
        detail["c_star_limit"] = [round(c, 5) for c, _ in limit]
        detail["c_star_limit_error"] = [float(f"{e:.2g}") for _, e in limit]
        assert max(e for _, e in limit) < 0.01, detail
        steps = np.diff([c for c, _ in limit])
        assert np.all(np.abs(steps) > 2 * max(e for _, e in limit)), detail   # each step is resolved
        ok = ok and bool(np.all(steps > 0))
    record_claim(0.0 if ok else 1.0, 0.5, detail=detail)
    assert ok, detail


def _unit_integral(a, b) -> mpmath.mpf:
    """int_0^1 u^a (1 - u)^b du (a, b > -1) by quadrature: split at 1/2 and substitute
    u = t^(1/(a+1)) on the left, 1 - u = t^(1/(b+1)) on the right, so the endpoint singularities
    of u^-0.9-type integrands become smooth (plain tanh-sinh is off by ~1% there)."""
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    left = mpmath.quad(lambda t: (1 - t ** (1 / (a + 1))) ** b, [0, mpmath.mpf(2) ** -(a + 1)]) / (a + 1)
    right = mpmath.quad(lambda t: (1 - t ** (1 / (b + 1))) ** a, [0, mpmath.mpf(2) ** -(b + 1)]) / (b + 1)
    return left + right


def _dirichlet_integral(exponents) -> mpmath.mpf:
    """int over the simplex of prod_t theta_t^(e_t) d theta, by stick-breaking
    (theta_i = u_i prod_{j<i} (1 - u_j)): a product of T - 1 one-dimensional quadratures."""
    e = [mpmath.mpf(x) for x in exponents]
    T, out = len(e), mpmath.mpf(1)
    for i in range(T - 1):
        out *= _unit_integral(e[i], sum(e[i + 1:]) + (T - 2 - i))
    return out


def _exact_predictive(alpha, counts, t) -> float:
    """P(next topic = t | visible topic counts) = int theta_t p(theta | counts) by quadrature
    (an independent route to the posterior predictive: no Gamma-function identity used)."""
    e = [alpha + n - 1 for n in counts]
    num = list(e)
    num[t] += 1
    return float(_dirichlet_integral(num) / _dirichlet_integral(e))


@pytest.mark.claim(id="topics/bayes-reference", paper=PAPER, provenance="reconstructed", kind="statistical")
def test_bayes_reference(record_claim, instance_seed):
    """exact: on 6 small random documents (T = 3, v = 2, alpha in {0.1, 0.7}, 8 positions, random
    visible and masked positions) ``bayes_loss`` equals the mean -log of the posterior predictive
    computed by quadrature over the Dirichlet posterior (1e-10 relative).
    Monte Carlo: the loss (alpha + n_t)/(T alpha + n)/v on 20k default documents equals the spec's
    3.177 within Z_ALARM = 4 standard errors of the difference of two runs (the spec's value is one
    20k-document run of the same protocol, so its SE is ours: documents as clusters, delta method;
    measured SE ~0.003 per run), and lies below the block optimum's loss on the same tokens.  Power:
    (4 + 1.645) SE_diff <= 0.03 is asserted; the spec's +/-0.01 is finer than two 20k-document runs
    can resolve ((4 + 1.645) sqrt(2) 0.003 = 0.025)."""
    s = instance_seed % 2**31
    rng = np.random.default_rng(s)
    worst = 0.0
    for alpha in (0.1, 0.7):
        for _ in range(3):
            topics = rng.integers(0, 3, size=(1, 8))
            visible = rng.random((1, 8)) < 0.6
            selected = ~visible & (rng.random((1, 8)) < 0.7)
            if not selected.any():
                visible[0, 0], selected[0, 0] = False, True
            counts = [int(np.sum(visible[0] & (topics[0] == t))) for t in range(3)]
            exact = np.mean([-math.log(_exact_predictive(alpha, counts, int(topics[0, j])) / 2)
                             for j in np.flatnonzero(selected[0])])
            got = bayes_loss(topics, selected, visible, 3, 2, alpha)
            worst = max(worst, abs(got / exact - 1))
    record_claim(worst, 1e-10, detail={"part": "exact", "worst_relative": worst})
    assert worst <= 1e-10, worst

    corpus = sample_lda(20_000, seed=s)
    m = mask_documents(corpus.tokens, corpus.vocab_size, seed=s + 1)
    loss = bayes_loss(corpus.topics, m.selected, m.key_visible, 10, 10, 0.1)
    # per-document sums of -log p and counts of masked tokens: the cluster SE of the ratio
    T, alpha, v = 10, 0.1, 10
    counts = ((corpus.topics[:, :, None] == np.arange(T)) & m.key_visible[:, :, None]).sum(axis=1)
    doc, pos = np.nonzero(m.selected)
    t = corpus.topics[doc, pos]
    nll = -np.log((alpha + counts[doc, t]) / (T * alpha + counts.sum(axis=1)[doc]) / v)
    per_doc, per_n = np.bincount(doc, nll, minlength=20_000), np.bincount(doc, minlength=20_000)
    assert abs(per_doc.sum() / per_n.sum() - loss) <= 1e-12 * loss
    se = float(np.sqrt(np.sum((per_doc - loss * per_n) ** 2)) / per_n.sum())
    se_diff = math.sqrt(2) * se
    stats = block_statistics(10, 10, 0.1, (100, 150), 20_000, s)
    block = block_loss(minimise_block_loss(stats), stats)
    verdict = se_verdict(loss - 3.177, se_diff, 0.03)
    detail = {"bayes": loss, "spec": 3.177, "se_run": se, "block_optimum": block, **verdict}
    record_claim(abs(loss - 3.177), Z_ALARM * se_diff, detail=detail)
    assert verdict["powered"] and verdict["consistent"] and loss < block, detail


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
