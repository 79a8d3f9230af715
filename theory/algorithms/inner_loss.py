"""The logit-lens inner loss of a causal LM and its inner gradient descent [reconstructed].

Everything in this module is our **reconstruction** of the "inner optimisation" of Wu &
Varshney (2024, "A Meta-Learning Perspective on Transformers for Causal Language Modeling");
the paper's own inner loss and theorems were not available (docs/meta_learning.md §9).

Notation (docs/meta_learning.md §3-§5) -> code:

============================  =========================================================
h  (d,)                       ``h``: a residual-stream vector, batched as (..., d)
N                             ``norm``: "identity" | "layernorm" | "rmsnorm", optional
                              affine ``gamma`` (d,), ``beta`` (d,), stabiliser ``eps``
U  (V, d), b (V,)             ``U`` (unembedding rows u_v), ``bias`` (optional)
y                             ``y``: the next token (integer array of h's batch shape)
l(h) = -log softmax(U N(h) + b)_y      :func:`logit_lens_loss`
grad l = J_N(h)^T U^T (p - e_y)        :func:`logit_lens_grad`
J_N                           :func:`norm_jacobian`
dL/du_v = sum_t (p_t(v) - 1[y_t = v]) N(h_t)   :func:`unembed_grad`
h <- h - eta_l grad l(h)      :func:`inner_gd_unroll`
a_l = |h^(l)|^2, c_l = |grad l(h^(l)/|h^(l)|)|  :func:`quartic_lower_bound`, :func:`norm_recursion`
============================  =========================================================

Normalisations (stabiliser eps >= 0; the identities of docs/meta_learning.md §4 hold at eps = 0):

* RMSNorm: r = sqrt(mean(h^2) + eps), n = h / r; J = (1/r) (I - n n^T / d).
  At eps = 0 this is (sqrt(d)/|h|) (I - h_hat h_hat^T), the form of docs/meta_learning.md §4 item 5.
* LayerNorm: z = h - mean(h), s = sqrt(mean(z^2) + eps), n = z / s;
  J = (1/s) (I - 1 1^T / d - n n^T / d).
  (Derivation: dn/dh = P/s - z (ds/dh)^T / s^2 with P = I - 1 1^T/d, ds/dh = P z/(d s) = z/(d s).)
* Affine: N(h) = gamma * n + beta, so J_N = diag(gamma) J.

Scale invariance (eps = 0): N(c h) = N(h) for c > 0, hence l(c h) = l(h), <h, grad l(h)> = 0
(Euler, degree 0), |h - eta g|^2 = |h|^2 + eta^2 |g|^2, grad l(c h) = grad l(h) / c.  Along an
inner-GD unroll a_{l+1} = a_l + eta_l^2 c_l^2 / a_l, so a_L^2 >= a_0^2 + 2 sum_l eta_l^2 c_l^2.
The sympy proofs are in :mod:`mechverify.theory.symbolic.meta_learning`.
"""

from __future__ import annotations

import numpy as np

from mechverify.theory.checks import check_array, check_real

NORMS = ("identity", "layernorm", "rmsnorm")


def _check_norm(norm: str, d: int, gamma, beta, eps) -> tuple:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    eps = check_real("eps", eps, nonnegative=True)
    if norm == "identity":
        if gamma is not None or beta is not None:
            raise ValueError("gamma and beta must be None for norm='identity'")
        return None, None, eps
    if norm == "layernorm" and d < 2:
        raise ValueError(f"h must have d >= 2 entries for norm='layernorm'; got d = {d}")
    gamma = None if gamma is None else check_array("gamma", gamma, shape=(d,))
    beta = None if beta is None else check_array("beta", beta, shape=(d,))
    return gamma, beta, eps


def _check_h(h) -> np.ndarray:
    h = check_array("h", h)
    if h.ndim < 1 or h.shape[-1] < 1:
        raise ValueError(f"h must have shape (..., d) with d >= 1; got {h.shape}")
    return h


def _standardise(h: np.ndarray, norm: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, scale): the normalised vector before the affine map, and r (RMS) or s (LN)."""
    if norm == "layernorm":
        h = h - h.mean(axis=-1, keepdims=True)
    scale = np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + eps)
    if np.any(scale == 0):
        raise ValueError(f"h must not be {'constant' if norm == 'layernorm' else 'zero'} "
                         f"for norm={norm!r} with eps = 0")
    return h / scale, scale


def normalise(h, norm: str = "identity", *, gamma=None, beta=None, eps: float = 0.0) -> np.ndarray:
    """N(h) for h of shape (..., d)."""
    h = _check_h(h)
    gamma, beta, eps = _check_norm(norm, h.shape[-1], gamma, beta, eps)
    if norm == "identity":
        return h.copy()
    n, _ = _standardise(h, norm, eps)
    if gamma is not None:
        n = n * gamma
    return n + beta if beta is not None else n


def norm_jacobian(h, norm: str = "identity", *, gamma=None, eps: float = 0.0) -> np.ndarray:
    """J_N(h) = dN/dh, shape (..., d, d) (row i = d N_i / dh); beta does not enter."""
    h = _check_h(h)
    d = h.shape[-1]
    gamma, _, eps = _check_norm(norm, d, gamma, None, eps)
    eye = np.eye(d)
    if norm == "identity":
        return np.broadcast_to(eye, h.shape + (d,)).copy()
    n, scale = _standardise(h, norm, eps)
    proj = eye - np.einsum("...i,...j->...ij", n, n) / d
    if norm == "layernorm":
        proj = proj - 1.0 / d
    J = proj / scale[..., None]
    return J * gamma[:, None] if gamma is not None else J


def _check_head(U, bias, y, batch_shape: tuple, d: int) -> tuple:
    U = check_array("U", U, ndim=2)
    if U.shape[1] != d or U.shape[0] < 1:
        raise ValueError(f"U must have shape (V, d) with V >= 1 and d = {d}; got {U.shape}")
    bias = None if bias is None else check_array("bias", bias, shape=(U.shape[0],))
    y_arr = np.asarray(y)
    if y_arr.dtype == bool or not np.issubdtype(y_arr.dtype, np.integer):
        raise TypeError(f"y must be an integer array; got dtype {y_arr.dtype}")
    if y_arr.shape != batch_shape:
        raise ValueError(f"y must have h's batch shape {batch_shape}; got {y_arr.shape}")
    if y_arr.size and (y_arr.min() < 0 or y_arr.max() >= U.shape[0]):
        raise ValueError(f"y must lie in [0, V) with V = {U.shape[0]}; got range [{y_arr.min()}, {y_arr.max()}]")
    return U, bias, y_arr.astype(np.int64)


def _log_probs(Nh: np.ndarray, U: np.ndarray, bias) -> np.ndarray:
    z = Nh @ U.T
    if bias is not None:
        z = z + bias
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def logit_lens_loss(h, U, y, norm: str = "identity", *, gamma=None, beta=None, bias=None,
                    eps: float = 0.0) -> np.ndarray:
    """l(h) = -log softmax(U N(h) + bias)_y for every vector of h (..., d): shape (...)."""
    Nh = normalise(h, norm, gamma=gamma, beta=beta, eps=eps)
    U, bias, y = _check_head(U, bias, y, Nh.shape[:-1], Nh.shape[-1])
    logp = _log_probs(Nh, U, bias)
    return -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]


def next_token_residual(h, U, y, norm: str = "identity", *, gamma=None, beta=None, bias=None,
                        eps: float = 0.0) -> np.ndarray:
    """p - e_y, shape (..., V): the loss gradient with respect to the logits."""
    Nh = normalise(h, norm, gamma=gamma, beta=beta, eps=eps)
    U, bias, y = _check_head(U, bias, y, Nh.shape[:-1], Nh.shape[-1])
    r = np.exp(_log_probs(Nh, U, bias))
    np.put_along_axis(r, y[..., None], np.take_along_axis(r, y[..., None], axis=-1) - 1.0, axis=-1)
    return r


def logit_lens_grad(h, U, y, norm: str = "identity", *, gamma=None, beta=None, bias=None,
                    eps: float = 0.0) -> np.ndarray:
    """grad_h l(h) = J_N(h)^T U^T (p - e_y), shape (..., d)."""
    r = next_token_residual(h, U, y, norm, gamma=gamma, beta=beta, bias=bias, eps=eps)
    J = norm_jacobian(h, norm, gamma=gamma, eps=eps)
    return np.einsum("...ij,...i->...j", J, r @ np.asarray(U, dtype=np.float64))


def unembed_grad(H, U, y, norm: str = "identity", *, gamma=None, beta=None, bias=None,
                 eps: float = 0.0) -> np.ndarray:
    """dL/dU for L = sum_t l_t over the vectors h_t of H (..., d): row v is
    sum_t (p_t(v) - 1[y_t = v]) N(h_t); shape (V, d)."""
    r = next_token_residual(H, U, y, norm, gamma=gamma, beta=beta, bias=bias, eps=eps)
    Nh = normalise(H, norm, gamma=gamma, beta=beta, eps=eps)
    d, V = Nh.shape[-1], r.shape[-1]
    return r.reshape(-1, V).T @ Nh.reshape(-1, d)


def inner_gd_unroll(h0, U, y, lrs, norm: str = "identity", *, gamma=None, beta=None, bias=None,
                    eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The pure inner-GD hypothesis of docs/meta_learning.md §3: h^(l+1) = h^(l) - lrs[l] grad l(h^(l)).

    Returns (states (L+1, ..., d), gradients (L, ..., d)) with L = len(lrs)."""
    h = _check_h(h0)
    lrs = check_array("lrs", lrs, ndim=1)
    if np.any(lrs < 0):
        raise ValueError("lrs must be >= 0")
    states, grads = [h], []
    for lr in lrs:
        g = logit_lens_grad(h, U, y, norm, gamma=gamma, beta=beta, bias=bias, eps=eps)
        h = h - lr * g
        states.append(h)
        grads.append(g)
    return np.stack(states), (np.stack(grads) if grads else np.zeros((0,) + h.shape))


def _check_recursion(a0, lrs, c) -> tuple:
    a0 = check_array("a0", a0)
    if np.any(a0 <= 0):
        raise ValueError("a0 must be > 0 (a squared norm)")
    lrs = check_array("lrs", lrs, ndim=1)
    c = check_array("c", c)
    if c.ndim < 1 or c.shape[0] != lrs.shape[0]:
        raise ValueError(f"c must have one leading entry per step ({lrs.shape[0]}); got shape {c.shape}")
    if np.any(c < 0):
        raise ValueError("c must be >= 0 (gradient norms)")
    return a0, lrs, c


def norm_recursion(a0, lrs, c) -> np.ndarray:
    """a_{l+1} = a_l + lrs[l]^2 c[l]^2 / a_l from a_0 = a0: shape (L+1, ...)."""
    a0, lrs, c = _check_recursion(a0, lrs, c)
    a = [a0]
    for lr, cl in zip(lrs, c):
        a.append(a[-1] + lr**2 * cl**2 / a[-1])
    return np.stack(a)


def quartic_lower_bound(a0, lrs, c) -> np.ndarray:
    """a_0^2 + 2 sum_l lrs[l]^2 c[l]^2, the lower bound on a_L^2 of docs/meta_learning.md §5."""
    a0, lrs, c = _check_recursion(a0, lrs, c)
    return a0**2 + 2.0 * np.sum((lrs**2).reshape((-1,) + (1,) * (c.ndim - 1)) * c**2, axis=0)
