"""Preprocess-then-optimize (PtO) in linear attention [reconstructed] (Chen, Zhao, Zou 2024).

Notation (spec -> code).  Layer convention of :mod:`mechverify.constructions.modules`:
z_t <- z_t + (1/n) sum_h W^PV_h sum_{j<=n} z_j (z_j^T W^KQ_h z_t) = z_t + sum_h W^PV_h C W^KQ_h z_t,
C = (1/n) sum_j z_j z_j^T the context moment.

| spec                                   | code                                              |
|----------------------------------------|---------------------------------------------------|
| token (x, 0_d, y)                      | layout x=[0:d], y=[d], xt=[d+1:2d+1] (x_tilde)     |
| r_hat = (1/n) X^T y, x_tilde = r_hat*x | slot xt_k after layer 1                            |
| layer-1 head k: W^KQ_k = e_y e_k^T     | ``kq[k]``: score y_j x_{t,k}                       |
|                 W^PV_k = e_{d+k} e_k^T | ``pv[k]``: writes x_{j,k} into xt_k                |
| GD layer: W^KQ = sum_k e_{xt_k} e_{xt_k}^T, W^PV = -lr e_y e_y^T | ``_gd_layer``            |
| prediction <w_tilde_T, r_hat * x_q>    | readout -e_y of the query                          |

Why it works.  Head k's update of slot xt_k of token t is (1/n) sum_j x_{j,k} y_j x_{t,k} =
r_hat_k x_{t,k}; the d heads write the d coordinates of x_tilde (one head cannot: the map
C -> (C[y, x_k])_k has operator-Schmidt rank d, a head's C -> P C K rank 1;
``mechverify.theory.symbolic.sparse_regression``).  The following single-head layers are von Oswald GD layers
(``mechverify.constructions.gd_icl``) reading inputs from xt instead of x: after T of them the query's
y-slot holds -<w_tilde_T, x_tilde_q>.
"""

from __future__ import annotations

import numpy as np
import torch

from mechverify.constructions.modules import LinearAttention, LinearTransformer, Layout, regression_layout
from mechverify.theory.checks import check_int, check_real


def pto_layout(d: int) -> Layout:
    return regression_layout(check_int("d", d), extra=(("xt", d),))


def _unit(D: int, i: int, j: int, dtype, device) -> torch.Tensor:
    E = torch.zeros(D, D, dtype=dtype, device=device)
    E[i, j] = 1.0
    return E


def preprocessing_layer(d: int, *, dtype=torch.float64, device=None) -> LinearAttention:
    """The d-head layer 1 that writes r_hat * x into the xt slots of every token."""
    layout = pto_layout(d)
    D, y, xt = layout.width, layout.index("y"), layout.slice("xt").start
    kq = [_unit(D, y, k, dtype, device) for k in range(d)]
    pv = [_unit(D, xt + k, k, dtype, device) for k in range(d)]
    return LinearAttention(D, d, dtype=dtype, device=device).set_merged(kq, pv)


def summed_head_layer(d: int, *, dtype=torch.float64, device=None) -> LinearAttention:
    """The d heads of :func:`preprocessing_layer` summed into one head (W^KQ = sum_k kq[k],
    W^PV = sum_k pv[k]): slot xt_k gets (1/n) sum_j x_{j,k} y_j <1, x_t>, mixing coordinates."""
    kq, pv = preprocessing_layer(d, dtype=dtype, device=device).merged()
    return LinearAttention(kq.shape[-1], 1, dtype=dtype, device=device).set_merged([kq.sum(0)], [pv.sum(0)])


def _gd_layer(d: int, lr: float, dtype, device) -> LinearAttention:
    layout = pto_layout(d)
    D, y, xt = layout.width, layout.index("y"), layout.slice("xt")
    kq = torch.zeros(D, D, dtype=dtype, device=device)
    kq[xt, xt] = torch.eye(d, dtype=dtype, device=device)
    pv = -lr * _unit(D, y, y, dtype, device)
    return LinearAttention(D, 1, dtype=dtype, device=device).set_merged([kq], [pv])


def pto_transformer(d: int, n_gd_layers: int, lr: float, *, dtype=torch.float64, device=None) -> LinearTransformer:
    """Layer 1 (d heads) preprocesses x -> r_hat * x; then ``n_gd_layers`` single-head GD
    layers of step ``lr`` (> 0) on the preprocessed inputs.  ``.predict`` equals
    ``mechverify.theory.algorithms.regression.pto_predict(X, y, x_query, lr, n_gd_layers)``."""
    d = check_int("d", d)
    n_gd_layers = check_int("n_gd_layers", n_gd_layers, minimum=0)
    lr = check_real("lr", lr, positive=True)
    layout = pto_layout(d)
    layers = [preprocessing_layer(d, dtype=dtype, device=device)]
    layers += [_gd_layer(d, lr, dtype, device) for _ in range(n_gd_layers)]
    readout = torch.zeros(layout.width, dtype=dtype, device=device)
    readout[layout.index("y")] = -1.0
    return LinearTransformer(layers, layout, readout)


def preprocessing_target(Z: torch.Tensor, n_context: int, d: int) -> torch.Tensor:
    """The update layer 1 should make: r_hat * x in the xt slots, 0 elsewhere, for every token."""
    layout = pto_layout(d)
    x, y = Z[..., layout.slice("x")], Z[:, :n_context, layout.index("y")]
    r = torch.einsum("bjk,bj->bk", x[:, :n_context], y) / n_context
    out = torch.zeros_like(Z)
    out[..., layout.slice("xt")] = r[:, None, :] * x
    return out


def fit_preprocessing_heads(d: int, n_heads: int, Z: torch.Tensor, n_context: int, *, iters: int = 2000,
                            restarts: int = 4, seed: int = 0, tol: float = 1e-13,
                            stall: float = 1e-3) -> tuple[LinearAttention, float, bool]:
    """Least-squares fit of an ``n_heads``-head linear-attention layer to the preprocessing
    update on embedded prompts ``Z`` (B, n+1, 2d+1; xt slots 0) by alternating least squares.

    The inputs and C live on the (x, y) coordinates (m = d+1), so head h is W^KQ_h (m x m
    block) and W^PV_h (D x m block).  With the W^KQ fixed the update is linear in the W^PV,
    and vice versa; each half-step is an exact least-squares solve.  ALS converges linearly,
    sometimes slowly, so each start runs until its relative residual is below ``tol`` (an exact
    fit), or improves by less than a fraction ``stall`` over 25 sweeps, or ``iters`` sweeps
    are done.  Best of ``restarts`` random starts (stops early at an exact fit).  Returns (the
    fitted layer, relative residual |update - target| / |target| on Z, whether the best start
    stopped by the ``tol`` or ``stall`` rule rather than at the ``iters`` cap).
    """
    d, H = check_int("d", d), check_int("n_heads", n_heads)
    iters, restarts = check_int("iters", iters), check_int("restarts", restarts)
    tol, stall = check_real("tol", tol, positive=True), check_real("stall", stall, positive=True)
    layout = pto_layout(d)
    D, m = layout.width, d + 1
    Zn = Z.detach().cpu().numpy()
    U = Zn[..., :m]                                            # tokens on (x, y): (B, T, m)
    C = np.einsum("bjm,bjl->bml", U[:, :n_context], U[:, :n_context]) / n_context
    target = preprocessing_target(Z, n_context, d).detach().cpu().numpy().reshape(-1, D)
    scale = np.linalg.norm(target)
    rng = np.random.default_rng(seed)
    best = (np.inf, None, None, False)
    for _ in range(restarts):
        K = rng.standard_normal((H, m, m))
        history = []
        for _ in range(iters):
            # P-step: features u_h = C K_h z (per token), output = sum_h P_h u_h.
            F = np.einsum("bml,hlk,btk->bthm", C, K, U).reshape(-1, H * m)
            P = np.linalg.lstsq(F, target, rcond=None)[0].T.reshape(D, H, m).transpose(1, 0, 2)
            # K-step: output_a = sum_h sum_{l,k} (P_h C)[a, l] K_h[l, k] z_k.
            PC = np.einsum("had,bdl->bhal", P, C)
            G = np.einsum("bhal,btk->btahlk", PC, U).reshape(-1, H * m * m)
            K = np.linalg.lstsq(G, target.reshape(-1), rcond=None)[0].reshape(H, m, m)
            history.append(np.linalg.norm(G @ K.reshape(-1) - target.reshape(-1)) / scale)
            stopped = history[-1] < tol or (len(history) > 25 and history[-26] - history[-1] < stall * history[-26])
            if stopped:
                break
        if history[-1] < best[0]:
            best = (history[-1], P, K, stopped)
        if best[0] < tol:
            break
    _, P, K, converged = best
    kq = np.zeros((H, D, D))
    pv = np.zeros((H, D, D))
    kq[:, :m, :m] = K
    pv[:, :, :m] = P
    layer = LinearAttention(D, H, dtype=Z.dtype, device=Z.device).set_merged(
        [torch.as_tensor(a, dtype=Z.dtype, device=Z.device) for a in kq],
        [torch.as_tensor(a, dtype=Z.dtype, device=Z.device) for a in pv])
    return layer, float(best[0]), converged
