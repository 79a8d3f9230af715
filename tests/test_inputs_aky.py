"""The Akyürek analogue's analyses (mechverify.training.aky): bad input names the parameter, and the
analysis helpers are right on inputs whose answer is known."""

import dataclasses

import numpy as np
import pytest
import torch

from mechverify.theory.algorithms.regression import correlation, ridge_weights
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training import gd_icl
from mechverify.training.aky import (bayes_lam, best_match, compare_references, held_out, implicit_weights,
                          layer_probes, model_predict, reference_weights, residual_states, ridge_probe_r2)
from mechverify.training.sparse_regression import SparseTrainConfig, build_model

SMALL = dataclasses.replace(gd_icl.runs("quick")["aky_small"], d=3, s=3, n=5, width=8, steps=1,
                            warmup=0, curriculum=0)
BATCH = sample_regression(6, 5, 3, noise=0.5, seed=0)


class PassThrough:
    """A task encoder that hands the prompt (X, y, x_q) to the model unchanged."""

    def encode(self, prompt):
        return prompt

    def readout(self, outputs):
        return outputs


class AveragingModel(torch.nn.Module):
    """A stand-in regressor predicting <X^T y / n, x_q> + 0.3 (linear in x_q, with an offset)."""

    encoder = PassThrough()

    def outputs(self, prompt):
        X, y, x_query = prompt
        return torch.einsum("bnd,bn,bd->b", X, y, x_query) / X.shape[1] + 0.3


def test_aky_runs_are_dense_softmax():
    with pytest.raises(ValueError, match="scale"):
        gd_icl.runs("huge")
    steps = {("quick", "big"): 1200, ("quick", "small"): 2000, ("paper", "big"): 10000, ("paper", "small"): 10000}
    for scale in ("quick", "paper"):
        aky = {k: c for k, c in gd_icl.runs(scale).items() if k.startswith("aky_")}
        assert sorted(aky) == ["aky_big", "aky_big_noisy", "aky_small", "aky_small_noisy"]
        for name, c in aky.items():
            size = name.split("_")[1]
            assert (c.arch, c.d, c.s, c.n, c.steps) == ("softmax", 8, 8, 16, steps[scale, size])
            # the paper recipe is constant Adam; quick adds the warmup and the curriculum
            assert (c.warmup > 0, c.curriculum > 0) == ((scale == "quick",) * 2)
            assert (c.noise > 0) == name.endswith("_noisy")
    assert (gd_icl.runs("quick")["aky_big"].n_layers, gd_icl.runs("quick")["aky_big"].width) == (4, 64)


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(noise=0.0, n=4), "noise", ValueError),
    (dict(noise=float("nan"), n=4), "noise", ValueError),
    (dict(noise=0.5, n=0), "n", ValueError),
    (dict(noise=0.5, n=4, tau=-1.0), "tau", ValueError),
])
def test_bayes_lam_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        bayes_lam(**kwargs)


def test_bayes_lam_gives_posterior_mean():
    """ridge_weights(lam = bayes_lam) = (X^T X + sigma^2/tau^2 I)^{-1} X^T y, the posterior mean."""
    sigma, tau = 0.5, 2.0
    w = ridge_weights(BATCH.X, BATCH.y, bayes_lam(sigma, BATCH.X.shape[1], tau))
    for b in range(BATCH.X.shape[0]):
        X, y = BATCH.X[b], BATCH.y[b]
        post = np.linalg.solve(X.T @ X + sigma**2 / tau**2 * np.eye(3), X.T @ y)
        np.testing.assert_allclose(w[b], post, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(config="run", part=0), "config", TypeError),
    (dict(config=dataclasses.replace(SMALL, s=2), part=0), "config", ValueError),
    (dict(config=SMALL, part=-1), "part", ValueError),
    (dict(config=SMALL, part=0, n_prompts=0), "n_prompts", ValueError),
    (dict(config=SMALL, part=0, n_prompts=2**15 + 1), "n_prompts", ValueError),
])
def test_held_out_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        held_out(**kwargs)


def test_held_out_parts_are_disjoint_and_deterministic():
    a, b = held_out(SMALL, 1, 4), held_out(SMALL, 2, 4)
    assert not np.allclose(a.X, b.X)
    np.testing.assert_array_equal(a.X, held_out(SMALL, 1, 4).X)


def test_implicit_weights_recover_a_linear_model():
    w, r2 = implicit_weights(AveragingModel(), BATCH, n_queries=8)
    np.testing.assert_allclose(w, correlation(BATCH.X, BATCH.y), atol=1e-4)
    assert np.all(r2 > 1 - 1e-6)


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(n_queries=3), "n_queries", ValueError),       # fewer than d + 1 = 4
    (dict(n_queries=2.5), "n_queries", TypeError),
    (dict(seed=-2), "seed", ValueError),
])
def test_implicit_weights_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        implicit_weights(AveragingModel(), BATCH, **kwargs)


def test_model_predict_rejects_chunk():
    with pytest.raises(ValueError, match="chunk"):
        model_predict(AveragingModel(), BATCH.X, BATCH.y, BATCH.x_query, chunk=0)


def test_reference_weights():
    refs = reference_weights(dataclasses.replace(SMALL, noise=0.5), BATCH, 0.5)
    assert set(refs) == {"ols", "ridge", "gd", "averaging", "zero"}
    np.testing.assert_allclose(refs["gd"], 0.5 * refs["averaging"], rtol=1e-12)   # one step from 0
    assert "ridge" not in reference_weights(dataclasses.replace(SMALL, noise=0.0), BATCH, 0.5)
    with pytest.raises(ValueError, match="gd_lr"):
        reference_weights(SMALL, BATCH, 0.0)
    with pytest.raises(TypeError, match="config"):
        reference_weights(None, BATCH, 0.5)


def test_best_match():
    assert best_match({"ols": 0.1, "gd": 0.3}) == "ols"
    with pytest.raises(ValueError, match="metrics"):
        best_match({})


def test_ridge_probe_r2():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((200, 5))
    target = feats[:, :2] @ np.array([[1.0, 2.0], [-1.0, 0.5]]) + 3.0
    assert ridge_probe_r2(feats[:100], target[:100], feats[100:], target[100:], ridge=0.0) > 1 - 1e-9
    noise = rng.standard_normal((200, 2))
    assert ridge_probe_r2(feats[:100], noise[:100], feats[100:], noise[100:]) < 0.1


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(ridge=-1.0), "ridge", ValueError),
    (dict(train_x=np.ones(4)), "train_x", ValueError),
    (dict(test_t=np.full((4, 2), np.nan)), "test_t", ValueError),
    (dict(train_t=np.ones((3, 2))), "train_t", ValueError),
    (dict(test_x=np.ones((4, 2))), "test_x", ValueError),
])
def test_ridge_probe_r2_rejects(kwargs, param, exc):
    args = dict(train_x=np.ones((4, 3)), train_t=np.ones((4, 2)), test_x=np.ones((4, 3)), test_t=np.ones((4, 2)))
    with pytest.raises(exc, match=param):
        ridge_probe_r2(**{**args, **kwargs})


def test_analyses_reject_sparse_configs():
    sparse = dataclasses.replace(SMALL, s=2)
    model = build_model(SMALL)
    for fn in (compare_references, layer_probes):
        with pytest.raises(ValueError, match="config"):
            fn(model, sparse)
    with pytest.raises(TypeError, match="config"):
        compare_references(model, SparseTrainConfig.__name__)


def test_probe_positions():
    model = build_model(SMALL)
    states = residual_states(model, BATCH, "last_y")
    assert len(states) == SMALL.n_layers + 1 and states[0].shape == (6, SMALL.width)
    with pytest.raises(ValueError, match="position"):
        residual_states(model, BATCH, "first")
    with pytest.raises(TypeError, match="model"):
        residual_states(AveragingModel(), BATCH)
    with pytest.raises(ValueError, match="position"):
        layer_probes(model, SMALL, n_prompts=4, position="middle")
