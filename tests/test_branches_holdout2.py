"""Branches found by the second held-out mutation slice, sample positions [0.15, 0.20)
(``make mutation MUTATION_ARGS="--report --held-out 0.15"``), run after the tests written
against the first two slices.  Each test kills survivors of that slice: the forward
pass's fallback for an impossible observation in a batch, the active-set Lasso guess after
a sign flip, guards whose two halves are each needed or that hold at their boundary, error
messages that point at the bad entry, immutability, defaults no test relied on, and the
GD risk's pseudo-inverse on a small-scale X (a real bug: an absolute eigenvalue floor).
The tests from the slice's ``constructions/`` part: the linear-attention route choice at its
documented tie, and the topic model's one-hot score matrix read against the model's own
attention; from ``theory/dynamics/topics.py``: the law of a random-word query's topic; from
``theory/checks.py``: the empty matrix as a positive-definite one.  The last two tests are from the
full runs of ``constructions/export.py`` and ``theory/tasks/text.py`` (every mutant of the
module, not a sample): the parity error is the largest difference, not any one; a vocabulary's
``max_size`` cut and its immutability."""

import dataclasses

import numpy as np
import pytest
import sympy as sp

from mechverify.theory.algorithms.hmm import bruteforce_predictive, forward_predictive
from mechverify.theory.algorithms.inner_loss import logit_lens_loss, norm_recursion
from mechverify.theory.algorithms.regression import _active_set_candidate, _lasso_kkt_residual
from mechverify.theory.algorithms.risk import gd_conditional_risk, ols_risk
from mechverify.theory.dynamics.gd_icl import m_gamma
from mechverify.theory.dynamics.markov import euler, fig10_target
from mechverify.theory.symbolic.lsa_optimum import long_prompt_bound_gap, zfb_floor_bound, zfb_long_prompt_floor
from mechverify.theory.symbolic.markov import single_head_optimum
from mechverify.theory.symbolic.meta_learning import euler_residual
from mechverify.theory.symbolic.topics import equal_weight_gradient_descent
from mechverify.theory.tasks.hmm import HMM
from mechverify.theory.tasks.regression import sample_regression
from mechverify.theory.tasks.topics import mask_documents, sample_lda
from mechverify.theory.tasks.zipf import check_transition


def test_an_impossible_sequence_leaves_the_others_in_its_batch_exact():
    # no state emits symbol 2, so a sequence starting with it has probability 0, while
    # o_1 = 1 in the other sequence moves the filter away from the prior.
    hmm = HMM(transition=np.array([[0.6, 0.4], [0.3, 0.7]]),
              emission=np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]),
              initial=np.array([0.5, 0.5]))
    possible = np.array([1, 0, 0, 1])
    batch = forward_predictive(hmm, np.stack([np.array([2, 0, 1, 1]), possible]))
    np.testing.assert_allclose(batch[1], bruteforce_predictive(hmm, possible), rtol=0, atol=1e-14)
    np.testing.assert_allclose(batch[1], forward_predictive(hmm, possible), rtol=0, atol=1e-15)


def test_active_set_guess_drops_a_flipped_coordinate_and_solves_again():
    # G = [[1, .9], [.9, 1]], c = (1, .5), lam = .3, both coordinates active and positive:
    # G v = c - lam (1, 1) = (.7, .2) gives v = (2.74, -2.26), a sign flip on coordinate 2.
    # Dropping it: v_1 = .7, v_2 = 0, which satisfies the KKT conditions (|G_21 v_1 - c_2| =
    # .13 <= lam), so it is the Lasso optimum.
    gram = np.array([[[1.0, 0.9], [0.9, 1.0]]])
    rhs = np.array([[1.0, 0.5]])
    guess = _active_set_candidate(gram, rhs, np.array([[0.1, 0.1]]), 0.3)
    np.testing.assert_allclose(guess, [[0.7, 0.0]], rtol=0, atol=1e-15)
    assert np.all(_lasso_kkt_residual(gram, rhs, guess, 0.3) < 1e-15)


def _stochastic(rows, cols):
    return np.full((rows, cols), 1.0 / cols)


def test_emission_with_the_wrong_number_of_states_names_the_shape():
    with pytest.raises(ValueError, match=r"emission must have shape \(2, O\) with O >= 1"):
        HMM(transition=_stochastic(2, 2), emission=_stochastic(3, 2), initial=np.full(2, 0.5))


def test_factors_with_a_wrong_left_factor_name_the_shapes():
    with pytest.raises(ValueError, match="factors must have shapes"):
        HMM(transition=_stochastic(2, 2), emission=_stochastic(2, 2), initial=np.full(2, 0.5),
            factors=(np.full((3, 1), 1.0), np.full((1, 2), 0.5)))


def test_a_negative_entry_is_named_by_its_index():
    emission = np.array([[0.5, 0.5], [1.2, -0.2]])
    with pytest.raises(ValueError, match=r"emission must be non-negative; entry \(1, 1\) is -0.2"):
        HMM(transition=_stochastic(2, 2), emission=emission, initial=np.full(2, 0.5))


def test_sparsity_is_rejected_only_with_the_inverse_cov_prior():
    cov = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sparsity is only defined"):
        sample_regression(4, 5, 3, cov=cov, w_prior="inverse_cov", sparsity=2)
    batch = sample_regression(4, 5, 3, cov=cov, w_prior="inverse_cov")
    assert batch.w.shape == (4, 3) and np.all(batch.w != 0)


def test_corpus_and_masks_are_immutable_and_masks_default_to_seed_0():
    corpus = sample_lda(6, n_topics=2, words_per_topic=3, doc_len=(4, 6), seed=1)
    masked = mask_documents(corpus.tokens, corpus.vocab_size)
    for obj, field in ((corpus, "tokens"), (masked, "inputs")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, None)
    seeded = mask_documents(corpus.tokens, corpus.vocab_size, seed=0)
    other = mask_documents(corpus.tokens, corpus.vocab_size, seed=1)
    assert all(np.array_equal(getattr(masked, f), getattr(seeded, f)) for f in ("inputs", "labels", "selected"))
    assert not np.array_equal(masked.selected, other.selected)


# --- the rest of the slice [0.15, 0.20): theory/symbolic and theory/tasks/zipf -----------------

@pytest.mark.parametrize("bound", [lambda lam: zfb_long_prompt_floor(lam, 5), zfb_floor_bound])
def test_floor_bounds_reject_a_single_nonpositive_eigenvalue(bound):
    assert bound(np.array([1.0, 2.0])) > 0
    with pytest.raises(ValueError, match="positive eigenvalues"):
        bound(np.array([1.0, 0.0]))


def test_long_prompt_bound_gap_is_noise_free_by_default():
    sigma = sp.Symbol("sigma", positive=True)
    default = long_prompt_bound_gap(2)
    assert all(sigma not in g.free_symbols for g in default)
    assert default == long_prompt_bound_gap(2, noise=False)
    assert any(sigma in g.free_symbols for g in long_prompt_bound_gap(2, noise=True))


def test_single_head_optimum_normalises_an_unnormalised_block():
    # block 0 = 2 * (0.75, 0.25) on positions 0, 1 (energy 2.5), block 1 on position 2 (energy 1)
    G = np.array([[1.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    k, s, loss = single_head_optimum(G)
    assert k == 0 and loss == 0.5
    np.testing.assert_allclose(s, [0.75, 0.25, 0.0], rtol=0, atol=1e-15)


def test_symbolic_loss_rejects_a_label_equal_to_v():
    with pytest.raises(ValueError, match="y must be < V = 2"):
        euler_residual(2, 2, 2)


def test_check_transition_accepts_a_stationarity_gap_equal_to_tol():
    # pi P = (0.5, 0.5), so max |pi P - pi| = 0.25 exactly: "within tol" includes tol itself
    P = np.full((2, 2), 0.5)
    pi = np.array([0.75, 0.25])
    np.testing.assert_array_equal(check_transition(P, pi, tol=0.25), P)
    with pytest.raises(ValueError, match="stationary"):
        check_transition(P, pi, tol=0.125)


def test_gd_risk_is_invariant_to_the_scale_of_x():
    # w_GD depends on (X, y, lr) only through lr X^T X and lr X^T y, so scaling X and the noise
    # by a and lr by 1/a^2 leaves the risk unchanged; rank-deficient X (n = 3 < d = 8), one
    # and a batch mixing scales is computed prompt by prompt.  An absolute eigenvalue floor dropped real directions at a = 1e-6.
    rng = np.random.default_rng(0)
    X, w = rng.standard_normal((4, 3, 8)), rng.standard_normal((4, 8))
    ref = gd_conditional_risk(X, w, 0.5, 0.1, 10)
    for a in (1e-6, 1e3):
        np.testing.assert_allclose(gd_conditional_risk(a * X, w, 0.5 * a, 0.1 / a**2, 10), ref, rtol=1e-9)
    mixed = X * np.array([1.0, 1e-6, 1e3, 1.0])[:, None, None]
    # (a large noise, so that the noise term of the small prompt, ~ sigma^2 t^2 lr^2 |S|, counts)
    alone = [gd_conditional_risk(mixed[i:i + 1], w[i:i + 1], 1e6, 0.1, 10)[0] for i in range(4)]
    np.testing.assert_allclose(gd_conditional_risk(mixed, w, 1e6, 0.1, 10), alone, rtol=1e-12)


def test_ols_risk_is_finite_from_n_equal_d_plus_2():
    assert ols_risk(6, 4, 0.5) == 0.25 * 4 / 1
    with pytest.raises(ValueError, match="n must be > d"):
        ols_risk(5, 4, 0.5)


def test_m_gamma_is_noise_free_by_default():
    lam = np.array([1.0, 2.0])
    np.testing.assert_array_equal(m_gamma(lam, 4), m_gamma(lam, 4, noise=0.0))
    np.testing.assert_allclose(m_gamma(lam, 4), np.diag([1.25 + 0.75, 2.5 + 0.75]), rtol=0, atol=1e-15)


def test_euler_runs_three_heads_by_default():
    run = euler(fig10_target(), t_max=0.1, dt=0.05, record_every=1)
    assert run.S.shape[1] == 3 and run.V.shape[1] == 3


def test_logit_lens_loss_is_the_cross_entropy_on_batched_vectors():
    rng = np.random.default_rng(1)
    h, U = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4))
    y = rng.integers(0, 5, size=(2, 3))
    z = h @ U.T
    expected = np.log(np.exp(z).sum(axis=-1)) - np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(logit_lens_loss(h, U, y), expected, rtol=1e-13)
    assert np.all(expected > 0)


def test_norm_recursion_with_one_gradient_norm_per_step():
    # a_1 = 1 + 0.5^2 2^2 / 1 = 2, a_2 = 2 + 1^2 1^2 / 2 = 2.5
    np.testing.assert_array_equal(norm_recursion(1.0, np.array([0.5, 1.0]), np.array([2.0, 1.0])), [1.0, 2.0, 2.5])
    with pytest.raises(ValueError, match="one leading entry per step"):
        norm_recursion(1.0, np.array([0.5]), np.float64(2.0))
    with pytest.raises(ValueError, match="c must be >= 0"):
        norm_recursion(1.0, np.array([0.5, 1.0]), np.array([2.0, -1.0]))


def test_equal_weight_gd_returns_steps_plus_one_iterates():
    # T = 3, tau = 1, v = 2: L(c) = log 2 + log(1 + 2 e^{-c}), dL/dc = -2 e^{-c} / (1 + 2 e^{-c})
    cs, losses = equal_weight_gradient_descent(3, 1, 2, lr=0.5, steps=2)
    assert cs.shape == losses.shape == (3,)
    assert cs[0] == 0.0 and cs[1] == pytest.approx(0.5 * 2 / 3, rel=1e-15)
    assert losses[0] == pytest.approx(np.log(2) + np.log(3), rel=1e-15)


def test_linear_attention_route_follows_the_documented_multiply_add_counts():
    """``LinearAttention.moment_route`` picks the moment route when its multiply-adds per
    prompt, n D^2 + 2 H D^3 + T D^2, are at most the projected route's,
    T D H (2 d_k + d_v) + (n + T) H d_k d_v + T H d_v D.  Counted by hand for D = d_k = d_v = 4,
    H = 1, n = 1: moment 16 + 128 + 16 T, projected 96 at T = 1 and 176 at T = 2 (a tie, which
    goes to the moment route); ``scores_form`` defaults to False."""
    from mechverify.constructions.modules import LinearAttention

    layer = LinearAttention(4, 1)
    assert not layer.moment_route(1, 1)          # 160 > 96
    assert layer.moment_route(2, 1)              # 176 <= 176
    assert layer.moment_route(3, 1)              # 192 <= 256
    assert not layer.moment_route(2, 1, scores_form=True)
    assert not LinearAttention(4, 1, activation="relu").moment_route(3, 1)


def test_one_hot_score_matrix_is_what_the_forward_pass_attends_with():
    """``attention_scores(model)`` is S[a, b] = <W_Q x_a, W_K x_b> / sqrt(d) for one-hot x: the
    attention the forward pass returns for query token a over keys b_1..b_L must be
    softmax_j S[a, b_j] (random W_Q, W_K, so no entry is special)."""
    import torch
    from mechverify.constructions.topics import TopicMLM, attention_scores

    model = TopicMLM(9)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.W_Q.copy_(torch.randn(9, 9, generator=gen, dtype=torch.float64))
        model.W_K.copy_(torch.randn(9, 9, generator=gen, dtype=torch.float64))
    ids = torch.tensor([[4, 0, 8, 4, 6, 2]])
    _, pattern = model(ids, torch.ones_like(ids, dtype=torch.bool), return_pattern=True)
    S = attention_scores(model)
    expected = torch.softmax(S[ids[0]][:, ids[0]], dim=-1)
    assert torch.allclose(pattern[0], expected, rtol=0, atol=1e-14)


def test_random_word_queries_have_a_uniform_topic():
    """A random-word query's topic r is uniform on the T topics, topic 0 included (module doc of
    ``theory/dynamics/topics.py``); with p_keep = 1 the query is the label's own topic."""
    from mechverify.theory.dynamics.topics import stage_samples

    T, n = 5, 5000
    r = stage_samples(n_topics=T, words_per_topic=3, n_samples=n, p_random=1.0, p_keep=0.0, seed=4).r
    counts = np.bincount(r, minlength=T)
    assert counts.size == T and r.min() >= 0
    se = np.sqrt(n * (1 / T) * (1 - 1 / T))
    assert np.all(np.abs(counts - n / T) <= 5 * se), counts
    kept = stage_samples(n_topics=T, words_per_topic=3, n_samples=200, p_random=0.0, p_keep=1.0, seed=4)
    assert np.array_equal(kept.r, kept.y)


def test_the_empty_matrix_is_vacuously_positive_definite():
    """``check_spd`` takes a 0 x 0 matrix (no eigenvalue, so none is <= 0) and returns it; a
    1 x 1 matrix is checked on its entry."""
    from mechverify.theory.checks import check_spd

    assert check_spd("A", np.zeros((0, 0))).shape == (0, 0)
    assert check_spd("A", [[2.0]]).shape == (1, 1)
    with pytest.raises(ValueError, match="A must be positive definite; smallest eigenvalue -2"):
        check_spd("A", [[-2.0]])


def test_parity_error_is_the_largest_output_difference():
    """``parity_error`` is max |ours - TransformerLens| over all outputs: shift one read-out bias of
    the exported model by 0.25 and the error is 0.25 (every other output still agrees to ~1e-15)."""
    import torch
    pytest.importorskip("transformer_lens", reason="optional extra [export] not installed")
    from mechverify.constructions.export import parity_error, to_transformer_lens
    from mechverify.constructions.modules import GPT

    gpt = GPT(5, 16, 2, 4, 12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tl_model = to_transformer_lens(gpt)
    with torch.no_grad():
        tl_model.unembed.b_U[1] += 0.25
    tokens = torch.randn(3, 10, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert parity_error(gpt, tl_model, tokens) == pytest.approx(0.25, abs=1e-12)


def test_vocabulary_keeps_the_max_size_most_frequent_tokens_and_is_immutable():
    """``build_vocabulary(..., max_size=k)`` keeps the k most frequent tokens (ties alphabetical);
    without ``max_size`` it keeps them all; a ``Vocabulary`` cannot be changed after it is built
    (its ids index the encoded corpus)."""
    from mechverify.theory.tasks.text import build_vocabulary

    docs = [["b", "a", "c", "a", "d"], ["c", "a", "b", "e"]]        # a 3, b 2, c 2, d 1, e 1
    vocab = build_vocabulary(docs, max_size=2)
    assert vocab.tokens == ("a", "b") and vocab.counts == (3, 2) and vocab.size == 3
    assert build_vocabulary(docs).tokens == ("a", "b", "c", "d", "e")
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.tokens = ("z",)
