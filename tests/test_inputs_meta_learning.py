"""Bad input to the metanorm modules gets a ValueError/TypeError naming the parameter; plus small
unit checks of the Zipf-Markov corpus and the training helpers (no training)."""

import numpy as np
import pytest
import torch

from mechverify.theory.algorithms.inner_loss import (inner_gd_unroll, logit_lens_grad, logit_lens_loss, norm_jacobian,
                                          norm_recursion, normalise, quartic_lower_bound, unembed_grad)
from mechverify.theory.symbolic.meta_learning import jacobian_residual, logit_grad_residual, scale_invariance_residual
from mechverify.theory.tasks.zipf import ZipfMarkov, check_transition, zipf_markov, zipf_weights
from mechverify.training.meta_learning import (MetaNormConfig, build_model, heldout_tokens, inner_analysis, runs,
                               per_layer_ci, spearman, token_frequency, train_batch, train_metanorm)

rng = np.random.default_rng(0)
d, V = 4, 5
h, U, y = rng.standard_normal((3, d)), rng.standard_normal((V, d)), np.array([0, 1, 4])


@pytest.mark.parametrize("call, param, exc", [
    (lambda: normalise(h, "batchnorm"), "norm", ValueError),
    (lambda: normalise(h, "layernorm", eps=-1.0), "eps", ValueError),
    (lambda: normalise(h, "identity", gamma=np.ones(d)), "gamma", ValueError),
    (lambda: normalise(h, "rmsnorm", gamma=np.ones(d + 1)), "gamma", ValueError),
    (lambda: normalise(h, "layernorm", beta=np.ones(d - 1)), "beta", ValueError),
    (lambda: normalise(h[:, :1], "layernorm"), "h", ValueError),
    (lambda: normalise(np.zeros((2, d)), "rmsnorm"), "h", ValueError),
    (lambda: normalise(np.ones((2, d)), "layernorm"), "h", ValueError),
    (lambda: normalise(np.where(h > 0, np.nan, h), "rmsnorm"), "h", ValueError),
    (lambda: normalise(np.float64(1.0), "rmsnorm"), "h", ValueError),
    (lambda: norm_jacobian(h, "rmsnorm", eps=float("inf")), "eps", ValueError),
    (lambda: logit_lens_loss(h, U[:, :-1], y), "U", ValueError),
    (lambda: logit_lens_loss(h, U[0], y), "U", ValueError),
    (lambda: logit_lens_loss(h, U, y[:2]), "y", ValueError),
    (lambda: logit_lens_loss(h, U, y.astype(float)), "y", TypeError),
    (lambda: logit_lens_loss(h, U, np.array([0, 1, V])), "y", ValueError),
    (lambda: logit_lens_loss(h, U, np.array([0, -1, 2])), "y", ValueError),
    (lambda: logit_lens_grad(h, U, y, "rmsnorm", bias=np.ones(V + 1)), "bias", ValueError),
    (lambda: unembed_grad(h, U, y, "softmax"), "norm", ValueError),
    (lambda: inner_gd_unroll(h, U, y, [0.1, -0.1], "rmsnorm"), "lrs", ValueError),
    (lambda: inner_gd_unroll(h, U, y, [[0.1]], "rmsnorm"), "lrs", ValueError),
    (lambda: norm_recursion(np.array([0.0]), [0.1], [[1.0]]), "a0", ValueError),
    (lambda: norm_recursion(np.array([1.0]), [0.1, 0.2], [[1.0]]), "c", ValueError),
    (lambda: quartic_lower_bound(np.array([1.0]), [0.1], [[-1.0]]), "c", ValueError),
    (lambda: quartic_lower_bound(np.array([1.0]), [float("nan")], [[1.0]]), "lrs", ValueError),
])
def test_inner_loss_rejects(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


@pytest.mark.parametrize("call, param, exc", [
    (lambda: scale_invariance_residual(1, "layernorm"), "d", ValueError),
    (lambda: scale_invariance_residual(3, "identity"), "norm", ValueError),
    (lambda: jacobian_residual(2.0, "rmsnorm"), "d", TypeError),
    (lambda: logit_grad_residual(2, 3, 3), "y", ValueError),
    (lambda: logit_grad_residual(2, 1, 0), "V", ValueError),
])
def test_symbolic_rejects(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


@pytest.mark.parametrize("call, param, exc", [
    (lambda: zipf_weights(1, 1.1), "vocab", ValueError),
    (lambda: zipf_weights(8, -1.0), "exponent", ValueError),
    (lambda: zipf_markov(8, 1.1, sharpness=-1.0), "sharpness", ValueError),
    (lambda: zipf_markov(8, 1.1, seed=-1), "seed", ValueError),
    (lambda: zipf_markov(8, 1.1, sharpness=200.0, max_iter=5), "sharpness", ValueError),
    (lambda: check_transition(np.array([[0.5, 0.4], [0.5, 0.5]])), "P", ValueError),
    (lambda: check_transition(np.array([[1.5, -0.5], [0.5, 0.5]])), "P", ValueError),
    (lambda: check_transition(np.ones((2, 3)) / 3), "P", ValueError),
    (lambda: check_transition(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.9, 0.1])), "pi", ValueError),
    (lambda: ZipfMarkov(np.array([0.5, 0.5]), np.array([[0.9, 0.2], [0.1, 0.9]])), "P", ValueError),
    (lambda: zipf_markov(8).sample(0, 4, 0), "n_sequences", ValueError),
    (lambda: zipf_markov(8).sample(2, 4, -3), "seed", ValueError),
])
def test_zipf_rejects(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(corpus="wiki"), "corpus", ValueError),
    (dict(final_norm="batchnorm"), "final_norm", ValueError),
    (dict(n_layers=0), "n_layers", ValueError),
    (dict(d_model=63), "d_model", ValueError),
    (dict(context=2.5), "context", TypeError),
    (dict(vocab=1), "vocab", ValueError),
    (dict(lr=0.0), "lr", ValueError),
    (dict(weight_decay=-0.1), "weight_decay", ValueError),
    (dict(clip=float("nan")), "clip", ValueError),
    (dict(zipf_exponent=-1.0), "zipf_exponent", ValueError),
    (dict(seed=-1), "seed", ValueError),
])
def test_config_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        MetaNormConfig(**kwargs)


def test_training_helpers_reject():
    with pytest.raises(ValueError, match="scale"):
        runs("huge")
    with pytest.raises(ValueError, match="n_sequences"):
        heldout_tokens(MetaNormConfig(corpus="text"), 10**6)
    with pytest.raises(ValueError, match="values"):
        per_layer_ci(np.zeros((2, 1, 5)))
    with pytest.raises(ValueError, match="x and y"):
        spearman(np.arange(4.0), np.arange(5.0))
    config = MetaNormConfig(context=8)
    model, tokens = build_model(config), heldout_tokens(config, 2)
    with pytest.raises(ValueError, match="targets"):
        inner_analysis(model, tokens, config.vocab, targets=tokens)
    with pytest.raises(ValueError, match="tokens"):
        inner_analysis(model, tokens[:, :1], config.vocab)


def test_zipf_chain_is_zipf_and_seeded():
    chain = zipf_markov(64, 1.1, seed=3)
    assert np.allclose(chain.pi @ chain.P, chain.pi, rtol=0, atol=1e-12)
    assert np.allclose(chain.pi, zipf_weights(64, 1.1), rtol=0, atol=1e-15)
    assert chain.entropy_rate() < chain.unigram_entropy()
    a, b = chain.sample(50, 30, seed=7), chain.sample(50, 30, seed=7)
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() < 64
    assert not np.array_equal(a, chain.sample(50, 30, seed=8))
    assert np.array_equal(zipf_markov(64, 1.1, seed=3).P, chain.P)
    iid = zipf_markov(16, 1.0, sharpness=0.0)
    assert np.allclose(iid.P, np.broadcast_to(iid.pi, (16, 16)), atol=1e-12)


def test_training_helpers_shapes():
    for corpus in ("zipf", "text"):
        config = MetaNormConfig(corpus=corpus, context=16, batch=4)
        batch = train_batch(config, 1)
        assert batch.shape == (4, 17) and batch.max() < config.vocab
        assert np.array_equal(batch, train_batch(config, 1))
        held = heldout_tokens(config, 3)
        assert held.shape == (3, 17)
        freq = token_frequency(config)
        assert freq.shape == (config.vocab,)
        if corpus == "zipf":
            assert np.isclose(freq.sum(), 1.0)
        else:                       # the 63 kept characters cover most of the text; <unk> is NaN
            assert np.isnan(freq[-1]) and 0.99 < np.nansum(freq) < 1.0
    model = build_model(MetaNormConfig(final_norm="rmsnorm"))
    assert isinstance(model.ln_f, torch.nn.RMSNorm)


def test_training_is_deterministic():
    config = MetaNormConfig(d_model=16, n_heads=2, context=8, batch=4, steps=3, log_every=1)
    a, b = train_metanorm(config, progress=False), train_metanorm(config, progress=False)
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert torch.equal(a["loss"], b["loss"])
