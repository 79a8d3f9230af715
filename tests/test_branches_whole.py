"""Branches found by running every mutant of whole modules (2026-12-06, ``make mutation
MUTATION_ARGS="<module>"``), after the tests written against the sampled slices: the
closed-form risks (a ridge penalty of 0, an all-zero design, the round-off eigenvalues of a
rank-one design), the symbolic GD layer's input guard, the realignment's sign and the
operator-Schmidt rank's scale, the tuned baselines (``tune_gd_lr``, reached by no untrained
test before; ``tune_gdpp``'s default start and its infinite risk for a diverging start; the
Lasso penalty's sqrt(log d / n); the sparse tuner's step range and tie-breaks;
``SparseComparison``'s defaults and immutability) and the ZFB flow's input guards; later
whole-module runs (2026-12-07) add their own sections below, each headed by its module.  The
README's mutation section gives the first-sight rates and the equivalent mutants."""

import numpy as np
import pytest
import torch
from threadpoolctl import ThreadpoolController
from torch.utils.flop_counter import FlopCounterMode

from mechverify.constructions import kernel
from mechverify.constructions.encoders import regression_layout
from mechverify.constructions.modules import GPT, LinearAttention, LinearTransformer, SoftmaxAttention, check_tensor
from mechverify.theory.algorithms import hmm as hmm_ref
from mechverify.theory.algorithms.risk import gd_conditional_risk, ridge_conditional_risk
from mechverify.theory.tasks.hmm import HMM, random_hmm, random_hmms


@pytest.mark.parametrize("lam", [0.0, -0.1])
def test_ridge_risk_rejects_a_penalty_that_is_not_positive(lam):
    X, w = np.ones((1, 4, 2)), np.ones((1, 2))
    with pytest.raises(ValueError, match="lam must be > 0"):
        ridge_conditional_risk(X, w, 0.5, lam)


def test_gd_risk_on_an_all_zero_design_is_the_norm_of_w():
    # no data: GD never leaves 0, so the risk is |w*|^2 and the variance term is 0
    # (the zero eigenvalues are cut, not inverted: no 0/0)
    w = np.array([[1.0, -2.0, 0.5]])
    with np.errstate(all="raise"):
        risk = gd_conditional_risk(np.zeros((1, 5, 3)), w, 0.7, 0.3, 4)
    assert risk[0] == pytest.approx(5.25, rel=1e-15)


def test_gd_risk_cuts_the_round_off_eigenvalues_of_a_rank_one_design():
    # S = q q^T in exact arithmetic (X's rows: sqrt(n) q, 0, 0), rotated at random so that the
    # d - 1 null eigenvalues come out of eigh as round-off (~1e-17, some > 0). At lr = 1 one
    # step fits the q direction exactly and the null directions never move, so the risk is
    # |w|^2 - (q.w)^2 + sigma^2 / n for every t >= 1. The null directions must be cut: a
    # round-off eigenvalue eps kept as 1/eps adds (1 - (1 - eps)^t)^2 / eps ~ t^2 eps, while
    # the bias terms carry only t eps of error; the tolerance is that bias bound, 4 d t eps_machine.
    d, n, steps, noise = 6, 3, 10**6, 0.5
    rng = np.random.default_rng(0)
    for _ in range(8):
        q = np.linalg.qr(rng.standard_normal((d, d)))[0][:, 0]
        X = np.zeros((1, n, d))
        X[0, 0] = np.sqrt(n) * q
        w = rng.standard_normal((1, d))
        exact = w[0] @ w[0] - (q @ w[0]) ** 2 + noise**2 / n
        got = gd_conditional_risk(X, w, noise, 1.0, steps)[0]
        assert abs(got - exact) <= 4 * d * steps * np.finfo(float).eps * exact


def test_symbolic_lsa_layer_takes_exactly_n_columns_and_rejects_fewer_or_a_non_matrix():
    from mechverify.theory.symbolic import gd_layer as gl
    d, n = 2, 3
    s = gl.gd_layer_symbols(d, n)
    W_KQ, W_PV = gl.vo_weights(s["w0"], s["eta"])
    context = s["X"].col_join(s["y"])                        # the n context tokens, no query
    out = gl.lsa_layer(context, W_KQ, W_PV, n)
    with_query = gl.lsa_layer(context.row_join(gl.sp.zeros(d + 1, 1)), W_KQ, W_PV, n)
    assert (out - with_query[:, :n]).applyfunc(gl.sp.expand) == gl.sp.zeros(d + 1, n)
    for bad in (context[:, : n - 1], [[0.0] * (n + 1)] * (d + 1)):
        with pytest.raises(ValueError, match="Z must be a sympy matrix"):
            gl.lsa_layer(bad, W_KQ, W_PV, n)


def test_realignment_of_p_c_k_is_the_outer_product_of_vec_p_and_vec_k():
    from mechverify.theory.symbolic.sparse_regression import realignment
    rng = np.random.default_rng(0)
    P, K = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    M = realignment(lambda C: P @ C @ K, 3)
    np.testing.assert_allclose(M, np.outer(P.ravel(), K.ravel()), rtol=0, atol=1e-15)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_operator_schmidt_rank_does_not_depend_on_the_scale_of_the_map(scale):
    # the cutoff is relative to the largest singular value: a rank-2 map keeps rank 2 however
    # it is scaled, neither losing its terms (small scale) nor counting round-off (large scale)
    from mechverify.theory.symbolic.sparse_regression import operator_schmidt_rank
    rng = np.random.default_rng(1)
    P1, K1, P2, K2 = rng.standard_normal((4, 4, 4))
    assert operator_schmidt_rank(lambda C: scale * (P1 @ C @ K1 + P2 @ C @ K2), 4) == 2


def _regression_instance(B=64, n=10, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X, w = rng.standard_normal((B, n, d)), rng.standard_normal((B, d))
    xq = rng.standard_normal((B, d))
    return X, np.einsum("bnd,bd->bn", X, w), xq, np.einsum("bd,bd->b", xq, w)


@pytest.mark.parametrize("steps", [1, 3])
def test_tuned_gd_step_is_the_best_step_size_in_its_range(steps):
    from mechverify.theory.algorithms.regression import gd_predict
    from mechverify.theory.algorithms.tuning import empirical_risk, tune_gd_lr
    X, y, xq, yq = _regression_instance()
    lr_max = 2.0
    lr, risk = tune_gd_lr(X, y, xq, yq, steps, lr_max)
    assert lr_max * np.exp(-12.0) <= lr <= lr_max
    assert risk == pytest.approx(empirical_risk(gd_predict(X, y, xq, lr, steps), yq), rel=1e-12)
    grid = np.geomspace(lr_max * np.exp(-12.0), lr_max, 2000)
    best = min(empirical_risk(gd_predict(X, y, xq, a, steps), yq) for a in grid)
    assert risk <= best + 1e-9                     # Brent's xatol 1e-6 on log lr: far below the grid step
    with pytest.raises(ValueError, match="lr_max must be > 0"):
        tune_gd_lr(X, y, xq, yq, steps, 0.0)


def test_tune_gdpp_starts_from_plain_gd_by_default_and_rejects_a_zero_step():
    from mechverify.theory.algorithms.tuning import tune_gdpp
    X, y, xq, yq = _regression_instance()
    assert tune_gdpp(X, y, xq, yq, 2, lr0=0.3) == tune_gdpp(X, y, xq, yq, 2, lr0=0.3, gamma0=0.0)
    with pytest.raises(ValueError, match="lr0 must be > 0"):
        tune_gdpp(X, y, xq, yq, 2, lr0=0.0)


def test_tune_gdpp_gives_a_diverging_start_infinite_risk_not_nan():
    # half the prompts have X ~ 1e60: at lr 1 their GD++ iterates overflow to nan within 4
    # steps. Such a point must score +inf (Nelder-Mead ranks points by comparison, and nan
    # compares false with everything), and since the whole simplex diverges, so does the result
    from mechverify.theory.algorithms.regression import gdpp_predict
    from mechverify.theory.algorithms.tuning import tune_gdpp
    X, y, xq, yq = _regression_instance(B=8)
    X[:4] *= 1e60
    y[:4] *= 1e60
    with np.errstate(all="ignore"):
        assert np.isnan(gdpp_predict(X, y, xq, 1.0, 0.0, 4)[:4]).all()
        assert tune_gdpp(X, y, xq, yq, 4, lr0=1.0)[2] == np.inf


def test_the_lasso_baseline_scales_its_penalty_by_sqrt_log_d_over_n():
    # lam = c * max(sigma, 0.1) * sqrt(log d / n), with n != d so that the two cannot be swapped
    from mechverify.theory.algorithms.regression import lasso_weights
    from mechverify.theory.algorithms.tuning import sparse_method_weights
    X, y, _, _ = _regression_instance(B=6, n=12, d=5)
    for noise in (0.05, 0.5):
        lam = 0.7 * max(noise, 0.1) * np.sqrt(np.log(5) / 12)
        np.testing.assert_allclose(sparse_method_weights("lasso", {"c": 0.7}, X, y, noise),
                                   lasso_weights(X, y, lam, tol=1e-7), rtol=0, atol=1e-12)


def test_sparse_tuning_searches_steps_one_to_max_steps():
    # noise-free, one direction 20x weaker: GD's risk still falls at every step up to 200, so
    # the tuned step count is the last one allowed: the spec's T <= 200 by default, and 1 when
    # only one step is allowed (t = 0, the zero estimator, is never a candidate)
    from mechverify.theory.algorithms.tuning import tune_sparse_method
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 20, 4))
    X[:, :, 0] *= 0.05
    w = rng.standard_normal((16, 4))
    y = np.einsum("bnd,bd->bn", X, w)
    params, risk = tune_sparse_method("gd", X, y, w, 0.0)
    assert params["steps"] == 200 and 0 < risk < np.sum(w**2, axis=1).mean()
    params1, risk1 = tune_sparse_method("gd", X, y, w, 0.0, max_steps=1)
    assert params1["steps"] == 1 and risk < risk1 < np.sum(w**2, axis=1).mean()


def test_sparse_tuning_breaks_ties_towards_the_first_grid_point_and_the_fewest_steps():
    from mechverify.theory.algorithms.tuning import SPARSE_GRIDS, sparse_method_weights, tune_sparse_method
    rng = np.random.default_rng(0)
    # pure noise far below the stated sigma: every Lasso penalty from the second grid point on
    # gives w_hat = 0 exactly (risk 0); the tuner keeps the smallest such penalty
    X, w = rng.standard_normal((16, 20, 4)), np.zeros((16, 4))
    params, risk = tune_sparse_method("lasso", X, 0.05 * rng.standard_normal((16, 20)), w, 0.5)
    assert risk == 0.0 and params["c"] == SPARSE_GRIDS["lasso"][1]
    # noise-free and well conditioned: GD reaches its floating-point fixed point long before
    # step 200, and the tuner keeps the first step at which the best risk is reached
    X, w = rng.standard_normal((16, 200, 4)), rng.standard_normal((16, 4))
    y = np.einsum("bnd,bd->bn", X, w)
    params, risk = tune_sparse_method("gd", X, y, w, 0.0)

    def gd_risk(steps):
        return np.mean(np.sum((sparse_method_weights("gd", {**params, "steps": steps}, X, y, 0.0) - w) ** 2, axis=1))

    assert params["steps"] < 200 and gd_risk(params["steps"]) == risk < gd_risk(params["steps"] - 1)


def test_sparse_comparison_is_immutable_and_uses_the_specs_300_repetitions():
    import dataclasses

    from mechverify.theory.algorithms.tuning import SparseComparison
    c = SparseComparison(16, 4, 16, 0.5)
    # spec sparse_regression_icl.md §4: 300 repetitions, T <= 200; the documented default stream is 0
    assert (c.n_tasks, c.max_steps, c.seed) == (300, 200, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_tasks = 10


@pytest.mark.parametrize("lam, what", [([], "empty"), ([1.0, 0.0], "a zero eigenvalue"),
                                       ([1.0, -0.5, 2.0], "one negative among positives")])
def test_zfb_flow_rejects_a_diagonal_that_is_not_positive(lam, what):
    from mechverify.theory.dynamics.gd_icl import m_gamma
    with pytest.raises(ValueError, match="lam"):
        m_gamma(lam, 10)


def test_zfb_m_gamma_rejects_a_negative_noise():
    from mechverify.theory.dynamics.gd_icl import m_gamma
    with pytest.raises(ValueError, match="noise must be >= 0"):
        m_gamma([1.0, 2.0], 10, noise=-0.5)


def test_sparse_comparison_allows_a_dense_task():
    from mechverify.theory.algorithms.tuning import SparseComparison
    assert SparseComparison(4, 4, 8, 0.5).s == 4                 # s = d: every coordinate active


@pytest.mark.parametrize("bad", [[-1.0, 0.0, 1.0], [0.0, 2.0, 1.0, 3.0]])
def test_zfb_flow_rejects_a_negative_or_decreasing_time(bad):
    from mechverify.theory.dynamics.gd_icl import integrate_flow
    with pytest.raises(ValueError, match="t_eval must be non-negative and non-decreasing"):
        integrate_flow(np.zeros((2, 2)), [1.0, 2.0], 10, bad)


def test_zfb_flow_accepts_repeated_times_and_rejects_zero_tolerances():
    from mechverify.theory.dynamics.gd_icl import integrate_flow
    G = integrate_flow(np.zeros((2, 2)), [1.0, 2.0], 10, [0.0, 0.5, 0.5, 1.0])
    assert np.array_equal(G[1], G[2]) and not np.array_equal(G[0], G[1])
    for kw in ({"rtol": 0.0}, {"atol": 0.0}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be > 0"):
            integrate_flow(np.zeros((2, 2)), [1.0, 2.0], 10, [0.0], **kw)   # t = 0: nothing to integrate


@pytest.mark.parametrize("lam", [[], [1.0, 0.0], [1.0, -0.5, 2.0]])
def test_zfb_closed_form_rejects_a_diagonal_that_is_not_positive(lam):
    from mechverify.theory.dynamics.gd_icl import flow_closed_form
    d = len(lam)
    with pytest.raises(ValueError, match="lam must be a non-empty vector of positive"):
        flow_closed_form(np.zeros((d, d)), lam, 10, 1.0)


def test_zfb_closed_form_rejects_a_negative_noise_or_time():
    from mechverify.theory.dynamics.gd_icl import flow_closed_form
    with pytest.raises(ValueError, match="noise must be >= 0"):
        flow_closed_form(np.zeros((2, 2)), [1.0, 2.0], 10, 1.0, noise=-0.5)
    with pytest.raises(ValueError, match="t must be >= 0"):
        flow_closed_form(np.zeros((2, 2)), [1.0, 2.0], 10, [0.0, -1.0, 2.0])


def test_regression_defaults_are_the_noise_free_seed_zero_stream():
    """Called with no noise and no seed, the sampler gives y = X w exactly, from the seed-0 stream."""
    from mechverify.theory.tasks.regression import sample_regression

    batch = sample_regression(3, 4, 2)
    np.testing.assert_array_equal(batch.y, np.einsum("bnd,bd->bn", batch.X, batch.w))
    np.testing.assert_array_equal(batch.y_query, np.einsum("bd,bd->b", batch.x_query, batch.w))
    seeded = sample_regression(3, 4, 2, seed=0)
    np.testing.assert_array_equal(batch.X, seeded.X)
    assert not np.array_equal(batch.X, sample_regression(3, 4, 2, seed=1).X)


@pytest.mark.parametrize("x_range", [0.0, -1.0])
def test_regression_rejects_a_nonpositive_x_range(x_range):
    from mechverify.theory.tasks.regression import sample_regression

    with pytest.raises(ValueError, match="x_range"):
        sample_regression(2, 3, 2, x_dist="uniform", x_range=x_range)


def test_regression_batch_is_immutable():
    """A sampled batch is shared by the claims that read it (and cached), so it is frozen."""
    import dataclasses

    from mechverify.theory.tasks.regression import sample_regression

    batch = sample_regression(2, 3, 2, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.y = batch.y * 0


# --- theory/tasks/zipf.py (whole module, 2026-12-07): the Zipf law itself, the chain guards, the
# --- first token of a sample, the stopping rule of the symmetric scaling ------------------------

def test_zipf_weights_follow_the_power_law():
    """pi_v = (v + 1)^(-s) / sum, written out by hand; vocab = 2 is the smallest allowed."""
    from mechverify.theory.tasks.zipf import zipf_weights

    raw = np.array([1.0, 2.0 ** -1.1, 3.0 ** -1.1, 4.0 ** -1.1])
    np.testing.assert_allclose(zipf_weights(4, 1.1), raw / raw.sum(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(zipf_weights(2, 1.0), [2 / 3, 1 / 3], rtol=1e-15, atol=0)


def test_zipf_markov_defaults_are_the_documented_corpus():
    """The module doc's defaults: V = 64 tokens, exponent 1.1."""
    from mechverify.theory.tasks.zipf import zipf_markov

    chain = zipf_markov()
    raw = np.arange(1, 65, dtype=np.float64) ** -1.1
    assert chain.vocab == 64
    np.testing.assert_allclose(chain.pi, raw / raw.sum(), rtol=1e-15, atol=0)


def test_check_transition_accepts_one_state_and_guards_pi():
    from mechverify.theory.tasks.zipf import check_transition

    np.testing.assert_array_equal(check_transition([[1.0]]), [[1.0]])
    # tol = 0 is an exact check: an exactly stochastic, exactly stationary pair passes it
    check_transition(np.eye(2), np.array([0.5, 0.5]), tol=0.0)
    # sums to 1 and is stationary for the identity, but is not a law
    with pytest.raises(ValueError, match="pi must be a probability vector"):
        check_transition(np.eye(2), np.array([1.5, -0.5]))
    # stationary in its first coordinate only: the check is on the largest deviation
    cycle = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="stationary"):
        check_transition(cycle, np.array([0.2, 0.5, 0.3]))


def test_zipf_chain_is_frozen_and_keyed_by_identity():
    """The chain is shared by the runs that read it: frozen, and hashable by identity (its
    arrays cannot be compared or hashed as a value)."""
    import dataclasses

    from mechverify.theory.tasks.zipf import zipf_markov

    chain = zipf_markov(vocab=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chain.P = chain.P * 1
    assert {chain: 1}[chain] == 1
    assert chain != zipf_markov(vocab=4)


def test_zipf_entropy_rate_with_a_forbidden_transition():
    """A zero transition contributes 0 (0 log 0 = 0), not nan: P = [[1/2, 1/2], [1, 0]],
    pi = (2/3, 1/3), entropy rate (2/3) log 2."""
    from mechverify.theory.tasks.zipf import ZipfMarkov

    chain = ZipfMarkov(np.array([2 / 3, 1 / 3]), np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert chain.entropy_rate() == pytest.approx(2 / 3 * np.log(2), rel=1e-15)


def test_zipf_sample_starts_in_pi_and_steps_by_p():
    """Independent sequences of length 2: the first token has law pi and the pair (x0, x1) has
    law pi_v P_vw, each frequency within 5 binomial SE (every one of the 4 + 16 cells)."""
    from mechverify.theory.tasks.zipf import zipf_markov

    chain = zipf_markov(vocab=4, seed=2)
    n = 40_000
    seq = chain.sample(n, 2, seed=5)
    for observed, law in ((np.bincount(seq[:, 0], minlength=4) / n, chain.pi),
                          (np.bincount(4 * seq[:, 0] + seq[:, 1], minlength=16) / n,
                           (chain.pi[:, None] * chain.P).ravel())):
        se = np.sqrt(law * (1 - law) / n)
        assert np.all(np.abs(observed - law) <= 5 * se), (observed, law)


@pytest.mark.parametrize("vocab", [8, 64])
@pytest.mark.parametrize("tol", [1e-12, 1e-11])
def test_zipf_markov_is_stationary_within_its_tolerance(vocab, tol):
    """The scaling stops when the row sums of W are within tol * max(pi) of pi, so pi is
    stationary for P within tol (measured: 0.29 to 0.52 tol at V = 8, 16, 64 and tol = 1e-13
    to 1e-11); a stopping rule looser by 1 / max(pi)^2 ends several times above it."""
    from mechverify.theory.tasks.zipf import zipf_markov

    chain = zipf_markov(vocab=vocab, tol=tol)
    assert np.max(np.abs(chain.pi @ chain.P - chain.pi)) <= tol


# --- theory/checks.py (whole module, 2026-12-07): the shape message, the SPD check's scale-relative
# --- symmetry tolerance and its singular edge, the regression batch's empty axes ------------------

def test_check_array_names_free_axes_with_a_star():
    from mechverify.theory.checks import check_array

    with pytest.raises(ValueError, match=r"A must have shape \(\*, 2\); got \(2, 3\)"):
        check_array("A", np.zeros((2, 3)), shape=(None, 2))


def test_check_spd_rejects_a_rectangle_by_name():
    from mechverify.theory.checks import check_spd

    with pytest.raises(ValueError, match="A must be square; got shape"):
        check_spd("A", np.ones((2, 3)))


def test_check_spd_symmetry_tolerance_is_relative_to_the_largest_entry():
    """atol = rtol * max(1, max |A_ij|): an asymmetry of 1e-5 is round-off for entries of 2e6
    (allowed up to 2e-4), and 5e-11 is within the floor of 1e-10 for entries of 1e-6; a plain
    asymmetry of 0.2 on entries of 1 is rejected (no relative slack from the entries)."""
    from mechverify.theory.checks import check_spd

    check_spd("A", np.array([[2e6, 1.0], [1.0 + 1e-5, 1e6]]))
    check_spd("A", np.array([[2e-6, 1e-7], [1e-7 + 5e-11, 1e-6]]))
    with pytest.raises(ValueError, match="A must be symmetric"):
        check_spd("A", np.array([[2e6, 1.0], [1.0 + 1e-3, 1e6]]))
    with pytest.raises(ValueError, match="A must be symmetric"):
        check_spd("A", np.array([[1.0, 0.5], [0.7, 1.0]]))


def test_check_spd_rejects_a_singular_matrix():
    from mechverify.theory.checks import check_spd

    with pytest.raises(ValueError, match="A must be positive definite; smallest eigenvalue 0"):
        check_spd("A", np.diag([1.0, 0.0]))


@pytest.mark.parametrize("shape", [(0, 2, 2), (2, 0, 2), (2, 2, 0)])
def test_check_regression_batch_rejects_an_empty_axis(shape):
    from mechverify.theory.checks import check_regression_batch

    B, n, d = shape
    with pytest.raises(ValueError, match=r"B, n, d >= 1"):
        check_regression_batch(np.zeros(shape), np.zeros((B, n)), np.zeros((B, d)))


def test_check_regression_batch_accepts_one_prompt_one_example_one_dimension():
    from mechverify.theory.checks import check_regression_batch

    X, y, q = check_regression_batch([[[2.0]]], [[1.0]], [[3.0]])
    assert X.shape == (1, 1, 1) and y.shape == (1, 1) and q.shape == (1, 1)


# --- theory/dynamics/topics.py (whole module, 2026-12-07): the sampler's guards and defaults, the
# --- loss's constant, one descent step written out, half_time on hand-made curves ---------------

def test_stage_samples_defaults_are_the_spec_setting_and_frozen():
    """docs/topics.md: T = 10 topics of 10 words; 4000 draws by default; the samples are frozen."""
    import dataclasses

    from mechverify.theory.dynamics.topics import stage_samples

    samples = stage_samples(n_samples=3)
    assert samples.theta.shape == (3, 10) and samples.words_per_topic == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        samples.r = samples.r * 0


def test_stage_samples_guards():
    from mechverify.theory.dynamics.topics import stage_samples

    assert stage_samples(n_topics=2, n_samples=4).theta.shape == (4, 2)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        stage_samples(alpha=0.0, n_samples=4)
    with pytest.raises(ValueError, match="p_random must be >= 0"):
        stage_samples(p_random=-0.1, n_samples=4)


def test_stage_samples_marks_mask_queries_minus_one():
    """With p_keep = p_random = 0 every query is [MASK], documented as r = -1."""
    from mechverify.theory.dynamics.topics import stage_samples

    np.testing.assert_array_equal(stage_samples(n_samples=50, p_random=0.0, p_keep=0.0).r, -1)


def test_stage_loss_constant_and_a_zero_topic_mass():
    """At c = beta = 0 every word is equally likely: loss log(T v). A topic of mass exactly 0
    is taken at log(1e-300), never log(0) (no divide-by-zero)."""
    from mechverify.theory.dynamics.topics import StageSamples, loss_and_grads, stage_samples

    samples = stage_samples(n_topics=4, words_per_topic=3, n_samples=20, seed=1)
    assert loss_and_grads(0.0, 0.0, samples)[0] == pytest.approx(np.log(12), rel=1e-14)
    zero = StageSamples(np.array([[1.0, 0.0]]), np.array([0]), np.array([0]), 2)
    with np.errstate(divide="raise", invalid="raise"):
        loss, d_c, d_beta = loss_and_grads(0.5, 0.3, zero)
    assert np.isfinite([loss, d_c, d_beta]).all()


def test_two_stage_descent_first_step_by_hand():
    """Steps 0..steps (steps + 1 entries), starting at c0 = 0 by default; step 1 is
    c1 = -lr dL/dc, q1 = k1 = sigma (1 - lr dL/dbeta) (q = k, so the two updates agree), with the
    gradients at (c, beta) = (c0 + 0.3, sigma^2) given by loss_and_grads."""
    from mechverify.theory.dynamics.topics import loss_and_grads, stage_samples, two_stage_descent

    samples = stage_samples(n_topics=3, words_per_topic=2, n_samples=50, seed=3)
    sigma, lr = 0.4, 0.7
    run = two_stage_descent(sigma, samples, lr=lr, steps=3)
    assert all(len(run[key]) == 4 for key in ("c", "beta", "loss")) and run["c"][0] == 0.0
    shifted = two_stage_descent(sigma, samples, lr=lr, steps=1, c0=0.3)
    _, d_c, d_beta = loss_and_grads(0.3, sigma ** 2, samples)
    assert d_beta != 0
    assert shifted["c"][1] == pytest.approx(0.3 - lr * d_c, rel=1e-14)
    assert shifted["beta"][1] == pytest.approx((sigma * (1 - lr * d_beta)) ** 2, rel=1e-14)
    with pytest.raises(ValueError, match="lr must be > 0"):
        two_stage_descent(sigma, samples, lr=0.0)


@pytest.mark.parametrize("curve, expected", [
    ([0.0, 1.0, 2.0, 3.0, 4.0], 2),        # half of the final change 4 is first reached at 2
    ([10.0, 11.0, 12.0, 14.0], 2),         # measured from curve[0], not from 0 or curve[1]
    ([10.0, 10.5, 11.0, 11.5, 14.0], 4),   # the final change is the last entry's (4), not 1.5
    ([4.0, 3.0, 0.0], 2),                  # a falling curve: change / final is still 0 -> 1
    ([3.0, 3.0, 3.0], 2),                  # no change: the last index
])
def test_half_time_on_hand_made_curves(curve, expected):
    from mechverify.theory.dynamics.topics import half_time

    assert half_time(np.array(curve)) == expected


# --- theory/symbolic/meta_learning.py (whole module, 2026-12-07) ---------------------------------

def test_general_loss_is_the_cross_entropy_of_its_logits():
    # the Euler and inverse-norm residuals vanish for any function of h/|h|, so they cannot see
    # the loss itself: with the logit functions G_k replaced by numbers, it must be
    # -z_y + log sum_k exp(z_k)
    import sympy as sp
    from sympy.core.function import AppliedUndef

    from mechverify.theory.symbolic.meta_learning import _general_loss

    h, loss = _general_loss(2, 3, 1)
    z = {"G0": sp.Integer(1), "G1": sp.Integer(-2), "G2": sp.Rational(1, 2)}
    concrete = loss.subs({g: z[g.func.__name__] for g in loss.atoms(AppliedUndef)})
    expected = -z["G1"] + sp.log(sum(sp.exp(v) for v in z.values()))
    assert sp.simplify(concrete - expected) == 0


# --- theory/symbolic/markov.py (whole module, 2026-12-07): the block energy, the ladder's guard -

def test_block_energy_is_mu_squared_times_the_sum_of_squared_alphas():
    import sympy as sp

    from mechverify.theory.symbolic.markov import block_energy

    # 3^2 (1/4 + 1/16) = 45/16, exactly (the floats are made rational)
    assert block_energy(3, (0.5, 0.25)) == sp.Rational(45, 16)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_ladder_losses_rejects_an_empty_target(shape):
    from mechverify.theory.symbolic.markov import ladder_losses

    with pytest.raises(ValueError, match="K, T >= 1"):
        ladder_losses(np.zeros(shape))


def test_ladder_losses_accepts_one_block_and_one_position():
    from mechverify.theory.symbolic.markov import ladder_losses

    assert ladder_losses(np.array([[1.0, 0.0]])) == [0.5, 0.0]         # K = 1
    assert ladder_losses(np.array([[2.0], [0.0]])) == [2.0, 0.0, 0.0]  # T = 1


# --- theory/algorithms/inner_loss.py (whole module, 2026-12-07): stable log-softmax, batch axes,
# --- boundaries of the guards, the empty unroll, defaults ------------------------------------

def test_logit_lens_loss_is_exact_for_logits_far_beyond_exp_range():
    from mechverify.theory.algorithms.inner_loss import logit_lens_loss, next_token_residual

    # logits (0, 1000) and (1000, 2000): exp overflows unless the largest logit is subtracted
    U = np.array([[0.0], [1000.0]])
    h = np.array([[1.0], [2.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # exp(-1000) may underflow
        loss = logit_lens_loss(h, U, np.array([0, 1]))
        r = next_token_residual(h, U, np.array([0, 0]))
    assert loss == pytest.approx([1000.0, 0.0], abs=1e-12)
    assert np.allclose(r, [[-1.0, 1.0], [-1.0, 1.0]], atol=1e-12)


def test_inner_loss_functions_treat_every_leading_axis_as_batch():
    from mechverify.theory.algorithms.inner_loss import (logit_lens_grad, next_token_residual, norm_jacobian,
                                                         unembed_grad)

    rng = np.random.default_rng(0)
    A, B, d, V = 2, 3, 4, 5          # every size different, so no axis can stand in for another
    h, U = rng.normal(size=(A, B, d)), rng.normal(size=(V, d))
    y = rng.integers(0, V, size=(A, B))
    flat = h.reshape(A * B, d), y.reshape(A * B)
    r = next_token_residual(h, U, y, "rmsnorm")
    assert r.shape == (A, B, V)
    assert np.array_equal(r.reshape(A * B, V), next_token_residual(*flat[:1], U, flat[1], "rmsnorm"))
    assert np.allclose(r.sum(axis=-1), 0.0, atol=1e-15)
    J = norm_jacobian(h, "layernorm")
    assert J.shape == (A, B, d, d)
    assert np.array_equal(J.reshape(A * B, d, d), norm_jacobian(flat[0], "layernorm"))
    G = unembed_grad(h, U, y, "rmsnorm")
    assert G.shape == (V, d)
    assert np.allclose(G, unembed_grad(flat[0], U, flat[1], "rmsnorm"), rtol=1e-14, atol=1e-15)
    g = logit_lens_grad(h, U, y, "rmsnorm")
    assert np.allclose(g.reshape(A * B, d), logit_lens_grad(flat[0], U, flat[1], "rmsnorm"), rtol=1e-14)


def test_inner_loss_guards_at_their_boundaries():
    from mechverify.theory.algorithms.inner_loss import (inner_gd_unroll, logit_lens_loss, norm_recursion,
                                                         normalise, quartic_lower_bound)

    # d = 1 is a valid size (RMSNorm of a scalar is its sign); LayerNorm needs d >= 2
    assert normalise(np.array([[2.0], [-3.0]]), "rmsnorm") == pytest.approx(np.array([[1.0], [-1.0]]))
    with pytest.raises(ValueError, match="d >= 2 entries for norm='layernorm'"):
        normalise(np.array([[2.0]]), "layernorm")
    with pytest.raises(ValueError, match="d >= 1"):
        normalise(np.zeros((3, 0)))
    # one zero vector in a batch is enough to be rejected without eps
    with pytest.raises(ValueError, match="must not be zero"):
        normalise(np.array([[1.0, 2.0], [0.0, 0.0]]), "rmsnorm")
    # V = 1 is a valid head (the loss is 0); V = 0 is not
    assert logit_lens_loss(np.ones((2, 3)), np.ones((1, 3)), np.array([0, 0])) == pytest.approx([0.0, 0.0])
    with pytest.raises(ValueError, match="V >= 1"):
        logit_lens_loss(np.ones((2, 3)), np.ones((0, 3)), np.array([0, 0]))
    # a zero learning rate and a zero gradient norm are allowed; a negative one or a
    # non-positive a0 anywhere in the batch is not
    U, y = np.eye(3), np.array([1])
    states, grads = inner_gd_unroll(np.array([[1.0, 0.0, 0.0]]), U, y, [0.0])
    assert np.array_equal(states[0], states[1]) and np.any(grads != 0)   # a real gradient, no step
    assert np.array_equal(norm_recursion(2.0, [0.5], [0.0]), [2.0, 2.0])
    with pytest.raises(ValueError, match="a0 must be > 0"):
        norm_recursion(np.array([1.0, 0.0]), [0.5], np.ones((1, 2)))
    with pytest.raises(ValueError, match="c must be >= 0"):
        quartic_lower_bound(1.0, [0.5, 0.5], [1.0, -1e-300])


def test_inner_gd_unroll_without_steps_returns_the_start_and_no_gradients():
    from mechverify.theory.algorithms.inner_loss import inner_gd_unroll

    h0 = np.arange(6.0).reshape(2, 3) + 1.0
    states, grads = inner_gd_unroll(h0, np.eye(3), np.array([0, 2]), [])
    assert states.shape == (1, 2, 3) and np.array_equal(states[0], h0)
    assert grads.shape == (0, 2, 3)


def test_quartic_lower_bound_with_a_batch_of_gradient_norms():
    from mechverify.theory.algorithms.inner_loss import quartic_lower_bound

    # c of shape (L, B) with L != B: each batch entry gets its own sum over the L steps
    lrs, c = np.array([0.5, 2.0]), np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.5]])
    expected = 1.0 + 2.0 * np.array([0.25 * 1 + 4 * 0, 0.25 * 4 + 4 * 1, 0.25 * 9 + 4 * 0.25])
    assert np.allclose(quartic_lower_bound(1.0, lrs, c), expected, rtol=1e-15)


def test_inner_loss_eps_defaults_to_zero():
    from mechverify.theory.algorithms.inner_loss import next_token_residual, norm_jacobian

    rng = np.random.default_rng(1)
    h, U, y = rng.normal(size=(4, 3)) * 1e-3, rng.normal(size=(5, 3)), rng.integers(0, 5, size=4)
    # at |h| ~ 1e-3 an eps of 1 would change the RMS scale by orders of magnitude
    assert np.array_equal(norm_jacobian(h, "rmsnorm"), norm_jacobian(h, "rmsnorm", eps=0.0))
    assert np.array_equal(next_token_residual(h, U, y, "rmsnorm"),
                          next_token_residual(h, U, y, "rmsnorm", eps=0.0))


# --- constructions/topics.py (whole module, 2026-12-07): the id range, the smallest vocabulary,
# --- the value bias, LayerNorm of a constant embedding ------------------------------------------

def _topic_model(**kw):
    from mechverify.constructions.topics import TopicMLM
    from mechverify.theory.tasks.topics import N_SPECIAL

    return TopicMLM(N_SPECIAL + 3, **kw)


@pytest.mark.parametrize("bad", ["negative", "vocab"])
def test_topic_model_rejects_ids_outside_the_vocabulary(bad):
    import torch

    model = _topic_model()
    ids = torch.tensor([[0, 1, 2]], dtype=torch.int64)
    ids[0, 1] = -1 if bad == "negative" else model.vocab   # one bad id among valid ones
    with pytest.raises(ValueError, match="ids must lie in"):
        model(ids, torch.ones_like(ids, dtype=torch.bool))


def test_topic_model_accepts_the_smallest_vocabulary():
    from mechverify.constructions.topics import TopicMLM
    from mechverify.theory.tasks.topics import N_SPECIAL

    assert TopicMLM(N_SPECIAL + 1).vocab == N_SPECIAL + 1


def test_topic_model_adds_the_value_bias():
    # pattern rows sum to 1, so with W_V = 0 every output is b_V (+ b_dec = 0)
    import torch

    model = _topic_model()
    with torch.no_grad():
        model.b_V.copy_(torch.arange(model.vocab, dtype=torch.float64) - 2.0)
    ids = torch.tensor([[0, 1, 2, 3]], dtype=torch.int64)
    logits = model(ids, torch.ones_like(ids, dtype=torch.bool))
    assert torch.allclose(logits[0], model.b_V.detach().expand(4, -1), atol=1e-15)


def test_topic_model_layernorm_of_a_constant_embedding_is_finite():
    # the learned embedding starts at zero: LayerNorm's eps keeps 0/0 away
    import torch

    model = _topic_model(d=4, decoder="tied", embedding_layernorm=True)
    ids = torch.tensor([[0, 1, 2]], dtype=torch.int64)
    assert torch.isfinite(model(ids, torch.ones_like(ids, dtype=torch.bool))).all()


def test_scale_invariance_holds_at_the_smallest_size():
    # d = 2 is the smallest size at which LayerNorm is defined; it must be accepted, not only d = 3
    from mechverify.theory.symbolic.meta_learning import scale_invariance_residual

    assert scale_invariance_residual(2, "rmsnorm", False).is_zero_matrix
    assert scale_invariance_residual(2, "layernorm", False).is_zero_matrix


# --- constructions/markov.py (whole module, 2026-12-07): the initial laws, the token guards, the
# --- defaults --------------------------------------------------------------------------------

def _assert_uniform_on(w, bound):
    # U(-b, b): inside the interval and reaching both ends (with >= 1000 draws the largest entry
    # is below 0.98 b with probability 0.99^1000 < 5e-5, and the generator is seeded)
    assert w.numel() >= 1000
    assert w.abs().max() <= bound
    assert w.max() > 0.98 * bound and w.min() < -0.98 * bound


def test_minimal_markov_model_initial_laws():
    import torch

    from mechverify.constructions.markov import MinimalMarkovModel

    d, P, H = 10, 30, 3                  # W_V: H x d x D = 1200 entries
    D = d + P
    g = torch.Generator().manual_seed(0)
    m = MinimalMarkovModel(d, P, H, dtype=torch.float64, generator=g)
    bound = (6.0 / (2 * D)) ** 0.5       # xavier-uniform for a D x D matrix
    assert m.W_Q.shape == (H, D, D) and m.W_V.shape == (H, d, D)
    _assert_uniform_on(m.W_Q.detach(), bound)
    _assert_uniform_on(m.W_V.detach(), bound)
    small = MinimalMarkovModel(d, P, H, init="small", sigma_q=0.3, dtype=torch.float64, generator=g)
    _assert_uniform_on(small.W_Q.detach(), 0.3)
    assert not small.W_V.detach().any()


def test_minimal_markov_model_defaults_are_the_spec_setting():
    from mechverify.constructions.markov import MinimalMarkovModel

    m = MinimalMarkovModel(4, 8, init="small")
    assert m.H == 3                                   # H = 3 heads (docs/markov.md)
    assert not m.W_Q.detach().any()                   # sigma_q = 0: the small init starts at zero


@pytest.mark.parametrize("bad", [-1, 4])
def test_minimal_markov_model_rejects_one_token_outside_the_vocabulary(bad):
    import torch

    from mechverify.constructions.markov import MinimalMarkovModel

    tokens = torch.tensor([[0, 1, 2, 3]])
    tokens[0, 2] = bad                                 # one bad token among valid ones
    with pytest.raises(ValueError, match="tokens must lie in"):
        MinimalMarkovModel(4, 5)(tokens)


def test_minimal_markov_model_accepts_one_position():
    import torch

    from mechverify.constructions.markov import MinimalMarkovModel

    m = MinimalMarkovModel(4, 5)
    assert m(torch.tensor([[2], [3]])).shape == (2, 1, 4)
    with pytest.raises(ValueError, match="1..5 positions"):
        m(torch.zeros(2, 0, dtype=torch.long))


def test_full_markov_model_defaults_one_at_a_time():
    # one block; the width and head defaults are checked one at a time, because together they are
    # unusable: 64 is not a multiple of 3 heads (a clear error; every caller passes width 63 or
    # 255; changing the default would stale the markov ledger, so it is left and noted)
    from mechverify.constructions.markov import full_markov_model

    m = full_markov_model(5, 8, n_heads=2)
    assert len(m.blocks) == 1
    assert m.read_in.out_features == 64 and m.read_out.out_features == 5
    assert full_markov_model(5, 8, width=63).blocks[0].attn.n_heads == 3
    with pytest.raises(ValueError, match=r"d_model \(64\) must be a multiple of n_heads \(3\)"):
        full_markov_model(5, 8)


def test_exact_minimal_model_leak_with_unequal_alpha():
    """At finite beta with alpha = (0.7, 0.3): in-block logits ln(alpha_i / max alpha), -beta
    elsewhere, so the mass off I(k) is n_out / (n_out + e^beta sum_i alpha_i / max alpha) and the
    in-block ratio is alpha's (0.3 / 0.7, oldest lag first)."""
    import math

    import torch

    from mechverify.constructions.markov import exact_minimal_model
    from mechverify.theory.tasks.markov import MarkovTask, sample_sequences

    task, beta = MarkovTask(d=5, L=4, alpha=(0.7, 0.3)), 2.0
    tok = torch.from_numpy(sample_sequences(task, 2, 0))[:, :-1]
    _, pattern = exact_minimal_model(task, beta)(tok, query_from=tok.shape[1] - 1, return_pattern=True)
    n = tok.shape[1]
    for k in range(1, task.h + 1):
        lags, alpha = task.block_lags(k), task.weights(k)
        n_out = n - lags.size
        off = 1.0 - pattern[:, k - 1, -1, n - lags].sum(-1)
        expected = n_out / (n_out + math.exp(beta) * float((alpha / alpha.max()).sum()))
        assert torch.allclose(off, torch.full_like(off, expected), rtol=0, atol=1e-12)
        inside = pattern[:, k - 1, -1, n - lags]
        assert torch.allclose(inside / inside.sum(-1, keepdim=True),
                              torch.as_tensor(alpha / alpha.sum()).expand_as(inside), rtol=0, atol=1e-12)


# --- theory/dynamics/markov.py (2026-12-07, part of the module): the target's guards and defaults

@pytest.mark.parametrize("sizes", [3, "12"])
def test_block_target_rejects_sizes_that_are_not_a_sequence_by_name(sizes):
    from mechverify.theory.dynamics.markov import block_target

    with pytest.raises(TypeError, match="sizes must be a sequence of block sizes"):
        block_target([1.0], sizes, 5)


def test_block_target_fills_exactly_t_positions():
    from mechverify.theory.dynamics.markov import block_target

    # start + sum(sizes) == T is allowed: the blocks end at the last position
    G = block_target([2.0, 1.0], [1, 2], 4, start=1)
    assert G.tolist() == [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]


def test_fig10_target_defaults_are_the_spec_setting():
    from mechverify.theory.dynamics.markov import fig10_target

    # T = 40 positions, K = 3 singleton blocks, G[k, k] = m^(K-1-k) with m = 1.7
    G = fig10_target()
    assert G.shape == (3, 40)
    assert np.array_equal(G[:, :3], np.diag([1.7 ** 2, 1.7, 1.0])) and not G[:, 3:].any()


def test_markov_flow_target_guard_at_its_boundary():
    from mechverify.theory.dynamics.markov import energies

    assert energies(np.array([[1.0, 2.0]])).tolist() == [5.0]          # K = 1, T = 2: the smallest
    for shape in [(0, 3), (1, 1)]:
        with pytest.raises(ValueError, match="K >= 1, T >= 2"):
            energies(np.ones(shape))


@pytest.mark.parametrize("flow, factor", [("replicator", 8 ** 0.5), ("logit", 8.0)])
def test_t1_formula_by_hand(flow, factor):
    import math

    from mechverify.theory.dynamics.markov import t1_formula

    # mu1 = 2, n1 = 1, T = 8: sqrt(2 ln 4) / 2 times sqrt(T) (replicator) or T (logit)
    expected = math.sqrt(2 * math.log(4.0)) / 2.0 * factor
    assert t1_formula(2.0, 1, 8, flow) == pytest.approx(expected, rel=1e-15)
    if flow == "replicator":
        assert t1_formula(2.0, 1, 8) == pytest.approx(expected, rel=1e-15)   # the default flow


def test_initial_state_clips_and_renormalises_a_large_perturbation():
    from mechverify.theory.dynamics.markov import initial_state

    # eps = 1 >> 1/T: many draws are negative; each is clipped to 1e-12 (> 0) and every head's
    # row renormalised to sum 1; the values start at 0
    G = np.ones((2, 4))
    y = initial_state(G, 3, 1.0, 0)
    V, S = y[:6], y[6:].reshape(3, 4)
    assert not V.any()
    assert (S > 0).all() and S.min() < 1e-9          # some entries were clipped
    assert np.allclose(S.sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_simulate_default_is_three_heads():
    from mechverify.theory.dynamics.markov import simulate

    # H = 3 heads (docs/markov.md, the ODE setting); a short run is enough to see the state's shape
    res = simulate(np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]), t_max=0.1, n_eval=3)
    assert res.S.shape[1:] == (3, 3) and res.V.shape[1:] == (3, 2)


def test_simulate_time_grid_sizes():
    from mechverify.theory.dynamics.markov import simulate

    # n_eval log-spaced times plus t = 0: the smallest grid (n_eval = 2) and the default (400)
    G = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    assert simulate(G, t_max=0.1, n_eval=2).t.size == 3
    assert simulate(G, t_max=0.1).t.size == 401


# --- theory/dynamics/markov.py (rest of the module, 2026-12-07): the solver's tolerance guards,
# --- Euler's steps and records by hand, a curve that touches a threshold, t1 at n1 = 2 -------------
@pytest.mark.parametrize("name", ["rtol", "atol"])
def test_simulate_rejects_a_zero_tolerance(name):
    from mechverify.theory.dynamics.markov import simulate

    with pytest.raises(ValueError, match=f"{name} must be > 0"):
        simulate(np.array([[1.0, 0.0, 0.0]]), t_max=0.1, n_eval=2, **{name: 0.0})


def test_euler_steps_and_records_by_hand():
    from mechverify.theory.dynamics.markov import euler, initial_state

    # three replicator steps written out: R = G - V^T S, V' = S R^T, S' = S (g - <S, g>), g = V R
    G = np.array([[1.0, 0.2, 0.0], [0.0, 0.5, 0.3]])
    H, dt = 2, 0.01
    y = initial_state(G, H, 0.1, 4)
    V, S = y[:H * 2].reshape(H, 2), y[H * 2:].reshape(H, 3)
    Vs, Ss = [V], [S]
    for _ in range(3):
        R = G - np.einsum("hk,ht->kt", V, S)
        g = np.einsum("hk,kt->ht", V, R)
        V, S = V + dt * np.einsum("ht,kt->hk", S, R), S + dt * S * (g - (S * g).sum(1)[:, None])
        Vs.append(V)
        Ss.append(S)
    res = euler(G, n_heads=H, eps=0.1, seed=4, t_max=3 * dt, dt=dt, record_every=1)
    np.testing.assert_allclose(res.t, [0.0, dt, 2 * dt, 3 * dt], rtol=1e-15)
    np.testing.assert_allclose(res.V, Vs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.S, Ss, rtol=1e-12, atol=1e-15)
    assert res.nfev == 3


def test_euler_records_every_hundred_steps_by_default():
    from mechverify.theory.dynamics.markov import euler

    # 200 steps of 0.005: records at t = 0, step 100 and step 200
    res = euler(np.array([[1.0, 0.0, 0.0]]), t_max=1.0)
    np.testing.assert_allclose(res.t, [0.0, 0.5, 1.0], rtol=1e-15)


def test_a_curve_that_touches_a_threshold_has_not_crossed_it():
    from mechverify.theory.dynamics.markov import stage_times_from_curve

    # levels (1.5, 0.5): threshold 1. The loss touches 1 at t = 1, rises to 2, and first goes
    # below at t = 3, crossing 1 at t = 2 + (2 - 1) / (2 - 0.5) = 2 + 2/3
    out = stage_times_from_curve(np.arange(4.0), np.array([5.0, 1.0, 2.0, 0.5]), np.array([1.5, 0.5]))
    assert out[0] == pytest.approx(2 + 2 / 3, rel=1e-15)
    assert np.isnan(stage_times_from_curve(np.arange(3.0), np.array([5.0, 1.0, 2.0]), np.array([1.5, 0.5]))[0])


def test_t1_formula_with_two_lags_in_the_first_block():
    import math

    from mechverify.theory.dynamics.markov import t1_formula

    # n1 = 2 (where n1, 1/n1 and n1^2 differ): sqrt(2 T ln(T / 4) / 2) / mu1 at T = 12, mu1 = 1.5
    assert t1_formula(1.5, 2, 12) == pytest.approx(math.sqrt(12 * math.log(3.0)) / 1.5, rel=1e-15)
    # the guard's edge: T = 2 n1 + 1 is allowed, T = 2 n1 is not
    assert t1_formula(1.0, 2, 5) == pytest.approx(math.sqrt(5 * math.log(1.25)), rel=1e-15)
    with pytest.raises(ValueError, match=r"T must be > 2 n1 = 4; got 4"):
        t1_formula(1.0, 2, 4)
    with pytest.raises(ValueError, match="mu1 must be > 0"):
        t1_formula(0.0, 1, 8)


# --- theory/symbolic/lsa_optimum.py (whole module, 2026-12-07): the prompt-length and covariance
# --- guards at their edges, one eigenvalue, the noise defaults written out by hand -------------
@pytest.mark.parametrize("M, error", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_test_prompt_length_guard_names_the_inf_option(M, error):
    from mechverify.theory.symbolic.lsa_optimum import zfb_risk

    # a test length M may be math.inf, so its own message (not check_int's) says so
    with pytest.raises(error, match=r"M must be an integer >= 1 or math.inf"):
        zfb_risk(np.eye(2), [1.0, 2.0], M)


def test_training_prompt_length_may_not_be_infinite():
    import math

    from mechverify.theory.symbolic.lsa_optimum import zfb_gamma

    # only the test length M may be infinite: Gamma at N = inf would silently be Lambda
    with pytest.raises(TypeError, match="N must be an integer"):
        zfb_gamma([1.0, 2.0], math.inf)


@pytest.mark.parametrize("lam", [[1.0, 0.0], [2.0, -1.0, 3.0]])
def test_diagonal_covariance_rejects_one_entry_that_is_not_positive(lam):
    from mechverify.theory.symbolic.lsa_optimum import zfb_gamma

    with pytest.raises(ValueError, match=r"lam \(diagonal\) must be > 0 entrywise"):
        zfb_gamma(lam, 3)


def test_long_prompt_floor_and_bound_of_one_eigenvalue():
    from mechverify.theory.symbolic.lsa_optimum import zfb_floor_bound, zfb_long_prompt_floor

    # lam = 2, T = 2: floor 2 (2+2)^2 / (4*2+2)^2 = 0.32 at N = 3; bound (2+2)^2 / 2 = 8
    assert zfb_long_prompt_floor([2.0], 3) == pytest.approx(0.32, rel=1e-15)
    assert zfb_floor_bound([2.0]) == pytest.approx(8.0, rel=1e-15)           # noise = 0 default
    assert zfb_floor_bound([2.0], 1.0) == pytest.approx(12.5, rel=1e-15)     # T = 3: 25 / 2


def test_risk_gradient_by_hand_and_its_noise_default():
    from mechverify.theory.symbolic.lsa_optimum import zfb_risk_gradient

    # Lam = diag(1, 2), N = 2, G = I: Gamma = 1.5 Lam + ((3 + s^2)/2) I and the gradient is
    # -2 Lam (I - Gamma) Lam: diag(4, 28) at s = 0, diag(5, 32) at s = 1
    lam = [1.0, 2.0]
    np.testing.assert_allclose(zfb_risk_gradient(np.eye(2), lam, 2), np.diag([4.0, 28.0]), rtol=1e-15, atol=0)
    np.testing.assert_allclose(zfb_risk_gradient(np.eye(2), lam, 2, 1.0), np.diag([5.0, 32.0]), rtol=1e-15, atol=0)


def test_best_one_step_lr_noise_default():
    from mechverify.theory.symbolic.lsa_optimum import best_one_step_lr

    assert best_one_step_lr(2, 5) == pytest.approx(5 / 8, rel=1e-15)          # n / (n + d + 1)


@pytest.mark.parametrize("prior", ["isotropic", "inverse_cov"])
@pytest.mark.parametrize("fn", ["ahn_optimum", "ahn_risk"])
def test_ahn_functions_reject_a_negative_noise(fn, prior):
    from mechverify.theory.symbolic import lsa_optimum

    # the inverse_cov prior uses only sigma^2, so only the shared guard can see the sign
    args = (np.eye(2), 3) if fn == "ahn_optimum" else (np.eye(2), np.eye(2), 3)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        getattr(lsa_optimum, fn)(*args, noise=-1.0, prior=prior)


# --- constructions/encoders.py (whole module, 2026-12-07): a layout whose x field does not start
# --- at 0, the dtype and device arguments, duck-typed batches, immutability ---------------------
def _torch_batch():
    import torch

    # (X, y, x_query) with B = 2 prompts of n = 3 examples in d = 2
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 2, generator=g, dtype=torch.float64),
            torch.randn(2, 3, generator=g, dtype=torch.float64),
            torch.randn(2, 2, generator=g, dtype=torch.float64))


def test_stacked_encoder_with_y_before_x():
    from mechverify.constructions.encoders import Layout, StackedRegression

    # x occupies [1, 3): its width is stop - start = 2, not stop + start
    enc = StackedRegression(Layout((("y", 1), ("x", 2))))
    assert enc.d == 2
    X, y, xq = _torch_batch()
    Z = enc.encode((X, y, xq))
    assert Z.shape == (2, 4, 3)
    assert (Z[:, :3, 1:] == X).all() and (Z[:, 3, 1:] == xq).all()
    assert (Z[:, :3, 0] == y).all() and (Z[:, 3, 0] == 0).all()


def test_encoders_honour_dtype_and_device():
    import torch

    from mechverify.constructions.encoders import InterleavedRegression, StackedRegression, regression_layout

    batch = _torch_batch()
    for enc in (StackedRegression(regression_layout(2)), InterleavedRegression(2)):
        assert enc.encode(batch).dtype == torch.float64                       # default: X's
        assert enc.encode(batch, dtype=torch.float32).dtype == torch.float32
        assert enc.encode(batch).device.type == "cpu"
        assert enc.encode(batch, device="meta").device.type == "meta"         # a second device on CPU


def test_encoder_rejects_an_object_with_only_some_batch_fields():
    from mechverify.constructions.encoders import StackedRegression, regression_layout

    class OnlyX:
        X = np.zeros((1, 2, 2))

    with pytest.raises(TypeError, match="batch must be a RegressionBatch or a tuple"):
        StackedRegression(regression_layout(2)).encode(OnlyX())


def test_layout_is_immutable():
    import dataclasses

    from mechverify.constructions.encoders import regression_layout

    with pytest.raises(dataclasses.FrozenInstanceError):
        regression_layout(2).fields = (("x", 3),)


def _hmm_prompts(demos, test):
    from types import SimpleNamespace

    return SimpleNamespace(demos=np.asarray(demos), test=np.asarray(test))


def test_hmm_encoder_rejects_two_dimensional_demos():
    from mechverify.constructions.encoders import HMMWithSeparators

    with pytest.raises(ValueError, match=r"prompts must hold demos \(B, n, L\)"):
        HMMWithSeparators(3, 2).encode(_hmm_prompts([[0, 1]], [[0, 1]]))


@pytest.mark.parametrize("demos, test", [
    ([[[0.0, 1.0]]], [[0, 1]]),          # float ids in range
    ([[[0, -1, 1]]], [[0, 1]]),          # one negative id among valid ones (max is fine)
    ([[[0, 3, 1]]], [[0, 1]]),           # one id equal to n_obs among valid ones (min is fine)
    ([[[0, 1, 2]]], [[1, 3]]),           # the test sequence's id equal to n_obs
])
def test_hmm_encoder_rejects_one_bad_observation_id(demos, test):
    from mechverify.constructions.encoders import HMMWithSeparators

    with pytest.raises(ValueError, match=r"must hold integer observation ids in \[0, 3\)"):
        HMMWithSeparators(3, 2).encode(_hmm_prompts(demos, test))


def test_hmm_one_hot_has_a_column_per_observation_and_the_separator():
    from mechverify.constructions.encoders import HMMWithSeparators

    enc = HMMWithSeparators(3, 2)
    t = enc.encode(_hmm_prompts([[[0, 2]]], [[1, 1]]))
    x = enc.one_hot(t)
    assert x.shape == (1, 6, 4)                                   # SEP 0 2 SEP 1 1, O + 1 = 4
    assert x.argmax(-1).tolist() == [[3, 0, 2, 3, 1, 1]] and (x.sum(-1) == 1).all()


def test_hmm_readout_at_its_shortest_output():
    import torch

    from mechverify.constructions.encoders import HMMWithSeparators

    enc = HMMWithSeparators(3, 2)
    out = torch.arange(9.0).reshape(1, 3, 3)                      # len = T + 1: SEP_test, o_1
    assert torch.equal(enc.readout(out), out[:, :2])
    with pytest.raises(ValueError, match=r"len >= 3"):
        enc.readout(torch.zeros(1, 2, 3))                         # len = T


def test_hmm_tokens_are_immutable():
    import dataclasses

    from mechverify.constructions.encoders import HMMWithSeparators

    t = HMMWithSeparators(3, 2).encode(_hmm_prompts([[[0, 2]]], [[1, 1]]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.n_demos = 2


@pytest.mark.parametrize("tokens", [[[0, 1, 0]], "float", "one negative"])
def test_markov_encoder_rejects_bad_tokens(tokens):
    import torch

    from mechverify.constructions.encoders import MarkovSequences

    enc = MarkovSequences(2, 1)
    if tokens == "float":
        with pytest.raises(TypeError, match="integer torch.Tensor"):
            enc.encode(torch.tensor([[0.0, 1.0, 0.0]]))
    elif tokens == "one negative":
        with pytest.raises(ValueError, match=r"ids in \[0, 2\)"):
            enc.encode(torch.tensor([[0, -1, 1, 0]]))
    else:
        with pytest.raises(TypeError, match="integer torch.Tensor"):
            enc.encode(tokens)                                    # a list, not a tensor


def test_markov_readout_edges():
    import torch

    from mechverify.constructions.encoders import MarkovSequences

    enc = MarkovSequences(2, 3)
    out = torch.arange(6.0).reshape(1, 3, 2)          # w + L - 1 = 3 positions (L = 1), d = 2 < w
    assert torch.equal(enc.readout(out), out[:, 2:])
    with pytest.raises(ValueError, match="output must have shape"):
        enc.readout(torch.zeros(1, 2, 5))             # fewer than w positions
    with pytest.raises(ValueError, match="output must have shape"):
        enc.readout(torch.zeros(1, 4))                # per-token outputs without the logit axis


def test_symbolic_dimension_limit_is_four():
    from mechverify.theory.symbolic.lsa_optimum import isotropic_risk_difference

    assert isotropic_risk_difference(4) == 0                      # the largest d allowed
    with pytest.raises(ValueError, match="d must be <= 4"):
        isotropic_risk_difference(5)


@pytest.mark.parametrize("d", [1, 2])
def test_isotropic_risk_with_noise_at_an_integer_dimension(d):
    from mechverify.theory.symbolic.lsa_optimum import isotropic_risk_difference

    # the matrix branch with sigma > 0: Gamma's trace term tr(I) + sigma^2 must match the risk's
    assert isotropic_risk_difference(d, noise=True) == 0


def test_symbolic_risk_guards():
    import sympy as sp

    from mechverify.theory.symbolic.lsa_optimum import zfb_risk_expr

    with pytest.raises(TypeError, match="must be sympy matrices"):
        zfb_risk_expr(sp.eye(2), np.eye(2), 3)                     # Lam a numpy array
    with pytest.raises(ValueError, match="must be square of one shape"):
        zfb_risk_expr(sp.ones(2, 3), sp.ones(2, 3), 3)              # one shape, not square


def test_symbolic_risk_noise_default_and_value():
    import sympy as sp

    from mechverify.theory.symbolic.lsa_optimum import zfb_risk_expr

    # G = I/2, Lam = diag(1, 2), M = 2, sigma = 0: tr Lam = 3, -2 tr(G Lam^2) = -5,
    # K_2 = 1.5 Lam^2 + 1.5 Lam = diag(3, 9), tr(G^T Lam G K) = (3 + 18)/4: R = 13/4
    G, Lam = sp.eye(2) / 2, sp.diag(1, 2)
    assert zfb_risk_expr(G, Lam, 2) == sp.Rational(13, 4)
    assert zfb_risk_expr(G, Lam, 2) != zfb_risk_expr(G, Lam, 2, 1)


def test_long_prompt_limit_noise_default():
    import sympy as sp

    from mechverify.theory.symbolic.lsa_optimum import long_prompt_limit

    limit, residuals, (lams, N, s) = long_prompt_limit(1)
    assert s == 0 and residuals == (0,)
    assert sp.simplify(limit - 4 * lams[0] / (N + 2) ** 2) == 0    # lam (2 lam)^2 / ((N+2) lam)^2


def _mlm_batch(inputs, key_visible=None, selected=None):
    from types import SimpleNamespace

    ids = np.asarray(inputs)
    vis = np.ones_like(ids, dtype=bool) if key_visible is None else np.asarray(key_visible)
    sel = np.zeros_like(ids, dtype=bool) if selected is None else np.asarray(selected)
    return SimpleNamespace(inputs=ids, key_visible=vis, selected=sel, labels=ids)


def test_masked_lm_accepts_ids_zero_and_vocab_minus_one():
    from mechverify.constructions.encoders import MaskedLM

    t = MaskedLM(4).encode(_mlm_batch([[0, 3]], selected=[[True, False]]))
    assert t.ids.tolist() == [[0, 3]] and t.labels.tolist() == [0]


@pytest.mark.parametrize("inputs", [[[0, 4]], [[1, 4, 2]], [[-1, 2]]])
def test_masked_lm_rejects_one_id_out_of_range(inputs):
    from mechverify.constructions.encoders import MaskedLM

    with pytest.raises(ValueError, match=r"inputs must hold ids in \[0, 4\)"):
        MaskedLM(4).encode(_mlm_batch(inputs))


@pytest.mark.parametrize("kwargs", [dict(inputs=[0, 1, 2]),                                  # 1-D
                                    dict(inputs=[[0, 1]], key_visible=[[True, True, True]]),
                                    dict(inputs=[[0, 1]], selected=[[True]])])
def test_masked_lm_rejects_one_shape_mismatch(kwargs):
    from mechverify.constructions.encoders import MaskedLM

    with pytest.raises(ValueError, match="must share a shape"):
        MaskedLM(4).encode(_mlm_batch(**kwargs))


def test_mlm_tokens_are_immutable():
    import dataclasses

    from mechverify.constructions.encoders import MaskedLM

    t = MaskedLM(4).encode(_mlm_batch([[0, 3]]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.labels = None


# --- theory/tasks/markov.py (whole module, 2026-12-07): the teacher's defaults and guards at their
# --- edges, an explicit stride, the energies by hand, a linearly dependent orthogonal draw --------
def test_markov_task_defaults():
    from mechverify.theory.tasks.markov import MarkovTask

    t = MarkovTask()
    assert (t.d, t.sizes, t.m, t.tau, t.alpha, t.reverse, t.stride) == (50, (2, 2, 2), 1.7, 0.1, None, False, None)
    assert (t.orthogonal, t.L, t.teacher_seed) == (False, 20, 0)


def test_markov_task_orthogonal_block_limit_is_d_squared():
    from mechverify.theory.tasks.markov import MarkovTask

    MarkovTask(d=2, sizes=(1, 1, 1, 1), orthogonal=True)          # h = d^2 = 4 is allowed
    with pytest.raises(ValueError, match=r"at most d\^2 = 4 blocks"):
        MarkovTask(d=2, sizes=(1, 1, 1, 1, 1), orthogonal=True)


def test_markov_task_explicit_stride_list():
    from mechverify.theory.tasks.markov import MarkovTask

    t = MarkovTask(sizes=(2, 2, 2), stride=3)
    assert t.stride_ == [3, 3]                                      # h - 1 offsets
    assert [t.position_lags(p).tolist() for p in range(3)] == [[1, 2], [4, 5], [7, 8]]


def test_markov_energies_by_hand():
    from mechverify.theory.tasks.markov import MarkovTask

    # m = 2, d = 2, two blocks of one lag: mu_k^2 = m^(2(h-k)) d, alpha = 1: e = (8, 2)
    np.testing.assert_allclose(MarkovTask(d=2, sizes=(1, 1), m=2.0).energies(), [8.0, 2.0], rtol=1e-15)
    # weights that are not all 1 (alpha = None gives ones, where w^2 = w^3): alpha (0.75, 0.25)
    # gives |alpha|^2 = 0.625, so e = (4 * 2 * 0.625, 1 * 2 * 0.625)
    task = MarkovTask(d=2, sizes=(2, 2), m=2.0, alpha=(0.75, 0.25))
    np.testing.assert_allclose(task.energies(), [5.0, 1.25], rtol=1e-15)


@pytest.mark.parametrize("alpha", [(0.5, -0.1), (0.0, 1.0)])
def test_lag_weights_rejects_an_entry_that_is_not_positive(alpha):
    from mechverify.theory.tasks.markov import lag_weights

    with pytest.raises(ValueError, match="alpha entry must be > 0"):
        lag_weights(alpha, 2)


def test_orthogonal_teacher_rejects_a_dependent_draw_and_keeps_an_independent_one():
    from mechverify.theory.tasks.markov import MarkovTask, teacher_matrices

    # d = 2: orthogonal matrices of one determinant sign span 2 dimensions; teacher seed 3 draws
    # three such Q_k (dependent), seed 0 does not
    with pytest.raises(ValueError, match="linearly dependent"):
        teacher_matrices(MarkovTask(d=2, sizes=(1, 1, 1), orthogonal=True, teacher_seed=3))
    A = teacher_matrices(MarkovTask(d=2, sizes=(1, 1, 1), m=1.0, orthogonal=True, teacher_seed=0))
    gram = np.einsum("kij,lij->kl", A, A)
    np.testing.assert_allclose(gram, 2.0 * np.eye(3), atol=1e-12)  # Frobenius-orthogonal, |A_k|_F^2 = d


@pytest.mark.parametrize("noise", [False, True])
def test_long_prompt_bound_gap_equals_its_factored_form(noise):
    import sympy as sp

    from mechverify.theory.symbolic.lsa_optimum import long_prompt_bound_gap, long_prompt_limit

    # the docstring's closed form (l+T)^3 ((2N+1) l + T) / (l ((N+1) l + T)^2), term by term
    gaps = long_prompt_bound_gap(2, noise)
    _, _, (lams, N, s) = long_prompt_limit(2, noise)
    T = sum(lams) + s**2
    for l, gap in zip(lams, gaps):
        assert sp.cancel(gap - (l + T) ** 3 * ((2 * N + 1) * l + T) / (l * ((N + 1) * l + T) ** 2)) == 0


def test_best_one_step_lr_with_noise():
    from mechverify.theory.symbolic.lsa_optimum import best_one_step_lr

    # n / (n + d + 1 + sigma^2) at sigma = 3 (where sigma^2, 2 sigma and sigma^3 all differ)
    assert best_one_step_lr(2, 5, 3.0) == pytest.approx(5 / 17, rel=1e-15)


def _teacher_logits_by_hand(task, tokens, k=None):
    from mechverify.theory.tasks.markov import lag_matrices

    W = lag_matrices(task, k)
    n, P = tokens.shape
    out = np.zeros((n, P - task.w, task.d))
    for b in range(n):
        for j, t in enumerate(range(task.w, P)):
            for lag in range(1, task.w + 1):
                out[b, j] += W[lag - 1][:, tokens[b, t - lag]]
    return out / task.tau


@pytest.mark.parametrize("task_kwargs, k", [(dict(sizes=(1, 1), stride=2), None),   # lag 2 has no weight
                                            (dict(sizes=(1, 1)), 1)])               # truncated: lag 2 dropped
def test_teacher_logits_skip_only_lags_without_weight(task_kwargs, k):
    from mechverify.theory.tasks.markov import MarkovTask, sample_sequences, teacher_logits

    task = MarkovTask(d=3, L=4, **task_kwargs)
    tokens = sample_sequences(task, 5, seed=1)
    np.testing.assert_allclose(teacher_logits(task, tokens, k), _teacher_logits_by_hand(task, tokens, k),
                               rtol=1e-13, atol=1e-12)


def test_teacher_logits_token_guards_at_their_edges():
    from mechverify.theory.tasks.markov import MarkovTask, teacher_logits

    task = MarkovTask(d=3, sizes=(1, 1))                          # w = 2
    with pytest.raises(ValueError, match="more than w = 2 positions"):
        teacher_logits(task, np.zeros((1, 2), dtype=int))
    for bad in ([[0, 1, 3]], [[2, 5, 0, 1]]):                     # an id equal to d; one too large among valid
        with pytest.raises(ValueError, match=r"tokens must lie in 0..d-1 = 2"):
            teacher_logits(task, np.array(bad))


def test_teacher_cross_entropy_default_draw_count():
    from mechverify.theory.tasks.markov import MarkovTask, teacher_cross_entropy

    task = MarkovTask(d=3, sizes=(1,), L=2)
    assert teacher_cross_entropy(task) == teacher_cross_entropy(task, 10_000, 0)


@pytest.mark.parametrize("n_obs, r, max_len, width", [(2, 2, 5, 24),    # 23 rounded up to a multiple of r
                                                      (2, 2, 30, 60)])  # r heads of width max_len
def test_hmm_layout_width_by_hand(n_obs, r, max_len, width):
    from mechverify.constructions.hmm import hmm_layout

    # fields: obs O, pos L, win O r, x_prev and x_cur O^r, res O, pred O (23 and 48 wide here)
    assert hmm_layout(n_obs, r, max_len).width == width


def test_teacher_cross_entropy_by_hand():
    from mechverify.theory.tasks.markov import (MarkovTask, log_softmax, sample_sequences, teacher_cross_entropy,
                                                teacher_logits)

    # k = 1 of two blocks: per sequence, -(p log q) summed over tokens, averaged over positions;
    # the mean and its standard error (ddof = 1) over n = 6 sequences
    task = MarkovTask(d=3, sizes=(1, 1), L=3)
    seq = sample_sequences(task, 6, 2)
    logp = log_softmax(teacher_logits(task, seq))
    logq = log_softmax(teacher_logits(task, seq, 1))
    per_seq = -(np.exp(logp) * logq).sum(-1).mean(-1)
    assert (per_seq > 0).all()
    mean, se = teacher_cross_entropy(task, 6, 2, k=1)
    assert mean == pytest.approx(per_seq.mean(), rel=1e-14)
    assert se == pytest.approx(per_seq.std(ddof=1) / np.sqrt(6), rel=1e-12)


def test_hmm_construction_queries_read_only_their_target_position():
    from mechverify.constructions.hmm import HMMConstruction

    # head h (k = h + 1 back) has one query weight per position a < L - k, at pos[a + k]; nothing
    # else (the first block's other input coordinates are 0, so extra weights would go unseen)
    m = HMMConstruction(2, 2, 0, 0.1, 1.0, 5)
    D, dh, pos = m.layout.width, m.attn.d_head, m.layout.slice("pos").start
    Wq = m.attn.qkv.weight[:D].detach().numpy()
    expected = np.zeros_like(Wq)
    for h in range(2):
        for a in range(5 - (h + 1)):
            expected[h * dh + a, pos + a + h + 1] = dh ** 0.5
    np.testing.assert_array_equal(Wq, expected)


def test_hmm_construction_feature_limit_is_4096():
    from mechverify.constructions.hmm import HMMConstruction

    # n_obs^r = 4096 coordinates is allowed (built on the meta device: shapes only, no memory)
    assert HMMConstruction(64, 2, 0, 0.1, 1.0, 4, device="meta").layout.width >= 2 * 4096
    with pytest.raises(ValueError, match="4097 > 4096"):
        HMMConstruction(4097, 1, 0, 0.1, 1.0, 4, device="meta")


# --- theory/tasks/topics.py (whole module, 2026-12-07) --------------------------------------------
def test_token_topic_by_hand():
    from mechverify.theory.tasks.topics import token_topic

    # 4 specials (topic -1), then T = 2 topics of v = 3 words each
    assert token_topic(2, 3).tolist() == [-1, -1, -1, -1, 0, 0, 0, 1, 1, 1]


# --- constructions/hmm.py (whole module, 2026-12-07): error_terms' wiring and guards, the law's
# --- gradient at a row without mass, the feature block's sign, batch axes of the sequence guards ---
def _hmm_case(K=1):
    from mechverify.theory.tasks.hmm import random_hmms, sample_prompts

    # K HMMs with S = O = 2; 2 prompts of 3 demos of length 4 and a test sequence of length 5
    hmms = random_hmms(K, 2, 2, None, seed=0)
    return hmms, sample_prompts(hmms, 2, 3, 4, 5, seed=1)


def test_error_terms_by_hand_with_one_hmm_and_a_test_longer_than_the_demos():
    from mechverify.constructions.hmm import error_terms
    from mechverify.theory.algorithms.hmm import (demo_regression, gd_matrix_iterates, least_squares_matrix,
                                                  regression_predictive)

    # one HMM (hmms[0] is the only one), test length 5 > demo length 4 (the model must be built
    # for the longer), K = 2 GD layers; the construction's output replaced by the GD readout
    # itself, so the softmax term is exactly 0 and the total is the oracle's distance to it
    hmms, p = _hmm_case()
    r = 2
    X, Y = demo_regression(p.demos, 2, r)
    ls = regression_predictive(least_squares_matrix(X, Y), p.test, 2, r)
    gd = regression_predictive(gd_matrix_iterates(X, Y, 0.1, 2)[2], p.test, 2, r)
    terms = error_terms(hmms, p.task, p.demos, p.test, r, 2, 0.1, 5.0, model_pred=gd)
    tv = lambda a, b: 0.5 * np.abs(a - b).sum(-1)[:, r - 1:]
    assert all(v.shape == (2, 5 - r + 1) for v in terms.values())
    np.testing.assert_allclose(terms["optimisation"], tv(ls, gd), rtol=0, atol=1e-15)
    assert not terms["softmax"].any()
    built = error_terms(hmms, p.task, p.demos, p.test, r, 2, 0.1, 5.0)          # the construction itself
    assert built["softmax"].shape == (2, 4) and (built["softmax"] > 0).any()


def test_error_terms_guards_at_their_edges():
    from mechverify.constructions.hmm import error_terms

    hmms, p = _hmm_case(K=2)
    zero = error_terms(hmms, p.task, p.demos, p.test, 1, 0, 0.1, 5.0)          # no GD layer is allowed
    assert zero["optimisation"].shape == (2, 5)
    with pytest.raises(ValueError, match="beta must be > 0"):                 # caught before any model is built
        error_terms(hmms, p.task, p.demos, p.test, 1, 1, 0.1, 0.0, model_pred=np.full((2, 5, 2), 0.5))
    with pytest.raises(ValueError, match="task ids"):
        error_terms(hmms, np.array([1, -1]), p.demos, p.test, 1, 1, 0.1, 5.0)   # one negative id


def test_construction_law_has_finite_gradients_on_a_row_without_mass():
    import torch

    from mechverify.constructions.hmm import hmm_construction

    m = hmm_construction(2, 1, 0, 0.1, 5.0, 3)
    # a raw score of exactly 0 passes clip's gradient, so a 0/0 in the unused branch would show
    raw = torch.tensor([[[0.0, -2.0], [3.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    law = m.law(raw)
    assert law.tolist() == [[[0.5, 0.5], [0.75, 0.25]]]                        # uniform where no mass
    (law * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum().backward()
    assert torch.isfinite(raw.grad).all()


def test_construction_features_are_window_indicators():
    import torch

    from mechverify.constructions.hmm import hmm_construction

    # block 1 adds the window indicators x_prev, x_cur (0/1, one 1 per complete window) to the stream
    m = hmm_construction(2, 2, 1, 0.1, 30.0, 4)
    Z = m.features(torch.tensor([[0, 1, 1, 0]])).detach()
    x_cur = Z[0, :, m.layout.slice("x_cur")]
    x_prev = Z[0, :, m.layout.slice("x_prev")]
    assert x_cur.min() > -1e-6 and x_prev.min() > -1e-6
    np.testing.assert_allclose(x_cur[1:].sum(-1), 1.0, atol=1e-6)             # t >= r - 1
    np.testing.assert_allclose(x_prev[2:], x_cur[1:-1], atol=1e-6)             # the previous window


def test_construction_sequence_guards_read_the_last_axis():
    import torch

    from mechverify.constructions.hmm import hmm_construction

    m = hmm_construction(2, 1, 1, 0.1, 5.0, 3)
    demos = torch.zeros(1, 5, 3, dtype=torch.int64)                           # n = 5 demos > max_len, L = 3
    assert m(demos, torch.zeros(1, 3, dtype=torch.int64)).shape == (1, 3, 2)
    Z = m.embed(demos)                                                         # (..., L) batches
    assert torch.equal(Z, m.embed(demos[0])[None])
    with pytest.raises(ValueError, match=r"demos must hold sequences of length 1..3"):
        m(torch.zeros(1, 2, 0, dtype=torch.int64), torch.zeros(1, 3, dtype=torch.int64))   # empty demos
    for bad in ([[0, -1, 1]], [[1, 2, 0]]):                                    # one id out of range
        with pytest.raises(ValueError, match=r"test must hold ids in \[0, 2\)"):
            m(demos, torch.tensor(bad))


def test_sample_lda_defaults_and_width():
    from mechverify.theory.tasks.topics import sample_lda

    c = sample_lda(20)
    explicit = sample_lda(20, 10, 10, 0.1, (100, 150), 0)
    assert np.array_equal(c.tokens, explicit.tokens) and np.array_equal(c.theta, explicit.theta)
    assert np.array_equal(c.lengths, explicit.lengths)
    assert c.tokens.shape == (20, 152)                             # START, up to hi = 150 words, END
    assert ((c.lengths >= 100) & (c.lengths <= 150)).all()


def test_mask_documents_smallest_vocabulary_and_probability_edges():
    from mechverify.theory.tasks.topics import mask_documents

    docs = np.array([[2, 4, 3]])
    m = mask_documents(docs, 5, p_mask=1.0, p_random=0.5, p_keep=0.5)   # vocab 5 = 4 specials + 1 word
    assert m.selected.tolist() == [[False, True, False]]                # p_mask = 1: every word
    with pytest.raises(ValueError, match="vocab must be an integer >= 5"):
        mask_documents(np.array([[2, 3, 3]]), 4)


@pytest.mark.parametrize("tokens, p_keep, match", [
    ([[2, 4, 5, 3], [2, 6, 3, 0]], -0.1, "p_keep must be >= 0"),          # START words END (PAD)
    ([[2, 4, -1, 3], [2, 6, 3, 0]], 0.1, "tokens must lie in"),           # one negative id
])
def test_mask_documents_rejects_one_bad_entry(tokens, p_keep, match):
    from mechverify.theory.tasks.topics import mask_documents

    with pytest.raises(ValueError, match=match):
        mask_documents(np.array(tokens), 8, p_keep=p_keep)


def test_mask_documents_rejects_one_document_without_a_word():
    from mechverify.theory.tasks.topics import mask_documents

    with pytest.raises(ValueError, match="every document needs at least one word"):
        mask_documents(np.array([[2, 4, 3], [2, 3, 0]]), 5)


def test_mask_documents_redraws_only_the_empty_documents_until_each_has_a_selection():
    from mechverify.theory.tasks.topics import mask_documents

    # one word per document at p_mask = 0.3: about 30 % are selected on the first draw, so some
    # but not all documents need the redraw
    docs = np.tile([2, 4, 3], (200, 1))
    m = mask_documents(docs, 5, p_mask=0.3)
    assert m.selected[:, 1].all() and not m.selected[:, [0, 2]].any()


def test_mask_documents_split_of_selected_positions():
    from mechverify.theory.tasks.topics import MASK, mask_documents

    # p_mask = 1 on 4000 x 10 word positions, p_random = 0.3, p_keep = 0.2: [MASK] with probability
    # 0.5, a uniform id over the whole vocabulary (5 ids, specials included) with 0.3, the word
    # kept with 0.2; so an input is MASK (1) with 0.5 + 0.3/5 = 0.56, the word (4) with
    # 0.2 + 0.3/5 = 0.26, and one of the ids 0, 2, 3 with 0.3 * 3/5 = 0.18; 5-sigma bounds, sigma <= 0.0025
    words = np.full((4000, 10), 4)
    docs = np.concatenate([np.full((4000, 1), 2), words, np.full((4000, 1), 3)], axis=1)
    m = mask_documents(docs, 5, p_mask=1.0, p_random=0.3, p_keep=0.2, seed=1)
    inp = m.inputs[:, 1:-1]
    assert abs((inp == MASK).mean() - 0.56) < 5 * 0.0025
    assert abs((inp == 4).mean() - 0.26) < 5 * 0.0025
    others = inp[(inp != MASK) & (inp != 4)]
    assert abs(others.size / inp.size - 0.18) < 5 * 0.0025
    assert set(np.unique(others).tolist()) == {0, 2, 3}


# --- theory/tasks/hmm.py (2026-12-07, part of the module) ------------------------------------------
def _hmm_arrays():
    T = np.array([[0.9, 0.1], [0.2, 0.8]])
    E = np.array([[0.7, 0.3], [0.4, 0.6]])
    return T, E, np.array([0.5, 0.5])


def test_hmm_rejects_a_rectangular_transition_with_its_own_message():
    from mechverify.theory.tasks.hmm import HMM

    _, E, init = _hmm_arrays()
    with pytest.raises(ValueError, match=r"transition must be square \(S, S\)"):
        HMM(np.full((2, 3), 1 / 3), E, init)


def test_hmm_names_the_first_row_that_does_not_sum_to_one():
    from mechverify.theory.tasks.hmm import HMM

    T, E, init = _hmm_arrays()
    T[1] = [0.2, 0.7]
    with pytest.raises(ValueError, match=r"transition rows must sum to 1; row 1 sums to 0.9"):
        HMM(T, E, init)


def test_hmm_is_frozen_and_compared_by_identity():
    import dataclasses

    from mechverify.theory.tasks.hmm import HMM

    h = HMM(*_hmm_arrays())
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.initial = np.array([1.0, 0.0])
    twin = HMM(*_hmm_arrays())
    assert h == h and h != twin and len({h, twin}) == 2       # hashable: usable as a key


def test_hmm_arrays_are_read_only_copies():
    from mechverify.theory.tasks.hmm import HMM

    T, E, init = _hmm_arrays()
    h = HMM(T, E, init)
    T[0, 0] = 0.5                                              # the caller's array is copied
    assert h.transition[0, 0] == 0.9
    for arr in (h.transition, h.emission, h.initial):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0.0


@pytest.mark.parametrize("bad", ["ab", {1, 2}])
def test_check_hmms_rejects_a_string_or_a_non_sequence(bad):
    from mechverify.theory.tasks.hmm import check_hmms

    with pytest.raises(TypeError, match="hmms must be an HMM or a sequence of HMMs"):
        check_hmms(bad)


# --- theory/tasks/hmm.py (2026-12-07, rest of the module): emission_margin on every shape, the
# --- samplers' defaults and guards, the near-duplicate emission pairs, the uniform initial law ----
def test_emission_margin_on_tall_square_and_wide_emissions():
    from mechverify.theory.tasks.hmm import emission_margin

    # S > O: the map R^S -> R^O has a kernel, alpha = 0 exactly
    assert emission_margin(np.full((3, 2), 0.5)) == 0.0
    # S <= O: the smallest singular value, here from the eigenvalues of E E^T (not from an SVD)
    rng = np.random.default_rng(0)
    for S, O in [(3, 3), (3, 5)]:
        E = rng.dirichlet(np.ones(O), size=S)
        expected = float(np.sqrt(np.linalg.eigvalsh(E @ E.T).min()))
        assert expected > 1e-3
        assert emission_margin(E) == pytest.approx(expected, rel=1e-10)


def test_hmm_samplers_default_concentrations():
    from mechverify.theory.tasks.hmm import low_rank_transition, random_emission

    Xi, M = low_rank_transition(4, 2, np.random.default_rng(5))
    ref = np.random.default_rng(5)                                  # Dirichlet(1) rows
    np.testing.assert_array_equal(Xi, ref.dirichlet(np.ones(2), size=4))
    np.testing.assert_array_equal(M, ref.dirichlet(np.ones(4), size=2))
    E = random_emission(3, 6, np.random.default_rng(5))
    np.testing.assert_allclose(E, np.random.default_rng(5).dirichlet(np.full(6, 0.3), size=3), rtol=1e-15)


def test_random_emission_near_duplicate_pairs_by_hand():
    from mechverify.theory.tasks.hmm import random_emission

    # S = 5: rows 1 and 3 are pulled towards rows 0 and 2, row 4 has no partner and stays
    E = random_emission(5, 4, np.random.default_rng(3), 0.5, duplicate_eps=0.2)
    D = np.random.default_rng(3).dirichlet(np.full(4, 0.5), size=5)
    expected = D.copy()
    expected[1] = 0.8 * D[0] + 0.2 * D[1]
    expected[3] = 0.8 * D[2] + 0.2 * D[3]
    np.testing.assert_allclose(E, expected, rtol=1e-14)


@pytest.mark.parametrize("kwargs, message", [
    (dict(transition_concentration=0.0), "transition_concentration must be > 0"),
    (dict(duplicate_eps=-0.1), "duplicate_eps must be >= 0"),
    (dict(self_loop=-0.1), "self_loop must be >= 0"),
])
def test_random_hmm_rejects_parameters_below_their_range(kwargs, message):
    from mechverify.theory.tasks.hmm import random_hmm

    with pytest.raises(ValueError, match=message):
        random_hmm(3, 4, seed=0, **kwargs)


def test_random_hmm_initial_law_uniform_or_stationary():
    from mechverify.theory.tasks.hmm import random_hmm

    uniform = random_hmm(3, 4, seed=2, initial="uniform")
    np.testing.assert_array_equal(uniform.initial, np.full(3, 1 / 3))
    h = random_hmm(3, 4, seed=2, initial="stationary")
    np.testing.assert_allclose(h.initial @ h.transition, h.initial, atol=1e-14)
    assert np.abs(h.initial - 1 / 3).max() > 1e-3                   # this chain is not doubly stochastic


# --- theory/tasks/regression.py (rest of the module, 2026-12-07): the noise stream is its own ------
def _noise_of_every_example(b):
    """y - <w, x> for the n examples and the query: (B, n + 1)."""
    return np.concatenate([b.y - np.einsum("bnd,bd->bn", b.X, b.w), (b.y_query - (b.x_query * b.w).sum(1))[:, None]], 1)


def test_regression_noise_is_independent_of_the_inputs_and_the_weights():
    from mechverify.theory.tasks.regression import sample_regression

    # each prompt's normals are cut into x, w, noise and support streams; the noise of every
    # example must be uncorrelated with every coordinate of the query and of w
    # (N = 4000: |corr| < 5 / sqrt(N) = 0.079 for independent streams)
    b = sample_regression(4000, 2, 3, noise=1.0, seed=7)
    eps = _noise_of_every_example(b)
    others = np.concatenate([b.x_query, b.w], 1)
    corr = np.corrcoef(eps.T, others.T)[:3, 3:]
    assert np.abs(corr).max() < 5 / np.sqrt(4000), corr


def test_regression_sparse_support_is_independent_of_the_noise_and_the_query():
    from mechverify.theory.tasks.regression import sample_regression

    # the support stream is its own too: which coordinates of w are kept must be uncorrelated
    # with every example's noise and the query's coordinates (|corr| < 5 / sqrt(4000))
    b = sample_regression(4000, 2, 5, noise=1.0, sparsity=2, seed=11)
    kept = (b.w != 0).astype(float)
    assert (kept.sum(1) == 2).all()
    eps = _noise_of_every_example(b)
    corr = np.corrcoef(kept.T, np.concatenate([eps, b.x_query], 1).T)[:5, 5:]
    assert np.abs(corr).max() < 5 / np.sqrt(4000), corr


# --- theory/symbolic/topics.py (2026-12-07, part of the module): the symbols' domain, the block
# --- statistics' defaults and corruption seed, the default bracket, the limit loss by hand --------
def test_dirichlet_moments_symbols_carry_their_domain():
    from mechverify.theory.symbolic.topics import dirichlet_moments

    # T a positive integer, alpha > 0: sympy simplifies under these assumptions
    symbols = {str(s): s for s in dirichlet_moments()["norm2_closed"].free_symbols}
    assert symbols["T"].is_integer and symbols["T"].is_positive and symbols["alpha"].is_positive


def test_block_statistics_defaults_and_corruption_seed():
    from mechverify.theory.symbolic.topics import block_statistics, statistics_from
    from mechverify.theory.tasks.topics import mask_documents, sample_lda

    def by_hand(n_docs, seed):
        corpus = sample_lda(n_docs, 3, 4, 1.0, (8, 12), seed)
        masked = mask_documents(corpus.tokens, corpus.vocab_size, 0.15, 0.1, 0.1, seed=seed + 1)
        return statistics_from(corpus.topics, masked.selected, masked.key_visible, 3, 4)

    # defaults: 20 000 documents, seed 0 (the corruption from seed 1)
    got, ref = block_statistics(3, 4, 1.0, (8, 12)), by_hand(20000, 0)
    np.testing.assert_array_equal(got.s, ref.s)
    np.testing.assert_array_equal(got.m, ref.m)
    got, ref = block_statistics(3, 4, 1.0, (8, 12), n_docs=50, seed=5), by_hand(50, 5)
    np.testing.assert_array_equal(got.m, ref.m)


def test_minimise_block_loss_finds_an_optimum_below_one():
    from mechverify.theory.symbolic.topics import BlockStatistics, minimise_block_loss

    # one document, T = 2, masses s = (0.6, 0.4), masked counts m = (21, 19): L'(c) = 0 where
    # 0.4 + 0.2 sigmoid(0.2 c) = (0.6 * 21 + 0.4 * 19) / 40 = 0.505, c* = 5 ln(0.525 / 0.475) = 0.5004
    stats = BlockStatistics(np.array([[0.6, 0.4]]), np.array([[21.0, 19.0]]), 3)
    assert minimise_block_loss(stats) == pytest.approx(5 * np.log(0.525 / 0.475), abs=1e-7)


def test_limit_loss_by_hand():
    from mechverify.theory.symbolic.topics import limit_loss

    # theta = (1/2, 1/2), c = 2, v = 3: -2 * 1/2 + log(e + e) + log 3 = log 6
    assert limit_loss(2.0, np.array([[0.5, 0.5]]), 3) == pytest.approx(np.log(6.0), rel=1e-15)


def test_optimal_block_contrast_default_sample_sizes_and_seed(monkeypatch):
    from mechverify.theory.symbolic import topics

    # the defaults are wiring: 20 000 documents (finite length) or 2^24 draws (N -> infinity),
    # seed 0; the samplers themselves are replaced by recorders
    calls = []
    monkeypatch.setattr(topics, "block_statistics", lambda *a: calls.append(("finite", a[4:])) or "stats")
    monkeypatch.setattr(topics, "minimise_block_loss", lambda stats: 1.5)
    monkeypatch.setattr(topics, "limit_block_contrast", lambda T, alpha, n, seed: calls.append(("limit", (n, seed))) or (2.5, 0.0))
    assert topics.optimal_block_contrast(4, 3, 0.5, (8, 12)) == 1.5
    assert topics.optimal_block_contrast(4, 3, 0.5, None) == 2.5
    assert calls == [("finite", (20000, 0)), ("limit", (2 ** 24, 0))]


def test_root_bracket_finds_a_root_below_one():
    from mechverify.theory.symbolic.topics import _root_bracketed

    # the residual of test_minimise_block_loss_finds_an_optimum_below_one: <s, softmax(c s)> = 0.505
    # at c* = 5 ln(0.525 / 0.475) = 0.5004, inside the first bracket (0, 1)
    assert _root_bracketed(np.array([[0.6, 0.4]]), 0.505) == pytest.approx(5 * np.log(0.525 / 0.475), rel=1e-12)


def test_limit_block_contrast_defaults_and_quiet_by_default(capsys):
    from mechverify.theory.symbolic.topics import limit_block_contrast

    # 2^22 draws from seed 0 (about 1 s at T = 2), and no progress bar unless asked for
    assert limit_block_contrast(2, 1.0) == limit_block_contrast(2, 1.0, 2 ** 22, 0)
    assert capsys.readouterr().err == ""
    limit_block_contrast(2, 1.0, 64, progress=True)
    assert "c* limit T=2" in capsys.readouterr().err
    # the smallest sample is 16 draws
    assert np.isfinite(limit_block_contrast(2, 1.0, 16)[0])
    with pytest.raises(ValueError, match="n_draws must be an integer >= 16; got 15"):
        limit_block_contrast(2, 1.0, 15)


# --- theory/algorithms/regression.py (rest of the module, 2026-12-07): ISTA's zero steps, its
# --- default and explicit step size ----------------------------------------------------------------
def test_ista_zero_steps_is_the_start():
    from mechverify.theory.algorithms.regression import ista_weights

    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    assert np.array_equal(ista_weights(X, X[..., 0], 0.1, 0), np.zeros((2, 3)))


def test_ista_step_size_default_and_explicit():
    from mechverify.theory.algorithms.regression import ista_weights

    # one step from 0 without penalty: w1 = lr X^T y / n, with lr = n / sigma_max(X)^2 per prompt
    # by default (B = 3 prompts, n = 5, d = 4: B, n and d all differ)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5))
    c = np.einsum("bnd,bn->bd", X, y) / 5
    lr = 5 / np.linalg.svd(X, compute_uv=False)[:, 0] ** 2
    np.testing.assert_allclose(ista_weights(X, y, 0.0, 1), lr[:, None] * c, rtol=1e-12)
    np.testing.assert_allclose(ista_weights(X, y, 0.0, 1, lr=0.3), 0.3 * c, rtol=1e-14)
    with pytest.raises(ValueError, match="lr must be > 0"):
        ista_weights(X, y, 0.0, 1, lr=0.0)


# --- theory/tasks/hmm.py (the sampler's last 28 mutants, 2026-12-07): every category can be drawn,
# --- the last transition is taken, the prompts are frozen -------------------------------------------
def test_hmm_sampler_draws_the_last_category_at_its_rate():
    from mechverify.theory.tasks.hmm import HMM, sample_sequences

    # the initial law puts 0.5 on the last state and the emission 0.5 on the last symbol from
    # every state: at t = 0 both frequencies are 0.5 (N = 4000: 5 sigma = 0.04)
    T = np.full((3, 3), 1 / 3)
    E = np.array([[0.25, 0.25, 0.5], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    obs, states = sample_sequences(HMM(T, E, np.array([0.25, 0.25, 0.5])), 4000, 2, seed=0)
    assert abs((states[:, 0] == 2).mean() - 0.5) < 0.04
    assert abs((obs[:, 0] == 2).mean() - 0.5) < 0.04
    # one sequence (fewer rows than categories in every draw): along the path too
    obs, _ = sample_sequences(HMM(T, E, np.array([0.25, 0.25, 0.5])), 1, 4000, seed=0)
    assert abs((obs == 2).mean() - 0.5) < 0.04


def test_hmm_sampler_takes_the_last_transition():
    from mechverify.theory.tasks.hmm import HMM, sample_sequences

    # a chain that always switches: every step of the path, the last one included, alternates
    T = np.array([[0.0, 1.0], [1.0, 0.0]])
    _, states = sample_sequences(HMM(T, np.full((2, 2), 0.5), np.array([0.5, 0.5])), 50, 4, seed=1)
    assert (np.diff(states, axis=1) != 0).all()


def test_hmm_prompts_are_frozen():
    import dataclasses

    from mechverify.theory.tasks.hmm import random_hmms, sample_prompts

    p = sample_prompts(random_hmms(2, 3, 4, seed=0), 2, 1, 3, 3, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.task = np.zeros(2, dtype=np.int64)


@pytest.mark.parametrize("seed", [9, 98, 495, 1246])
def test_lasso_meets_its_kkt_bound_at_a_loose_tolerance(seed):
    from mechverify.theory.algorithms.regression import _lasso_kkt_residual, lasso_weights

    # the documented guarantee: every KKT residual <= tol * sum_{j != k} |G_kj|. At a loose tol
    # (0.007-0.07 here) a wrong support guess can pass a looser bound (one counting |G_kk| too);
    # these four instances were found by searching for such a guess
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 8)), int(rng.integers(2, 6))
    X = rng.standard_normal((1, n, d)) * rng.uniform(0.2, 3, size=d)
    y = rng.standard_normal((1, n))
    lam, tol = float(rng.uniform(0.01, 1.0)), float(10 ** rng.uniform(-3, 0))
    G, c = np.einsum("bnd,bne->bde", X, X) / n, np.einsum("bnd,bn->bd", X, y) / n
    bound = tol * (np.abs(G).sum(2) - np.abs(np.einsum("bkk->bk", G)))
    assert (_lasso_kkt_residual(G, c, lasso_weights(X, y, lam, tol), lam) <= bound).all()


@pytest.mark.parametrize("shape", [(0, 2, 2), (2, 0, 2), (2, 2, 0)])
def test_lasso_rejects_an_empty_axis(shape):
    from mechverify.theory.algorithms.regression import lasso_weights

    with pytest.raises(ValueError, match=r"X must have shape \(B, n, d\) with B, n, d >= 1"):
        lasso_weights(np.ones(shape), np.ones(shape[:2]), 0.1)


def test_lasso_on_the_smallest_problem_and_predict_defaults():
    from mechverify.theory.algorithms.regression import lasso_predict, lasso_weights

    # B = n = d = 1: G = x^2, c = x y, w = S_lam(c) / G = (6 - 1) / 4 at x = 2, y = 3, lam = 1
    assert lasso_weights(np.full((1, 1, 1), 2.0), np.full((1, 1), 3.0), 1.0)[0, 0] == pytest.approx(1.25, rel=1e-15)
    rng = np.random.default_rng(3)
    X, y, xq = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6)), rng.standard_normal((2, 3))
    expected = np.einsum("bd,bd->b", lasso_weights(X, y, 0.2, 1e-10, 100_000), xq)
    assert np.array_equal(lasso_predict(X, y, xq, 0.2), expected)


# --- constructions/sparse_regression.py (rest of the module, 2026-12-07): the preprocessing target
def test_preprocessing_target_by_hand_and_made_by_the_layer():
    import torch

    from mechverify.constructions.sparse_regression import preprocessing_layer, preprocessing_target, pto_layout, pto_transformer
    from mechverify.theory.tasks.regression import sample_regression

    # r_hat = (1/n) sum_j y_j x_j over the n = 5 context tokens, written into the xt slots as r_hat * x
    d, n = 3, 5
    b = sample_regression(4, n, d, seed=2)
    Z = pto_transformer(d, 0, 1.0).embed(*(torch.as_tensor(a) for a in (b.X, b.y, b.x_query)))
    layout = pto_layout(d)
    r = np.einsum("bjk,bj->bk", b.X, b.y) / n
    x_all = np.concatenate([b.X, b.x_query[:, None]], 1)
    with torch.no_grad():
        target = preprocessing_target(Z, n, d)
        update = preprocessing_layer(d)(Z, n)
    np.testing.assert_allclose(target[..., layout.slice("xt")].numpy(), r[:, None, :] * x_all, rtol=1e-12)
    assert not target[..., :layout.slice("xt").start].any()
    torch.testing.assert_close(update, target, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n, chunk", [(40, 16), (2 ** 16 + 16, 2 ** 15)])
def test_limit_block_contrast_estimate_written_out(n, chunk):
    from scipy.special import softmax

    from mechverify.theory.symbolic.topics import _root_bracketed, limit_block_contrast

    # the docstring's three steps on n draws in chunks (40 = 16 + 16 + 8; 2^16 + 16, where the
    # pilot is capped at 2^16 draws), T = 5, alpha = 0.5: the pilot root c0, the control-variate
    # mean of g = <theta, softmax(c0 theta)> (least squares with an intercept on
    # x_k = sum theta^k - E x_k, k = 2..6), one Newton step with g' = Var_softmax(theta), and
    # error = 2 SE + |g''| / (2 g') (c - c0)^2
    T, alpha = 5, 0.5
    pilot, main = (np.random.default_rng(s) for s in np.random.SeedSequence(3).spawn(2))
    target = (1 + alpha) / (1 + T * alpha)
    c0 = _root_bracketed(pilot.dirichlet(np.full(T, alpha), size=min(n, 2 ** 16)), target)
    theta = main.dirichlet(np.full(T, alpha), size=n)
    sm = softmax(c0 * theta, axis=1)
    m1, m2, m3 = ((sm * theta ** j).sum(1) for j in (1, 2, 3))
    exact = [T * np.prod([alpha + j for j in range(k)]) / np.prod([T * alpha + j for j in range(k)]) for k in range(2, 7)]
    x = np.column_stack([(theta ** k).sum(1) - e for k, e in zip(range(2, 7), exact)])
    coef = np.linalg.lstsq(np.column_stack([np.ones(n), x - x.mean(0)]), m1, rcond=None)[0]
    resid = m1 - coef[0] - (x - x.mean(0)) @ coef[1:]
    g1, g2 = np.mean(m2 - m1 ** 2), np.mean(m3 - 3 * m2 * m1 + 2 * m1 ** 3)
    c = c0 - (m1.mean() - coef[1:] @ x.mean(0) - target) / g1
    err = 2 * np.sqrt(np.mean(resid ** 2) / (n - 6)) / g1 + abs(g2) / (2 * g1) * (c - c0) ** 2
    got = limit_block_contrast(T, alpha, n, seed=3, chunk=chunk)
    assert got[0] == pytest.approx(c, rel=1e-10) and got[1] == pytest.approx(err, rel=1e-8)


def _embedded_pto_prompts(seed):
    import torch

    from mechverify.constructions.sparse_regression import pto_transformer
    from mechverify.theory.tasks.regression import sample_regression

    b = sample_regression(8, 6, 3, seed=seed)
    return pto_transformer(3, 0, 1.0).embed(*(torch.as_tensor(a) for a in (b.X, b.y, b.x_query)))


def test_fit_preprocessing_heads_default_restarts_and_seed():
    from mechverify.constructions.sparse_regression import fit_preprocessing_heads

    # on these prompts a fifth start (two sweeps each) beats the best of four, so the default
    # number of starts shows in the residual; the default seed is 0
    Z = _embedded_pto_prompts(1)
    default = fit_preprocessing_heads(3, 1, Z, 6, iters=2)[1]
    assert default == fit_preprocessing_heads(3, 1, Z, 6, iters=2, restarts=4, seed=0)[1]
    assert fit_preprocessing_heads(3, 1, Z, 6, iters=2, restarts=5, seed=0)[1] < default


@pytest.mark.parametrize("name", ["tol", "stall"])
def test_fit_preprocessing_heads_rejects_a_zero_threshold(name):
    from mechverify.constructions.sparse_regression import fit_preprocessing_heads

    with pytest.raises(ValueError, match=f"{name} must be > 0"):
        fit_preprocessing_heads(3, 1, _embedded_pto_prompts(1), 6, iters=2, **{name: 0.0})


def test_fit_preprocessing_heads_keeps_the_start_that_ends_best(monkeypatch):
    from mechverify.constructions import sparse_regression as sr

    # two given starts (a stand-in generator hands them out): A ends at 0.502, B at 0.442 though
    # B is still at 0.549 after two sweeps; the best start is the one that ends best
    Z = _embedded_pto_prompts(1)
    draws = np.random.default_rng(123)
    A, B = [draws.standard_normal((1, 4, 4)) for _ in range(12)][10:]

    def residual(chosen, **kwargs):
        class GivenStarts:
            def __init__(self, seed):
                self.left = list(chosen)

            def standard_normal(self, shape):
                return self.left.pop(0)

        with monkeypatch.context() as m:
            m.setattr(np.random, "default_rng", GivenStarts)
            return sr.fit_preprocessing_heads(3, 1, Z, 6, restarts=len(chosen), **kwargs)[1]

    ends = residual([A]), residual([B])
    assert ends[1] < ends[0] <= residual([B], iters=2)
    assert residual([A, B]) == ends[1]


def test_fit_preprocessing_heads_reports_the_layers_relative_residual():
    import torch

    from mechverify.constructions.sparse_regression import fit_preprocessing_heads, preprocessing_target

    Z = _embedded_pto_prompts(2)
    layer, residual, _ = fit_preprocessing_heads(3, 2, Z, 6, restarts=1)
    with torch.no_grad():
        target = preprocessing_target(Z, 6, 3)
        assert residual == pytest.approx(float((layer(Z, 6) - target).norm() / target.norm()), rel=1e-9)


def test_equal_weight_descent_default_length():
    from mechverify.theory.symbolic.topics import equal_weight_gradient_descent

    # 200 steps by default: c_0..c_200 and their 201 losses
    cs, losses = equal_weight_gradient_descent(4, 2, 3)
    assert cs.shape == losses.shape == (201,)


def test_bayes_loss_rejects_one_special_position_among_words():
    from mechverify.theory.symbolic.topics import bayes_loss

    # two documents of three positions; position 2 of document 1 is a special (topic -1)
    topics = np.array([[0, 1, 1], [1, 0, -1]])
    visible = np.ones((2, 3), dtype=bool)
    selected = np.zeros((2, 3), dtype=bool)
    selected[0, 0] = True
    assert np.isfinite(bayes_loss(topics, selected, visible, 2, 3, 1.0))
    selected[1, 2] = True
    with pytest.raises(ValueError, match="selected must only mark word positions"):
        bayes_loss(topics, selected, visible, 2, 3, 1.0)


# --- theory/algorithms/hmm.py (never run before, 2026-12-07, seventh session): the paired forward
# --- pass, the enumeration guards at their edges, the mixture's chunks and its log-sum-exp, the
# --- windowed predictive from a law that is not stationary, the window features' values ----------


def _no_enumeration(*args, **kwargs):
    raise AssertionError("the size guard must fire before anything is enumerated")


def test_observation_ids_error_names_the_first_bad_id():
    H = random_hmm(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"obs must hold ids in \[0, 3\); found 5"):
        hmm_ref.forward_predictive(H, [0, 1, 5])          # one bad id, after a 0
    with pytest.raises(ValueError, match="found -1"):
        hmm_ref.forward_predictive(H, [1, -1, 2])


def test_empty_time_is_rejected_by_default():
    H = random_hmm(2, 3, seed=0)
    with pytest.raises(ValueError, match="non-empty sequences"):
        hmm_ref.windowed_predictive(H, np.zeros((2, 0), dtype=int), 1)
    with pytest.raises(ValueError, match="non-empty sequences"):
        hmm_ref.check_obs("obs", np.zeros((2, 0), dtype=int), 3)


@pytest.mark.parametrize("T", [0, 3])
def test_paired_forward_runs_hmm_k_on_its_own_sequences(T):
    hs = random_hmms(2, 3, 4, seed=5, initial="uniform")
    obs = np.random.default_rng(1).integers(0, 4, (2, 3, T))     # K = 2 HMMs, N = 3 sequences each
    res = hmm_ref.forward(hs, obs, paired=True)
    assert res.log_predictive.shape == (2, 3, T + 1, 4)
    for k in range(2):
        own = hmm_ref.forward(hs[k], obs[k])
        for a, b in zip(res.__dict__.values(), own.__dict__.values()):
            np.testing.assert_array_equal(a[k], b)
    np.testing.assert_array_equal(hmm_ref.log_likelihood(hs, obs, paired=True)[1],
                                  hmm_ref.log_likelihood(hs[1], obs[1]))
    with pytest.raises(ValueError, match=r"shape \(K=2, N, T\) when paired"):
        hmm_ref.forward(hs, obs[:1], paired=True)


def test_bruteforce_guard_at_its_edge():
    # S^T <= 1e6 is enumerated (1000^2 exactly), 4^10 = 1 048 576 is refused before enumeration
    big = random_hmm(1000, 3, seed=0)
    assert hmm_ref.bruteforce_likelihood(big, [0, 2]) == pytest.approx(
        np.exp(hmm_ref.log_likelihood(big, [0, 2])), rel=1e-12)
    small = random_hmm(4, 2, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hmm_ref, "_path_probabilities", _no_enumeration)
        with pytest.raises(ValueError, match="too long for enumeration"):
            hmm_ref.bruteforce_likelihood(small, np.zeros(10, dtype=int))


def test_hankel_and_future_guards_and_shapes(monkeypatch):
    H = random_hmm(2, 3, seed=2, initial="uniform")
    hk = hmm_ref.hankel_matrix(H, 2)                       # future = 1 by default
    assert hk.shape == (9, 3)
    assert hmm_ref.hankel_matrix(H, 1, 2).shape == (3, 9)  # O^future columns (O * future = 6)
    np.testing.assert_allclose(hk.reshape(-1), np.exp(hmm_ref.log_likelihood(H, hmm_ref.all_sequences(3, 3))),
                               rtol=1e-13)
    F = hmm_ref.future_matrix(H, 5)                          # 3^5 = 243 futures: far below the guard
    np.testing.assert_allclose(F.sum(axis=0), 1.0, rtol=1e-12)
    # O^r = 2e6 exactly is allowed (one state, 2e6 equally likely symbols, r = 1)
    O = 2 * 10**6
    flat = HMM(np.ones((1, 1)), np.full((1, O), 1.0 / O), np.ones(1))
    assert hmm_ref.future_matrix(flat, 1).shape == (O, 1)
    # 2^21 = 2 097 152 > 2e6 is refused before any sequence is enumerated (the split of 21 into
    # past + future does not matter)
    two = random_hmm(2, 2, seed=0)
    monkeypatch.setattr(hmm_ref, "all_sequences", _no_enumeration)
    with pytest.raises(ValueError, match="O\\^r"):
        hmm_ref.future_matrix(two, 21)
    for past, future in [(20, 1), (1, 20)]:
        with pytest.raises(ValueError, match="past \\+ future too long"):
            hmm_ref.hankel_matrix(two, past, future)


def test_mixture_prior_must_be_a_probability_vector():
    hs = random_hmms(2, 2, 3, seed=0)
    demos, test = np.zeros((1, 3), dtype=int), np.array([0, 1])
    with pytest.raises(ValueError, match="prior must be a probability vector"):
        hmm_ref.bayes_mixture_predictive(hs, [1.5, -0.5], demos, test)      # sums to 1, one entry < 0
    # a zero entry is allowed: that HMM gets weight 0 throughout
    w = np.exp(hmm_ref.mixture_log_weights(hs, [1.0, 0.0], demos, test))
    np.testing.assert_array_equal(w[:, 1], 0.0)


def test_mixture_demo_shapes_and_a_single_demo_is_checked():
    hs = random_hmms(2, 2, 3, seed=0)
    demos, test = np.array([[0, 1, 2], [2, 2, 0]]), np.array([1, 0])
    one = hmm_ref.bayes_mixture_predictive(hs, [0.5, 0.5], demos, test)
    # a single test sequence takes demos (n, L) or (1, n, L)
    np.testing.assert_array_equal(hmm_ref.bayes_mixture_predictive(hs, [0.5, 0.5], demos[None], test), one)
    with pytest.raises(ValueError, match=r"demos must have shape \(B=1, n, L\)"):
        hmm_ref.bayes_mixture_predictive(hs, [0.5, 0.5], demos, test[None])    # batched test, 2-D demos
    with pytest.raises(ValueError, match=r"demos must hold ids in \[0, 3\)"):
        hmm_ref.bayes_mixture_predictive(hs, [0.5, 0.5], np.array([[0, 3]]), test)   # n = 1 demo


def test_mixture_chunks_fill_the_state_budget(monkeypatch):
    # K = 2, S = 3, T = 4: one prompt holds K (T + 1) S = 30 state-law entries
    hs = random_hmms(2, 3, 4, seed=1, initial="uniform")
    rng = np.random.default_rng(0)
    demos, test = np.zeros((7, 0, 5), dtype=int), rng.integers(0, 4, (7, 4))
    ref = hmm_ref.bayes_mixture_predictive(hs, [0.3, 0.7], demos, test)
    seen, inner = [], hmm_ref._filter

    def recording(T, E, b0, obs, keep_filtered=False):
        seen.append(obs.shape[1])
        return inner(T, E, b0, obs, keep_filtered)

    monkeypatch.setattr(hmm_ref, "_filter", recording)
    for budget, chunks in [(None, [7]), (90, [3, 3, 1]), (10, [1] * 7)]:   # 10 < one prompt: one at a time
        if budget is not None:
            monkeypatch.setattr(hmm_ref, "STATE_BUDGET", budget)
        seen.clear()
        out = hmm_ref.bayes_mixture_predictive(hs, [0.3, 0.7], demos, test)
        assert seen == chunks, budget
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-15)


def test_mixture_weights_survive_likelihoods_that_underflow():
    # HMM 0 emits symbol 0 with probability 1 - 2e-5, HMM 1 with 1e-5: 100 demos of ten 0s put
    # the log likelihoods ~11 500 nats apart, far beyond exp's range
    T = np.full((2, 2), 0.5)
    hs = [HMM(T, np.array([[1 - 2e-5, 1e-5, 1e-5]] * 2), np.full(2, 0.5)),
          HMM(T, np.array([[1e-5, 0.5, 0.5 - 1e-5]] * 2), np.full(2, 0.5))]
    demos, test = np.zeros((100, 10), dtype=int), np.array([0, 1])
    logw = hmm_ref.mixture_log_weights(hs, [0.5, 0.5], demos, test)
    ll = [hmm_ref.log_likelihood(h, demos).sum() for h in hs]
    assert np.all(np.isfinite(logw))
    np.testing.assert_allclose(logw[:, 0], 0.0, atol=1e-300)
    gap = logw[0, 1] - logw[0, 0]
    assert gap == pytest.approx(ll[1] - ll[0], rel=1e-12) and gap < -11_000


@pytest.mark.parametrize("L", [3, 7])
def test_windowed_predictive_starts_each_window_from_its_own_law(L):
    # a uniform initial law is not stationary, so every window starts from a different law
    H = random_hmm(3, 4, seed=3, initial="uniform")
    obs = np.random.default_rng(2).integers(0, 4, L)
    r = 3
    got = hmm_ref.windowed_predictive(H, obs, r)
    full = hmm_ref.forward_predictive(H, obs)
    np.testing.assert_array_equal(got[:r + 1], full[:r + 1])
    law = H.initial
    for t in range(r + 1, L + 1):                       # row t: window o_{t-r+1}..o_t from the law of h_{t-r+1}
        law = law @ H.transition
        started = HMM(H.transition, H.emission, law)
        np.testing.assert_allclose(got[t], hmm_ref.forward_predictive(started, obs[t - r:t])[-1], rtol=1e-13)


def test_window_features_by_hand():
    obs = np.array([2, 0, 1, 1])                        # n_obs = 3, r = 2: index o_t + 3 o_{t-1} at t >= 2
    idx = hmm_ref.window_index(obs, 3, 2, lag=0)
    np.testing.assert_array_equal(idx, [-1, 0 + 3 * 2, 1 + 3 * 0, 1 + 3 * 1])
    X = hmm_ref.window_features(obs, 3, 2)             # 1-D obs, lag 0 by default
    expected = np.zeros((4, 9))
    expected[[1, 2, 3], [6, 1, 4]] = 1.0
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(hmm_ref.window_features(obs, 3, 2, lag=1)[3], expected[2])


def test_simplex_readout_uniform_for_a_row_without_positive_mass():
    out = hmm_ref.simplex_readout(np.array([[-1.0, 0.0, -2.0, 0.0], [3.0, -1.0, 1.0, 0.0]]))
    np.testing.assert_array_equal(out, [[0.25] * 4, [0.75, 0.0, 0.25, 0.0]])


# --- constructions/kernel.py (never run before, 2026-12-07, seventh session): when the kernel
# --- may run, tensor by tensor -------------------------------------------------------------------


def test_kernel_applies_is_a_bool_and_needs_every_tensor_alike(monkeypatch):
    Z = torch.zeros(2, 3, 4, dtype=torch.float64)
    assert kernel.applies(Z, Z) is True
    with kernel.disabled():
        assert kernel.applies(Z) is False
    assert kernel.applies(Z, Z.to(torch.float32)) is False       # one tensor of another dtype
    assert kernel.applies(Z.to(torch.float32), Z) is False
    assert kernel.applies(Z, Z.to_sparse()) is False             # one tensor not strided
    monkeypatch.setattr(kernel, "WATCH_CHECK", None)
    assert kernel.applies(Z) is False


def test_kernel_stays_off_when_one_tensor_is_wrapped_by_a_transform(monkeypatch):
    # under vmap the input is wrapped and the weights are not: one wrapped tensor suffices
    W = torch.zeros(2, 3, 4, dtype=torch.float64)
    seen = []

    def probe(z):
        seen.append(kernel.applies(z, W))
        return z

    torch.func.vmap(probe)(torch.zeros(5, 2, 3, 4, dtype=torch.float64))
    assert seen == [False]
    monkeypatch.setattr(kernel, "_run", lambda *a, **k: pytest.fail("numpy kernel used under vmap"))
    layer = LinearAttention(4, 2, init_scale=0.5, dtype=torch.float64)
    Z = torch.randn(5, 3, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        batched = torch.func.vmap(lambda z: layer(z, 5))(Z)
        with kernel.disabled():
            plain = torch.stack([layer(z, 5) for z in Z])
    torch.testing.assert_close(batched, plain, rtol=1e-13, atol=1e-13)


def test_moment_update_numpy_alone_is_the_update_by_hand():
    # called without a workspace, an output or ``residual``: the update Z_b M_b^T only
    rng = np.random.default_rng(4)
    Z, A, G = rng.normal(size=(3, 7, 4)), rng.normal(size=(2, 4, 4)), rng.normal(size=(2, 4, 4))
    C = np.einsum("bjd,bje->bde", Z[:, :5], Z[:, :5])
    M = np.einsum("hde,bef,hfg->bdg", A, C, G)
    np.testing.assert_allclose(kernel.moment_update_numpy(Z, A, G, 5), np.einsum("btd,bed->bte", Z, M),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads, size, chunks", [(2, 3, [(0, 1), (1, 3)]), (2, 1, [(0, 1)]), (1, 4, [(0, 4)])])
def test_batch_threads_split_into_at_most_the_thread_count(threads, size, chunks):
    # never more pieces than torch's thread count or than items: no idle or empty worker
    # and each piece runs with a one-thread BLAS
    seen, blas = [], []

    def work(a, b):
        seen.append((a, b))
        blas.extend(info["num_threads"] for info in ThreadpoolController().select(user_api="blas").info())

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kernel._BatchThreads()(size, work)
    finally:
        torch.set_num_threads(before)
    assert sorted(seen) == chunks
    assert blas and set(blas) == {1}


def test_residual_stack_returns_the_input_and_the_final_state_by_default():
    gen = torch.Generator().manual_seed(3)
    layers = [LinearAttention(4, 2, init_scale=0.4, generator=gen) for _ in range(3)]
    Z = torch.randn(2, 6, 4, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        states = kernel.residual_stack(Z, [layer.weights() for layer in layers], 5)
        every = kernel.residual_stack(Z, [layer.weights() for layer in layers], 5, keep_all=True)
    assert len(states) == 2 and len(every) == 4
    assert states[0] is Z
    torch.testing.assert_close(states[1], every[-1], rtol=0, atol=0)


# --- constructions/modules.py (never run before, 2026-12-07, seventh session): the input checks'
# --- messages, set_merged's guards, the route each layer and the stack take (measured in
# --- multiply-adds), the explicit softmax pattern at d_head != 4, GPT's device ------------------


def test_check_tensor_shape_and_finiteness_messages():
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 4\); got \(2, 3\)"):
        check_tensor("x", x, shape=(2, 4))                       # one axis of two wrong
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 4\)"):
        check_tensor("x", x, shape=(None, 4))                    # a free axis prints as *
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="only finite values"):
        check_tensor("x", x)                                     # one entry of six


def test_linear_attention_defaults_to_zero_weights_and_merges_by_hand():
    assert all(torch.count_nonzero(w) == 0 for w in LinearAttention(4, 2).weights())
    gen = torch.Generator().manual_seed(0)
    layer = LinearAttention(3, 2, d_head=2, d_value=4, init_scale=1.0, generator=gen)
    kq, pv = layer.merged()
    torch.testing.assert_close(kq, torch.einsum("hkd,hke->hde", layer.W_K, layer.W_Q), rtol=1e-14, atol=0)
    torch.testing.assert_close(pv, torch.einsum("hdv,hve->hde", layer.W_O, layer.W_V), rtol=1e-14, atol=0)


@pytest.mark.parametrize("d_head, d_value", [(2, 3), (3, 2)])
def test_set_merged_needs_square_heads(d_head, d_value):
    eye = [torch.eye(3, dtype=torch.float64)]
    with pytest.raises(ValueError, match="d_head == d_value == d_model"):
        LinearAttention(3, 1, d_head=d_head, d_value=d_value).set_merged(eye, eye)


def test_set_merged_needs_one_matrix_per_head_in_both_lists():
    eye = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="one \\(3, 3\\) matrix per head"):
        LinearAttention(3, 2).set_merged([eye], [eye, eye])
    with pytest.raises(ValueError, match="one \\(3, 3\\) matrix per head"):
        LinearAttention(3, 2).set_merged([eye, eye], [eye])


def _multiply_adds_per_prompt(layer, T, n, moment):
    """Multiply-adds of one prompt on the torch route ``moment`` (True) or projected (False):
    the difference of FlopCounterMode's counts at 2 and 1 prompts, over 2 (flops = 2 x MACs)."""
    counts = []
    for B in (1, 2):
        Z = torch.ones(B, T, layer.d_model, dtype=torch.float64)
        with torch.no_grad(), kernel.disabled(), FlopCounterMode(display=False) as fc, \
                pytest.MonkeyPatch.context() as mp:
            mp.setattr(layer, "moment_route", lambda *a, **k: moment)
            layer(Z, n)
        counts.append(fc.get_total_flops())
    return (counts[1] - counts[0]) // 2


def test_linear_layer_takes_the_route_with_fewer_multiply_adds():
    # measured, not restated: every (D, H, d_head, d_value, T, n) below runs both torch routes.
    # d_head >= 2 and n >= 2: an einsum whose contracted axis has length 1 becomes an
    # elementwise product, which FlopCounterMode does not count
    checked = flips = 0
    for D, H, dk, dv in [(2, 1, 2, 1), (2, 1, 2, 2), (3, 2, 2, 3), (4, 1, 2, 1), (4, 3, 4, 4), (6, 1, 2, 1),
                         (3, 1, 6, 1), (2, 2, 2, 4), (5, 1, 2, 2), (3, 3, 2, 2)]:
        layer = LinearAttention(D, H, d_head=dk, d_value=dv)
        for T in (3, 5, 8, 12, 20, 40):
            for n in sorted({2, max(2, T // 2), T - 1}):
                moment = _multiply_adds_per_prompt(layer, T, n, True)
                projected = _multiply_adds_per_prompt(layer, T, n, False)
                assert layer.moment_route(T, n) == (moment <= projected), (D, H, dk, dv, T, n, moment, projected)
                checked += 1
                flips += moment <= projected
    assert 0 < flips < checked                                   # both routes occur


def test_linear_projected_route_never_forms_the_scores():
    # the projected linear route sums v_j k_j^T over the context (no T x n scores); scores_form
    # forms the scores: at T = 65, n = 64, d_head = d_value = 2 the first needs 3 636
    # multiply-adds a prompt, the second 19 760
    layer = LinearAttention(6, 1, d_head=2, d_value=2, init_scale=0.3, generator=torch.Generator().manual_seed(1))
    Z = torch.randn(1, 65, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    flops = {}
    for scores_form in (False, True):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            flops[scores_form] = (layer(Z, 64, scores_form=scores_form), fc.get_total_flops())
    assert not layer.moment_route(65, 64)
    torch.testing.assert_close(flops[False][0], flops[True][0], rtol=1e-12, atol=1e-14)
    assert flops[False][1] * 2 < flops[True][1], flops


def test_linear_moment_route_in_torch_sums_every_head():
    # with gradients on, the moment route runs in torch (not the kernel); H = 2 and H = 1
    for H in (1, 2):
        layer = LinearAttention(3, H, init_scale=0.5, generator=torch.Generator().manual_seed(H))
        Z = torch.randn(2, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
        assert layer.moment_route(9, 8)
        moment = layer(Z, 8)
        assert moment.grad_fn is not None
        torch.testing.assert_close(moment, layer(Z, 8, scores_form=True), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("T, stacked", [(5, False), (8, True)])
def test_stack_takes_the_kernel_when_every_layer_takes_the_moment_route(monkeypatch, T, stacked):
    # D = 2, d_head = d_value = 1: the moment route wins from T = 7 tokens (n = T - 1) on
    layers = [LinearAttention(2, 1, d_head=1, d_value=1, init_scale=0.5,
                              generator=torch.Generator().manual_seed(s)) for s in range(2)]
    stack = LinearTransformer(layers, regression_layout(1), torch.zeros(2, dtype=torch.float64))
    assert all(layer.moment_route(T, T - 1) == stacked for layer in layers)
    calls, inner = [], kernel.residual_stack
    monkeypatch.setattr(kernel, "residual_stack", lambda *a, **k: calls.append(1) or inner(*a, **k))
    Z = torch.randn(3, T, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        out = stack(Z)
    assert len(calls) == stacked
    with kernel.disabled():
        ref = Z + layers[0](Z, T - 1)
        ref = ref + layers[1](ref, T - 1, scores_form=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("d_model, n_heads", [(8, 1), (8, 4)])   # d_head 8 and 2 (sqrt(d) != d / 2)
def test_softmax_pattern_route_equals_the_fused_route(d_model, n_heads):
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attn = SoftmaxAttention(d_model, n_heads, dtype=torch.float64)
    x = torch.randn(2, 7, d_model, dtype=torch.float64, generator=gen)
    out, pattern = attn(x, return_pattern=True)
    torch.testing.assert_close(out, attn(x), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, n_heads, 7, dtype=torch.float64))


def test_gpt_honours_its_device_argument():
    gpt = GPT(2, 8, 1, 2, 4, device="meta")
    assert {p.device.type for p in gpt.parameters()} == {"meta"}
    assert {p.device.type for p in GPT(2, 8, 1, 2, 4).parameters()} == {"cpu"}


def test_gpt_positions_are_drawn_after_the_read_in():
    # the documented draws: torch.manual_seed(s), then what default construction gives (an
    # nn.Linear read-in), then N(0, 0.02^2) positions -- written here with torch's own Linear
    with torch.random.fork_rng():                  # leaves the global generator as it was
        torch.manual_seed(7)
        read_in = torch.nn.Linear(3, 8)
        pos = 0.02 * torch.randn(5, 8)
    gpt = GPT(3, 8, 1, 2, 5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(gpt.read_in.weight, read_in.weight, rtol=0, atol=0)
    torch.testing.assert_close(gpt.pos, pos, rtol=0, atol=0)
