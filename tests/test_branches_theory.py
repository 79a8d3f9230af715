"""More reference branches that the claims reach only through an aggregate (found by
``make mutation``; each test kills a survivor of the 10 % sample).  Gradients are checked
against central differences of the loss they differentiate, ranks against matrices whose
singular values are known by construction."""

import numpy as np
import pytest
import torch
from scipy.special import betaln

from mechverify.theory.algorithms.regression import gdpp_predict
from mechverify.theory.algorithms.tuning import empirical_risk, tune_gdpp
from mechverify.theory.dynamics.topics import loss_and_grads, stage_samples
from mechverify.theory.symbolic import lsa_optimum as lsa
from mechverify.theory.symbolic.sparse_regression import operator_schmidt_rank
from mechverify.theory.symbolic.topics import CV_POWERS, _power_sum_means, equal_weight_gradient_descent


def _central(f, x, h=1e-5):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_topic_stage_gradients_are_the_derivatives_of_the_loss():
    samples = stage_samples(n_topics=5, words_per_topic=4, n_samples=300, p_random=0.3, p_keep=0.3, seed=2)
    for c, beta in [(0.7, 0.4), (2.5, -1.2)]:
        _, d_c, d_beta = loss_and_grads(c, beta, samples)
        fd_c = _central(lambda x: loss_and_grads(x, beta, samples)[0], c)
        fd_beta = _central(lambda x: loss_and_grads(c, x, samples)[0], beta)
        # central differences at h = 1e-5 of a smooth O(1) loss: error O(h^2) + rounding 1e-11
        assert abs(d_c - fd_c) <= 1e-7 * max(1.0, abs(fd_c)), (c, beta, d_c, fd_c)
        assert abs(d_beta - fd_beta) <= 1e-7 * max(1.0, abs(fd_beta)), (c, beta, d_beta, fd_beta)
        assert abs(fd_beta) > 1e-4  # the beta gradient is not trivially zero here


def test_equal_weight_descent_steps_along_the_derivative_of_its_loss():
    T, tau, v, lr = 6, 2, 5, 0.7

    def loss(c):  # log v + log(tau + (T - tau) exp(-c / tau)), written out here
        return np.log(v) + np.log(tau + (T - tau) * np.exp(-c / tau))

    cs, losses = equal_weight_gradient_descent(T, tau, v, lr=lr, steps=5, c0=0.3)
    np.testing.assert_allclose(losses, loss(cs), rtol=0, atol=1e-13)
    for t in range(len(cs) - 1):
        assert abs(cs[t + 1] - (cs[t] - lr * _central(loss, cs[t]))) <= 1e-9


def test_operator_schmidt_rank_counts_relative_to_the_largest_singular_value():
    rng = np.random.default_rng(0)
    D = 3
    A = [np.linalg.qr(rng.standard_normal((D, D)))[0] for _ in range(6)]

    def ladder(E):  # Schmidt terms of weight 1, 1e-6, 1e-12 (orthogonal factors)
        return A[0] @ E @ A[1] + 1e-6 * A[2] @ E @ A[3] + 1e-12 * A[4] @ E @ A[5]

    # 1e-12 is below 1e-10 x the largest (1) but above 1e-10 x the second (1e-6)
    assert operator_schmidt_rank(ladder, D) == 2
    # scale does not matter: a rank-1 map is rank 1 however small, even for D = 1
    assert operator_schmidt_rank(lambda E: 0.5 * E, 1) == 1
    assert operator_schmidt_rank(lambda E: 1e-3 * E, D) == 1
    assert operator_schmidt_rank(lambda E: 0.0 * E, D) == 0


def test_long_prompt_floor_is_noiseless_by_default():
    lam, N = np.array([0.5, 1.0, 2.0]), 7
    T = lam.sum()  # no noise: T = tr(Lambda)
    expected = float(np.sum(lam * (lam + T) ** 2 / ((N + 1) * lam + T) ** 2))
    assert abs(lsa.zfb_long_prompt_floor(lam, N) - expected) <= 1e-15 * expected


# ---------------------------------------------------------------- task generators and vocabularies

def test_vocabulary_ids_ties_and_unknown_tokens():
    from mechverify.theory.tasks.text import UNK, build_vocabulary

    vocab = build_vocabulary([["c", "b", "a", "a"]])      # a: 2; b, c: 1 each (tie: alphabetical)
    assert list(vocab.tokens) == ["a", "b", "c"]
    assert vocab.size == 4 and vocab.unk == 3               # three tokens and <unk>
    ids = vocab.encode(["a", "c", "zzz"])
    assert ids.tolist() == [0, 2, 3]
    assert vocab.decode(ids) == ["a", "c", UNK]             # id 0 is a token, not <unk>


def test_pydoc_paragraphs_keep_one_word_documents_by_default():
    from mechverify.theory.tasks.text import pydoc_documents, words

    lengths = [len(words(t)) for t in pydoc_documents("paragraph")]
    assert min(lengths) == 1  # min_words = 1: nothing with a word is dropped


def test_transition_check_boundaries():
    from mechverify.theory.tasks.zipf import check_transition

    tol = 2.0 ** -20
    check_transition(np.array([[0.5, 0.5 + tol], [0.0, 1.0]]), tol=tol)   # off by exactly tol: "within"
    with pytest.raises(ValueError, match="rows must sum to 1"):
        check_transition(np.array([[0.5, 0.5 + 2 * tol], [0.0, 1.0]]), tol=tol)
    # a transient state has stationary mass 0, which is a valid probability
    check_transition(np.array([[0.0, 1.0], [0.0, 1.0]]), pi=np.array([0.0, 1.0]))


def test_lda_documents_follow_the_token_layout():
    from mechverify.theory.tasks.topics import END, IGNORE, MASK, N_SPECIAL, PAD, START, sample_lda

    corpus = sample_lda(20, seed=3)
    assert corpus.n_topics == 10 and corpus.words_per_topic == 10  # the spec's default setting
    assert (PAD, MASK, START, END) == (0, 1, 2, 3) and N_SPECIAL == 4  # the module doc's ids
    rows = np.arange(len(corpus.tokens))
    assert np.all(corpus.tokens[:, 0] == START)
    assert np.all(corpus.tokens[rows, corpus.lengths + 1] == END)
    body = corpus.tokens[:, 1:-1]
    inside = np.arange(body.shape[1])[None, :] < corpus.lengths[:, None]
    assert np.all((body[inside] >= N_SPECIAL) & (body[inside] < corpus.vocab_size))
    # the ignored label is torch's cross-entropy default and no id of the vocabulary
    assert IGNORE == torch.nn.CrossEntropyLoss().ignore_index and not 0 <= IGNORE < corpus.vocab_size


def test_markov_task_defaults_and_strides():
    from mechverify.theory.tasks.markov import MarkovTask

    task = MarkovTask()
    assert task.d == 50 and task.sizes == (2, 2, 2)          # docs/markov.md §2.1, the minimal model
    assert MarkovTask(sizes=(2, 3, 4)).stride_ == [2, 3]     # one stride between consecutive blocks


def test_preconditioners_may_come_as_one_3d_array():
    from mechverify.theory.checks import check_preconditioners

    stacked = np.stack([np.eye(3), 2 * np.eye(3)])
    mats = check_preconditioners(stacked)
    assert len(mats) == 2 and np.array_equal(mats[1], 2 * np.eye(3))
    with pytest.raises(TypeError, match="preconditioners"):
        check_preconditioners(np.eye(3))  # one matrix is not a sequence of steps


# ---------------------------------------------------------------- topics: defaults and guards

def test_block_contrast_at_infinite_length_defaults_to_the_precise_root():
    """doc_len=None is the N -> infinity root on 2^24 draws by default: it agrees with an
    independent estimate (another seed, 2^22 draws) within 5 combined standard errors, the
    default's own SE taken as the other's / 2 (four times the draws)."""
    from mechverify.theory.symbolic.topics import limit_block_contrast, optimal_block_contrast

    other, se = limit_block_contrast(6, 1.0, seed=1)
    default = optimal_block_contrast(6, 10, 1.0, None)
    assert abs(default - other) <= 5 * se * np.sqrt(1 + 1 / 4), (default, other, se)


def test_equal_weight_descent_descends_by_default():
    cs, losses = equal_weight_gradient_descent(6, 2, 5, steps=20)
    assert np.all(np.diff(cs) > 0) and np.all(np.diff(losses) < 0)


def test_same_topic_probability_guards_alpha():
    from mechverify.theory.symbolic.topics import pair_same_topic_probability

    assert pair_same_topic_probability(4, 0.5) == pytest.approx(1.5 / 3.0, abs=1e-15)
    with pytest.raises(ValueError, match="alpha"):
        pair_same_topic_probability(4, 0.0)


def test_block_statistics_are_immutable():
    import dataclasses

    from mechverify.theory.symbolic.topics import BlockStatistics

    stats = BlockStatistics(s=np.ones((1, 2)) / 2, m=np.ones((1, 2)), words_per_topic=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.words_per_topic = 4


def test_sparse_support_is_uniform_over_coordinates():
    """With sparsity s < d every coordinate is in the support with probability s / d: over 4000
    prompts each frequency is within 5 binomial SE of it (the last coordinate included)."""
    from mechverify.theory.tasks.regression import sample_regression

    d, s, B = 6, 2, 4000
    w = sample_regression(B, 4, d, sparsity=s, seed=5).w
    assert np.all(np.count_nonzero(w, axis=1) == s)
    freq, p = np.count_nonzero(w, axis=0) / B, s / d
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / B)), freq


def test_linear_attention_is_one_full_width_head_by_default():
    from mechverify.constructions.modules import LinearAttention

    layer = LinearAttention(5)
    assert (layer.n_heads, layer.d_head, layer.d_value) == (1, 5, 5)


def test_full_attention_pattern_is_the_pattern_of_the_models_own_forward():
    """The pattern full_attention_pattern reads equals the one the block computes inside
    GPT.forward (its input captured by a hook), at a length below n_positions."""
    from mechverify.constructions.markov import full_attention_pattern, full_markov_model

    torch.manual_seed(0)
    model = full_markov_model(d=5, width=8, n_heads=2, n_positions=12, dtype=torch.float64)
    with torch.no_grad():
        model.pos.normal_()  # O(1) positions (0.02 at init), so a wrong sign or length shows
    onehot = torch.nn.functional.one_hot(torch.randint(0, 5, (3, 7)), 5).to(torch.float64)
    seen = []
    hook = model.blocks[0].attn.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        model(onehot)
    finally:
        hook.remove()
    expected = model.blocks[0].attn(seen[0], return_pattern=True)[1]
    assert torch.allclose(full_attention_pattern(model, onehot), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("n_topics, alpha", [(2, 0.3), (8, 1.0), (20, 0.1)])
def test_control_variate_means_are_the_dirichlet_power_moments(n_topics, alpha):
    # Independent route: each theta_t ~ Beta(alpha, (T - 1) alpha), so
    # E sum_t theta_t^k = T B(alpha + k, (T - 1) alpha) / B(alpha, (T - 1) alpha).
    rest = (n_topics - 1) * alpha
    expected = [n_topics * np.exp(betaln(alpha + k, rest) - betaln(alpha, rest)) for k in CV_POWERS]
    np.testing.assert_allclose(_power_sum_means(n_topics, alpha, CV_POWERS), expected, rtol=1e-12)


def test_tuned_gdpp_is_a_local_minimum_of_its_empirical_risk():
    rng = np.random.default_rng(0)
    B, n, d, steps = 64, 10, 4, 2
    X, w = rng.standard_normal((B, n, d)), rng.standard_normal((B, d))
    y, xq = np.einsum("bnd,bd->bn", X, w), rng.standard_normal((B, d))
    yq = np.einsum("bd,bd->b", xq, w)
    lr, gamma, risk = tune_gdpp(X, y, xq, yq, steps, lr0=0.3)

    def r(a, g):
        return empirical_risk(gdpp_predict(X, y, xq, a, g, steps), yq)

    assert risk == pytest.approx(r(lr, gamma), rel=1e-12)      # the risk returned is the risk at (lr, gamma)
    assert abs(gamma) > 0.05                                    # the gamma direction matters on this instance
    for da, dg in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        assert r(lr + da, gamma + dg) >= risk                   # no coordinate step improves it
    # and it beats the best plain-GD step size (gamma = 0) found on a fine grid
    assert risk < min(r(a, 0.0) for a in np.linspace(0.05, 3.0, 300))


def test_symbolic_gd_layer_default_instance():
    from mechverify.theory.symbolic.gd_layer import gd_layer_difference, sp
    assert gd_layer_difference() == sp.zeros(3, 4)   # d = 2, n = 3


@pytest.mark.parametrize("d, n", [(1, 1), (2, 3), (3, 2)])
def test_symbolic_gd_layer_is_one_gd_step(d, n):
    from mechverify.theory.symbolic import gd_layer as gl
    assert gl.gd_layer_difference(d, n) == gl.sp.zeros(d + 1, n + 1)
    # not vacuous: the layer with -W^PV, or with W^KQ reading the y-slot too, is not the GD step
    s = gl.gd_layer_symbols(d, n)
    Z = s["X"].row_join(s["x_query"]).col_join(s["y"].row_join(gl.sp.zeros(1, 1)))
    W_KQ, W_PV = gl.vo_weights(s["w0"], s["eta"])
    target = gl.gd_step_target(s["X"], s["y"], s["x_query"], s["w0"], s["eta"])
    for kq, pv in [(W_KQ, -W_PV), (gl.sp.eye(d + 1), W_PV)]:
        assert (gl.lsa_layer(Z, kq, pv, n) - target).applyfunc(gl.sp.expand) != gl.sp.zeros(d + 1, n + 1)
    with pytest.raises(ValueError, match="w0"):
        gl.vo_weights(gl.sp.zeros(1, 2), s["eta"])
    with pytest.raises(ValueError, match="W_KQ and W_PV"):
        gl.lsa_layer(Z, gl.sp.eye(d), W_PV, n)
