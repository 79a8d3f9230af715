"""Heavy-ball momentum GD, w <- w - lr grad L(w) + beta (w - w_prev), as linear self-attention.

Token z = (x, r, u, 1): r holds the residual y - <w, x> (the label, 0 at the query), u holds
<w - w_prev, x>.  Each layer has two heads.  Gradient head: score x_j.x_t, value -lr r_j, so it
adds a_t = lr <grad L(w), x_t> to r_t and subtracts it from u_t.  Momentum head: score 1 * u_t
(the constant slot), value 1, so it adds the token-local terms -beta u_t to r_t and
(beta - 1) u_t to u_t.  The prediction is -r at the query.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from mechverify.compare import assert_close, mc_check
from mechverify.constructions.modules import LinearAttention
from mechverify.strategies import regression_prompts

CLAIM = dict(paper="polyak-1964", provenance="reconstructed")


def heavy_ball_layers(d, n_layers, lr, beta):
    D, r, u, c = d + 3, d, d + 1, d + 2
    kq_grad, pv_grad, kq_mom, pv_mom = torch.zeros(4, D, D, dtype=torch.float64)
    kq_grad[:d, :d] = torch.eye(d)
    pv_grad[r, r], pv_grad[u, r] = -lr, lr
    kq_mom[c, u] = 1.0
    pv_mom[r, c], pv_mom[u, c] = -beta, beta - 1.0
    return [LinearAttention(D, 2).set_merged([kq_grad, kq_mom], [pv_grad, pv_mom]) for _ in range(n_layers)]


@torch.no_grad()
def transformer_predict(layers, X, y, x_query):
    B, n, d = X.shape
    Z = torch.zeros(B, n + 1, d + 3, dtype=torch.float64)
    Z[:, :n, :d], Z[:, n, :d], Z[:, :n, d], Z[..., d + 2] = torch.tensor(X), torch.tensor(x_query), torch.tensor(y), 1
    for layer in layers:
        Z = Z + layer(Z, n)
    return -Z[:, n, d].numpy()


def heavy_ball_predict(X, y, x_query, n_steps, lr, beta):     # the numpy reference
    w = w_prev = np.zeros(X.shape[::2])
    for _ in range(n_steps):
        grad = np.einsum("bnd,bn->bd", X, np.einsum("bnd,bd->bn", X, w) - y) / X.shape[1]
        w, w_prev = w - lr * grad + beta * (w - w_prev), w
    return np.einsum("bd,bd->b", w, x_query)


@pytest.mark.claim(id="momentum/layers-are-steps", kind="exact", **CLAIM)
@given(regression_prompts(max_d=6, max_n=24), st.integers(1, 6), st.floats(0.1, 0.9), st.floats(0.0, 0.9))
def test_layers_are_heavy_ball_steps(record_claim, batch, n_layers, fraction, beta):
    X, y, xq = batch.X, batch.y, batch.x_query
    lr = fraction / np.linalg.eigvalsh(np.einsum("bnd,bne->bde", X, X) / X.shape[1]).max()
    got = transformer_predict(heavy_ball_layers(X.shape[2], n_layers, lr, beta), X, y, xq)
    want = heavy_ball_predict(X, y, xq, n_layers, lr, beta)
    assert_close(got, want, ops=n_layers * (X.shape[1] + X.shape[2]), scale=1 + np.abs(y).max(), record=record_claim)


@pytest.mark.claim(id="momentum/noise-average", kind="statistical", **CLAIM)
def test_noise_averaged_prediction_is_the_clean_one(record_claim, instance_seed):
    rng = np.random.default_rng(instance_seed)
    n, d, draws = 16, 4, 4000
    X, w, xq = rng.standard_normal((n, d)), rng.standard_normal(d), rng.standard_normal(d)
    noisy = X @ w + 0.5 * rng.standard_normal((draws, n))          # label noise sigma = 0.5
    layers = heavy_ball_layers(d, 5, lr=0.3, beta=0.5)
    got = transformer_predict(layers, np.broadcast_to(X, (draws, n, d)), noisy, np.broadcast_to(xq, (draws, d)))
    clean = heavy_ball_predict(X[None], (X @ w)[None], xq[None], 5, 0.3, 0.5)[0]
    mc_check(got - clean, 0.0, effect=0.05, record=record_claim)     # must see a bias of 0.05
