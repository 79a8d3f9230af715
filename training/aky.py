"""Akyürek et al. (ICLR 2023) analogue [review]: which learning algorithm does a trained GPT-2
style in-context regressor implement, and what do its layers encode?

The runs are the sparse-regression paper's softmax runs with s = d (dense w ~ N(0, I_d), so
the prior scale is tau = 1): :class:`mechverify.training.sparse_regression.SparseTrainConfig` (``arch="softmax"``,
interleaved tokens x_1, y_1, ..., x_n, y_n, x_q into :class:`mechverify.constructions.modules.GPT`,
training loss over every prefix), named ``aky_*`` in the GD-ICL catalogue :func:`mechverify.training.gd_icl.runs` and trained by
:func:`mechverify.training.runner.trained`.
This module adds only the analyses of the Aky rows of docs/gd_icl.md (§1 item 4, §6).

Notation (paper -> code):

=============================  =========================================================
d, n                           ``config.d`` (= 8), ``config.n`` (context pairs, 16)
sigma, tau                     ``config.noise``; tau = 1 (w ~ N(0, I_d), fixed by the sampler)
Bayes ridge lambda = s^2/t^2   in the *sum* convention argmin |Xw - y|^2 + lambda |w|^2;
                               the package's ``ridge_weights`` uses the mean convention
                               L(w) + (lam/2)|w|^2, so ``lam = sigma^2 / (n tau^2)``
                               (:func:`bayes_lam`), the posterior mean of w
GD                             one step of batch GD from w = 0 with its step tuned for risk
                               (Aky's small-model regime; with many tuned steps GD tends to
                               OLS, so the step count is not tuned)
averaging                      w = X^T y / n (one GD step of size 1)
implicit weight w_model        least-squares fit (with intercept) of the model's predictions
                               at K fresh queries x ~ N(0, I_d) on the same context
probe targets                  the moment X^T y / n and w_OLS, from the residual stream at
                               the last label token y_n (or at the query token) after the
                               embedding (index 0) and after each block (index 1..L)
=============================  =========================================================
"""

from __future__ import annotations

import numpy as np
import torch

from mechverify.constructions.modules import GPT
from mechverify.theory.algorithms.regression import correlation, gd_weights, ols_weights, ridge_weights
from mechverify.theory.algorithms.tuning import tune_gd_lr
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.regression import RegressionBatch, sample_regression
from mechverify.training.analysis import ridge_probe_predict
from mechverify.training.sparse_regression import EVAL_SEED, SparseTrainConfig, interleave, predict, query_states

TUNE_PART, EVAL_PART, PROBE_TRAIN_PART, PROBE_TEST_PART = 1, 2, 3, 4   # disjoint held-out prompt sets
PART_SIZE = 2**15               # prompts reserved per part (of the EVAL_SEED stream)
QUERY_SEED = EVAL_SEED + 7      # stream of the extra queries used for implicit weights


def _check_dense(config: SparseTrainConfig) -> SparseTrainConfig:
    if not isinstance(config, SparseTrainConfig):
        raise TypeError(f"config must be a SparseTrainConfig; got {type(config).__name__}")
    if config.s != config.d:
        raise ValueError(f"config must be dense regression (s == d); got s={config.s}, d={config.d}")
    return config


def held_out(config: SparseTrainConfig, part: int, n_prompts: int = 2048) -> RegressionBatch:
    """Held-out prompts of ``config``'s task, set ``part`` (disjoint from training and from other parts)."""
    config = _check_dense(config)
    check_int("part", part, minimum=0)
    n_prompts = check_int("n_prompts", n_prompts)
    if n_prompts > PART_SIZE:
        raise ValueError(f"n_prompts must be <= {PART_SIZE}; got {n_prompts}")
    return sample_regression(n_prompts, config.n, config.d, noise=config.noise, seed=EVAL_SEED,
                             first=part * PART_SIZE)


def bayes_lam(noise: float, n: int, tau: float = 1.0) -> float:
    """Ridge ``lam`` of :func:`mechverify.theory.algorithms.regression.ridge_weights` (mean convention) that
    gives the posterior mean of w ~ N(0, tau^2 I) under noise sigma: sigma^2 / (n tau^2)."""
    noise = check_real("noise", noise, positive=True)
    n = check_int("n", n)
    tau = check_real("tau", tau, positive=True)
    return noise**2 / (n * tau**2)


def model_predict(model: torch.nn.Module, X: np.ndarray, y: np.ndarray, x_query: np.ndarray,
                  chunk: int = 4096) -> np.ndarray:
    """The model's predictions of y_q (float64 numpy, (B,)), in chunks of ``chunk`` prompts."""
    chunk = check_int("chunk", chunk)
    out = []
    with torch.no_grad():
        for i in range(0, X.shape[0], chunk):
            Xt, yt, qt = (torch.from_numpy(np.ascontiguousarray(a[i:i + chunk])).float() for a in (X, y, x_query))
            out.append(predict(model, Xt, yt, qt).double().numpy())
    return np.concatenate(out)


def implicit_weights(model: torch.nn.Module, batch: RegressionBatch, n_queries: int = 16,
                     seed: int = QUERY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt b: the least-squares fit y_hat(x) ~ <w_b, x> + c_b of the model's predictions at
    ``n_queries`` fresh queries x ~ N(0, I_d) on prompt b's context (>= d + 1 queries).

    Returns (w (B, d), r2 (B,)): r2 is the fit's R^2, 1 when the model is linear in x_q."""
    B, n, d = batch.X.shape
    n_queries = check_int("n_queries", n_queries, minimum=d + 1)
    check_int("seed", seed, minimum=0)
    Q = np.random.default_rng(seed).standard_normal((B, n_queries, d))
    preds = model_predict(model, np.repeat(batch.X, n_queries, axis=0), np.repeat(batch.y, n_queries, axis=0),
                          Q.reshape(B * n_queries, d)).reshape(B, n_queries)
    A = np.concatenate([Q, np.ones((B, n_queries, 1))], axis=2)
    coef = np.linalg.solve(np.einsum("bki,bkj->bij", A, A), np.einsum("bki,bk->bi", A, preds)[..., None])[..., 0]
    resid = preds - np.einsum("bki,bi->bk", A, coef)
    sst = np.sum((preds - preds.mean(1, keepdims=True)) ** 2, axis=1)
    r2 = 1.0 - np.sum(resid**2, axis=1) / np.where(sst > 0, sst, np.inf)
    return coef[:, :d], r2


def reference_weights(config: SparseTrainConfig, batch: RegressionBatch, gd_lr: float) -> dict[str, np.ndarray]:
    """The references' weights on ``batch`` (all are linear predictors <w_ref, x_q>): OLS, Bayes
    ridge (noisy runs only; equal to OLS when sigma = 0), one tuned GD step, averaging, zero."""
    config = _check_dense(config)
    gd_lr = check_real("gd_lr", gd_lr, positive=True)
    refs = {"ols": ols_weights(batch.X, batch.y)}
    if config.noise > 0:
        refs["ridge"] = ridge_weights(batch.X, batch.y, bayes_lam(config.noise, config.n))
    refs["gd"] = gd_weights(batch.X, batch.y, gd_lr, 1)
    refs["averaging"] = correlation(batch.X, batch.y)
    refs["zero"] = np.zeros_like(refs["ols"])
    return refs


def tuned_gd_lr(config: SparseTrainConfig, n_prompts: int = 8192) -> float:
    """The step of one GD step from 0 that minimises the risk on held-out prompts of the task."""
    tune = held_out(config, TUNE_PART, n_prompts)
    return tune_gd_lr(tune.X, tune.y, tune.x_query, tune.y_query, 1, lr_max=10.0)[0]


def compare_references(model: torch.nn.Module, config: SparseTrainConfig, n_prompts: int = 512,
                       n_queries: int = 16) -> dict:
    """Aky's two metrics of ``model`` against every reference on ``n_prompts`` held-out prompts:
    ``spd`` = mean (y_hat_model - y_hat_ref)^2 at the prompts' own queries, ``iwd`` = mean
    |w_model - w_ref|^2 (implicit weights); also ``risk`` (mean squared error to y_q) of the
    model and of each reference, and the mean R^2 of the implicit-weight fits (``linearity``)."""
    config = _check_dense(config)
    lr = tuned_gd_lr(config)
    ev = held_out(config, EVAL_PART, n_prompts)
    pred = model_predict(model, ev.X, ev.y, ev.x_query)
    w_model, r2 = implicit_weights(model, ev, n_queries)
    out = {"gd_lr": lr, "linearity": float(r2.mean()), "risk": {"model": float(np.mean((pred - ev.y_query) ** 2))},
           "spd": {}, "iwd": {}}
    for name, w in reference_weights(config, ev, lr).items():
        ref = np.einsum("bd,bd->b", w, ev.x_query)
        out["spd"][name] = float(np.mean((pred - ref) ** 2))
        out["iwd"][name] = float(np.mean(np.sum((w_model - w) ** 2, axis=1)))
        out["risk"][name] = float(np.mean((ref - ev.y_query) ** 2))
    return out


def best_match(metrics: dict[str, float]) -> str:
    """The reference with the smallest distance."""
    if not metrics:
        raise ValueError("metrics must name at least one reference")
    return min(metrics, key=metrics.get)


# --- probes ------------------------------------------------------------------------------------

def probe_targets(batch: RegressionBatch) -> dict[str, np.ndarray]:
    """Aky's probe targets per prompt: the moment X^T y / n and w_OLS, each (B, d)."""
    return {"xty": correlation(batch.X, batch.y), "w_ols": ols_weights(batch.X, batch.y)}


def ridge_probe_r2(train_x: np.ndarray, train_t: np.ndarray, test_x: np.ndarray, test_t: np.ndarray,
                   ridge: float = 1e-3) -> float:
    """Linear probe (features standardised on the train split, intercept, ridge ``ridge`` per
    sample) from features (B, F) to vector targets (B, k); test R^2 = 1 - SSE / SST summed over
    the target coordinates (SST about the train mean)."""
    ridge = check_real("ridge", ridge, nonnegative=True)
    for name, a in (("train_x", train_x), ("train_t", train_t), ("test_x", test_x), ("test_t", test_t)):
        if not isinstance(a, np.ndarray) or a.ndim != 2 or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be a finite 2-d array")
    if train_x.shape[0] != train_t.shape[0] or test_x.shape[0] != test_t.shape[0]:
        raise ValueError("train_x/train_t and test_x/test_t must have matching numbers of rows")
    if train_x.shape[1] != test_x.shape[1] or train_t.shape[1] != test_t.shape[1]:
        raise ValueError("test_x/test_t must have the columns of train_x/train_t")
    pred = ridge_probe_predict(train_x, train_t, test_x, ridge)
    sst = np.sum((test_t - train_t.mean(0)) ** 2)
    if sst == 0:
        raise ValueError("test_t equals the train mean of train_t everywhere: R^2 is undefined")
    return 1.0 - float(np.sum((pred - test_t) ** 2) / sst)


PROBE_POSITIONS = ("last_y", "query")


def residual_states(model: GPT, batch: RegressionBatch, position: str = "last_y") -> list[np.ndarray]:
    """The residual stream of ``model`` at one token of the interleaved prompt, after the
    embedding and after each block: L+1 arrays (B, width).  ``position``: ``"last_y"`` = the
    last label token y_n (where Aky's probes read the targets from, per the review of their
    Fig. 4), ``"query"`` = the query token x_q (where the model reads out its prediction)."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a mechverify.constructions.modules.GPT; got {type(model).__name__}")
    if position not in PROBE_POSITIONS:
        raise ValueError(f"position must be one of {PROBE_POSITIONS}; got {position!r}")
    if position == "query":
        return query_states(model, batch)
    X, y, xq = (torch.from_numpy(a).float() for a in (batch.X, batch.y, batch.x_query))
    with torch.no_grad():
        _, hidden = model(interleave(X, y, xq), return_hidden=True)
    return [h[:, -2].numpy().astype(np.float64) for h in hidden]


def layer_probes(model: GPT, config: SparseTrainConfig, n_prompts: int = 2048,
                 position: str = "last_y") -> dict[str, np.ndarray]:
    """Per-layer probe R^2 of each :func:`probe_targets` entry from the residual stream at
    ``position`` (:func:`residual_states`): name -> (L+1,), index 0 = after the embedding,
    l = after block l.  Fitted on ``n_prompts`` held-out prompts, scored on as many others."""
    config = _check_dense(config)
    train, test = held_out(config, PROBE_TRAIN_PART, n_prompts), held_out(config, PROBE_TEST_PART, n_prompts)
    h_train, h_test = residual_states(model, train, position), residual_states(model, test, position)
    t_train, t_test = probe_targets(train), probe_targets(test)
    return {k: np.array([ridge_probe_r2(a, t_train[k], b, t_test[k]) for a, b in zip(h_train, h_test)])
            for k in t_train}
