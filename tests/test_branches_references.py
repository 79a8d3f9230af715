"""Reference branches that the claims reach only through an aggregate (found by ``make
mutation``; each test kills a survivor of the 10 % sample).  Each is checked against its
formula written out separately, or against a second implementation."""

import math

import numpy as np
import pytest
import torch

from mechverify.constructions.topics import TopicMLM
from mechverify.theory.algorithms.hmm import regression_predictive
from mechverify.theory.algorithms.inner_loss import normalise
from mechverify.theory.dynamics.markov import euler, fig10_target, plateau_levels, simulate, stage_times_from_curve
from mechverify.theory.symbolic import lsa_optimum as lsa
from mechverify.theory.tasks.markov import (MarkovTask, sample_sequences, teacher_cross_entropy,
                                            teacher_matrices)
from mechverify.theory.tasks.zipf import zipf_markov


def test_zipf_entropy_rate_is_the_mean_row_entropy():
    chain = zipf_markov(vocab=6, seed=1)
    rows = [-sum(p * math.log(p) for p in row if p > 0) for row in chain.P]
    assert abs(chain.entropy_rate() - float(np.dot(chain.pi, rows))) <= 1e-12


def test_zipf_sample_reaches_every_token():
    """Transitions reach the last token too: token frequencies at t >= 1 (the chain starts in pi,
    so every position has law pi) agree with pi within 5 SE, the SE taken over the 400
    independent sequences (tokens within one sequence are correlated)."""
    chain = zipf_markov(vocab=6, seed=1)
    seq = chain.sample(400, 50, seed=0)[:, 1:]
    per_seq = np.stack([np.bincount(row, minlength=6) / row.size for row in seq])
    freq, se = per_seq.mean(axis=0), per_seq.std(axis=0, ddof=1) / np.sqrt(len(seq))
    assert np.all(np.abs(freq - chain.pi) <= 5 * se), (freq, chain.pi, se)


def test_markov_warmup_tokens_are_uniform_over_the_vocabulary():
    task = MarkovTask(d=5, sizes=(1, 1), L=2)
    warm = sample_sequences(task, 2000, seed=0)[:, :task.w].ravel()
    counts = np.bincount(warm, minlength=5)
    assert counts.min() > 0.15 * warm.size, counts                 # each id near 1/5 of the draws


def test_markov_energies_from_the_teacher_matrices():
    """e_k = ||A*_k||_F^2 ||alpha_{I(k)}||^2, with ||A*_k||_F measured on the drawn matrices."""
    task = MarkovTask(d=6, sizes=(2, 1, 3), alpha=None)
    A = teacher_matrices(task)
    measured = [np.linalg.norm(A[k]) ** 2 * float(np.sum(task.weights(k + 1) ** 2)) for k in range(task.h)]
    assert np.allclose(task.energies(), measured, rtol=1e-12)


def test_teacher_cross_entropy_standard_error_matches_the_spread():
    """The reported SE of the mean matches the spread of the mean over independent seeds
    (20 seeds; the ratio's sampling error is about 16 %, so within a factor 1.6)."""
    task = MarkovTask(d=4, sizes=(1, 1), L=6, tau=1.0)
    runs = [teacher_cross_entropy(task, n=100, seed=s) for s in range(20)]
    means, ses = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
    ratio = means.std(ddof=1) / ses.mean()
    assert 1 / 1.6 < ratio < 1.6, ratio


def test_stage_times_from_a_hand_made_curve():
    t = np.array([0.5, 1.0, 2.0, 3.0])
    loss = np.array([5.0, 3.0, 1.0, 0.5])
    levels = np.array([10.0, 6.0, 2.0, 0.0])            # midpoints 8 (crossed at the start), 4, 1
    out = stage_times_from_curve(t, loss, levels)
    assert out[0] == 0.5                                 # already below at t[0]
    assert out[1] == pytest.approx(0.5 + (5.0 - 4.0) / (5.0 - 3.0) * (1.0 - 0.5), rel=1e-15)   # 0.75
    assert out[2] == pytest.approx(2.0, rel=1e-15)       # loss 1.0 is not below 1: crossed between 2 and 3, at 2
    assert np.isnan(stage_times_from_curve(t, loss, np.array([0.4, 0.2]))[0])


def test_euler_stage_times_are_the_interpolated_crossings():
    """Euler's per-step stage times equal stage_times_from_curve on its own per-step record."""
    G = fig10_target()
    run = euler(G, 3, t_max=60.0, dt=0.01, record_every=1)
    from_curve = stage_times_from_curve(np.asarray(run.t), np.asarray(run.loss), plateau_levels(G))
    both = ~np.isnan(from_curve)
    assert both.any() and np.allclose(run.stage_times[both], from_curve[both], rtol=0, atol=1e-12)


def test_simulation_stops_at_the_last_stage():
    G = fig10_target()
    full, run = simulate(G, 3, t_max=400.0), simulate(G, 3, t_max=400.0, stop_at_last_stage=True)
    stage = run.stage_times[-1]
    n = len(run.t)                      # the grid points before the event, and no more
    assert not np.isnan(stage) and n < len(full.t)
    assert run.t[-1] <= stage < full.t[n] and stage == pytest.approx(full.stage_times[-1], rel=1e-6)


def test_normalise_batches_over_leading_axes():
    h = np.random.default_rng(0).standard_normal((2, 3, 5))
    for norm in ("rmsnorm", "layernorm"):
        rows = np.stack([normalise(h[i, j], norm) for i in range(2) for j in range(3)]).reshape(h.shape)
        assert np.allclose(normalise(h, norm), rows, rtol=0, atol=1e-14)


def test_topic_mlm_needs_a_visible_key_in_every_sequence():
    model = TopicMLM(vocab=8)
    ids = torch.full((2, 3), 5, dtype=torch.int64)
    vis = torch.tensor([[True, False, True], [False, False, False]])
    with pytest.raises(ValueError, match="key_visible"):
        model(ids, vis)


def test_regression_predictive_when_the_test_is_longer_than_the_features():
    rng = np.random.default_rng(0)
    n_obs, r = 2, 2
    test = rng.integers(0, n_obs, size=(3, 7))
    W = rng.random((3, n_obs, n_obs ** r))
    out = regression_predictive(W, test, n_obs, r)
    assert out.shape == (3, 7, n_obs) and np.allclose(out.sum(-1), 1.0)


def _dense_minimal_forward(model, tokens):
    """The minimal Markov model written densely: one-hot z = [token ; position], scores
    z_j^T W_Q z_t / sqrt(D) over j <= t, torch.softmax, logits = sum_h sum_j a_tj W_V z_j."""
    B, n = tokens.shape
    Z = torch.zeros(B, n, model.D, dtype=torch.float64)
    for b in range(B):
        for j in range(n):
            Z[b, j, int(tokens[b, j])] = 1.0
            Z[b, j, model.d + j] = 1.0
    S = torch.einsum("bjx,hxy,bty->hbtj", Z, model.W_Q.detach(), Z) / math.sqrt(model.D)
    S = S.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    values = torch.einsum("hdx,bjx->hbjd", model.W_V.detach(), Z)
    return torch.einsum("hbtj,hbjd->btd", torch.softmax(S, dim=-1), values), Z


def test_minimal_markov_model_against_its_dense_form_at_large_scores():
    """Scores of several hundred (W_Q x 3000) overflow exp without the max shift."""
    from mechverify.constructions.markov import MinimalMarkovModel

    g = torch.Generator().manual_seed(0)
    model = MinimalMarkovModel(5, 6, 2, init="xavier", dtype=torch.float64, generator=g)
    with torch.no_grad():
        model.W_Q.mul_(3000.0)
    tokens = torch.randint(0, 5, (3, 6), generator=g)
    ref, Z = _dense_minimal_forward(model, tokens)
    assert torch.equal(model.embed(tokens), Z)
    out = model(tokens)
    assert torch.isfinite(out).all() and torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_exact_minimal_model_has_w_plus_L_minus_1_positions():
    from mechverify.constructions.markov import exact_minimal_model

    task = MarkovTask(d=4, sizes=(1, 1), L=5)
    model = exact_minimal_model(task, beta=1.0)
    P = task.w + task.L - 1
    model(torch.zeros(1, P, dtype=torch.long))
    with pytest.raises(ValueError, match="positions"):
        model(torch.zeros(1, P + 1, dtype=torch.long))


def test_gpt_initialisation_is_torchs_default_from_the_generator():
    """GPT(generator=g seeded s) draws the read-in exactly as torch.manual_seed(s) followed by a
    default nn.Linear does (kaiming_uniform a = sqrt(5), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    from mechverify.constructions.modules import GPT

    model = GPT(5, 8, 1, 2, 4, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    reference = torch.nn.Linear(5, 8)
    assert torch.equal(model.read_in.weight, reference.weight) and torch.equal(model.read_in.bias, reference.bias)


def test_gpt_states_end_where_the_outputs_are_read():
    from mechverify.constructions.modules import GPT

    model = GPT(3, 8, 2, 2, 6, generator=torch.Generator().manual_seed(0)).eval()
    tokens = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        states = model.states(tokens)
        assert len(states) == 3
        assert torch.allclose(model.read_out(model.ln_f(states[-1])), model.outputs(tokens), rtol=0, atol=1e-6)


def test_softmax_attention_explicit_pattern_equals_the_fused_kernel():
    from mechverify.constructions.modules import SoftmaxAttention

    torch.manual_seed(0)
    attn = SoftmaxAttention(8, 2, dtype=torch.float64)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        fused = attn(x)
        explicit, pattern = attn(x, return_pattern=True)
    assert torch.allclose(fused, explicit, rtol=0, atol=1e-12)
    assert torch.allclose(pattern.sum(-1), torch.ones(3, 2, 5, dtype=torch.float64))


def test_linear_transformer_with_a_relu_layer_runs_layer_by_layer():
    """The kernel route is for stacks of linear layers only: one ReLU layer sends the whole
    stack through the layers one by one (checked against that loop)."""
    from mechverify.constructions.encoders import regression_layout
    from mechverify.constructions.modules import LinearAttention, LinearTransformer

    layout = regression_layout(3)
    g = torch.Generator().manual_seed(0)
    layers = [LinearAttention(layout.width, init_scale=0.3, generator=g),
              LinearAttention(layout.width, activation="relu", init_scale=0.3, generator=g)]
    model = LinearTransformer(layers, layout, torch.ones(layout.width, dtype=torch.float64))
    Z = torch.randn(4, 7, layout.width, dtype=torch.float64, generator=g)
    with torch.no_grad():
        loop = Z
        for layer in layers:
            loop = loop + layer(loop, 6)
        assert torch.allclose(model(Z), loop, rtol=0, atol=1e-13)


def test_linear_attention_routes_agree():
    """moment_route only picks the cheaper of two exact routes: the update through the context
    moment equals the one through explicit scores (scores_form=True), on shapes where either
    route is the cheaper one (so the cost formula is a speed choice, not a result)."""
    from mechverify.constructions.modules import LinearAttention

    g = torch.Generator().manual_seed(0)
    for D, H, T in ((5, 1, 9), (5, 3, 40), (12, 2, 4)):
        layer = LinearAttention(D, n_heads=H, init_scale=0.5, generator=g)
        Z = torch.randn(3, T, D, dtype=torch.float64, generator=g)
        with torch.no_grad():
            assert torch.allclose(layer(Z, T - 1), layer(Z, T - 1, scores_form=True), rtol=0, atol=1e-12)


def test_limit_block_contrast_error_is_calibrated_and_unbiased():
    """c* at N -> infinity (control variates + one Newton step): over 12 seeds of 2^14 draws the
    spread of c matches the reported SE (error / 2; the Newton remainder is negligible here),
    within a factor 2 (the sd of 12 draws is itself uncertain by about 20 %); and the mean
    agrees with a plain root on 2^19 fresh draws (scipy brentq on the sample residual, no
    control variates) within 4 of their combined standard errors."""
    from scipy.optimize import brentq
    from scipy.special import softmax

    from mechverify.theory.symbolic.topics import limit_block_contrast, pair_same_topic_probability

    T, alpha = 4, 0.5
    runs = np.array([limit_block_contrast(T, alpha, n_draws=2 ** 14, seed=s) for s in range(12)])
    c, se = runs[:, 0], runs[:, 1] / 2
    ratio = c.std(ddof=1) / se.mean()
    assert 0.5 < ratio < 2, (ratio, c, se)
    theta = np.random.default_rng(12345).dirichlet(np.full(T, alpha), size=2 ** 19)
    target = pair_same_topic_probability(T, alpha)

    def g(cc):
        return np.sum(theta * softmax(cc * theta, axis=1), axis=1)
    root = brentq(lambda cc: g(cc).mean() - target, 0.01, 100.0, xtol=1e-12)
    sm = softmax(root * theta, axis=1)
    slope = np.mean(np.sum(sm * theta ** 2, axis=1) - np.sum(sm * theta, axis=1) ** 2)
    se_plain = g(root).std(ddof=1) / np.sqrt(theta.shape[0]) / slope
    assert abs(c.mean() - root) <= 4 * np.hypot(se.mean() / np.sqrt(c.size), se_plain), (c.mean(), root, se_plain)


def test_zfb_floor_bound_is_the_long_prompt_limit_with_noise():
    """N^2 R_inf(N) stays below the bound for every N and tends to it (noise 0.7, so that sigma^2
    differs from 2 sigma and from sigma)."""
    lam, noise = np.array([0.3, 1.0, 2.5]), 0.7
    bound = lsa.zfb_floor_bound(lam, noise)
    scaled = [N ** 2 * lsa.zfb_long_prompt_floor(lam, N, noise) for N in (1, 10, 100, 10 ** 7)]
    assert all(v < bound for v in scaled) and scaled[-1] / bound > 0.9999, (scaled, bound)


def test_ahn_inverse_prior_optimum_risk_and_minimum_agree_with_noise():
    """Under w ~ N(0, Sigma^-1): the risk of ahn_optimum equals ahn_inverse_prior_min_risk, and
    perturbing the optimum raises the risk (noise 0.7)."""
    rng = np.random.default_rng(0)
    d, n, noise = 3, 12, 0.7
    B = rng.standard_normal((d, d))
    Sigma = B @ B.T + d * np.eye(d)
    A = lsa.ahn_optimum(Sigma, n, noise, prior="inverse_cov")
    best = lsa.ahn_risk(A, Sigma, n, noise, prior="inverse_cov")
    assert abs(best - lsa.ahn_inverse_prior_min_risk(d, n, noise)) <= 1e-12 * d
    for _ in range(5):
        E = rng.standard_normal((d, d))
        assert lsa.ahn_risk(A + 1e-3 * E, Sigma, n, noise, prior="inverse_cov") > best
