"""Sympy derivations behind the norm-growth reading of the inner optimisation [reconstructed].

Our **reconstruction** (docs/meta_learning.md §4-§5) of what Wu & Varshney (2024)
may prove about "the norms of learned token representations"; not the paper's statements.
Each function returns a residual that must simplify to 0 (a matrix of zeros, or 0):

* :func:`euler_residual` - <h, grad l(h)> for l = -log softmax(z(h))_y whose logits
  z_k = G_k(h / |h|) are *arbitrary* (undefined) functions of the direction of h: any
  degree-0 homogeneous logit map (LayerNorm or RMSNorm followed by U, with or without
  affine) makes the inner gradient orthogonal to h (Euler's theorem).
* :func:`growth_residual` - |h - eta g|^2 - |h|^2 - eta^2 |g|^2 + 2 eta <h, g>: with the
  Euler identity, |h - eta g|^2 = |h|^2 + eta^2 |g|^2 (docs/meta_learning.md §4 item 3).
* :func:`inverse_norm_residual` - grad l(c h) - grad l(h) / c for the same general l (§4 item 4).
* :func:`scale_invariance_residual` - N(c h) - N(h) for the concrete norms (eps = 0, affine
  optional).
* :func:`jacobian_residual` - sympy ``jacobian`` of the concrete norm minus the closed form
  of :mod:`mechverify.theory.algorithms.inner_loss` (§4 item 5), written out symbolically.
* :func:`logit_grad_residual` - grad_h [-log softmax(U h)_y] - U^T (p - e_y) (§4 item 1).
* :func:`quartic_residual` - a_{l+1}^2 - a_l^2 - 2 eta^2 c^2 - eta^4 c^4 / a_l^2 for
  a_{l+1} = a_l + eta^2 c^2 / a_l (§5): the dropped term is >= 0, hence the bound.

Sizes are small (d, V <= 3): the residuals are simplified, which is slow for larger sizes.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from mechverify.theory.checks import check_int

NORMS = ("layernorm", "rmsnorm")


def _vector(name: str, d: int) -> sp.Matrix:
    return sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"{name}{i}", real=True))


def _general_loss(d: int, V: int, y: int):
    """(h, l): l = -log softmax(G(h/|h|))_y with V undefined functions G_k of d arguments."""
    d, V = check_int("d", d), check_int("V", V, minimum=2)
    y = check_int("y", y, minimum=0)
    if y >= V:
        raise ValueError(f"y must be < V = {V}; got {y}")
    h = _vector("h", d)
    direction = list(h / sp.sqrt((h.T * h)[0]))
    z = [sp.Function(f"G{k}")(*direction) for k in range(V)]
    return h, -z[y] + sp.log(sum(sp.exp(zk) for zk in z))


def _gradient(expr, h: sp.Matrix) -> sp.Matrix:
    return sp.Matrix([sp.diff(expr, hi) for hi in h])


@cache
def euler_residual(d: int = 2, V: int = 2, y: int = 0):
    """<h, grad l(h)> for a general degree-0 logit map, simplified (must be 0)."""
    h, loss = _general_loss(d, V, y)
    return sp.simplify((h.T * _gradient(loss, h))[0])


@cache
def growth_residual(d: int = 2):
    """|h - eta g|^2 - |h|^2 - eta^2 |g|^2 + 2 eta <h, g> for symbolic h, g, eta (must be 0)."""
    d = check_int("d", d)
    h, g, eta = _vector("h", d), _vector("g", d), sp.Symbol("eta", real=True)
    sq = lambda v: (v.T * v)[0]
    return sp.expand(sq(h - eta * g) - sq(h) - eta**2 * sq(g) + 2 * eta * (h.T * g)[0])


@cache
def inverse_norm_residual(d: int = 2, V: int = 2, y: int = 0) -> sp.Matrix:
    """grad l(c h) - grad l(h) / c for a general degree-0 logit map, c > 0 (must be 0)."""
    h, loss = _general_loss(d, V, y)
    c = sp.Symbol("c", positive=True)
    grad = _gradient(loss, h)
    at_ch = grad.subs({hi: c * hi for hi in h}, simultaneous=True)
    return sp.simplify(at_ch - grad / c)


def _norm_expr(h: sp.Matrix, norm: str, affine: bool) -> sp.Matrix:
    d = h.shape[0]
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    z = h - sp.ones(d, 1) * sum(h) / d if norm == "layernorm" else h
    n = z / sp.sqrt((z.T * z)[0] / d)
    if affine:
        gamma, beta = _vector("gamma", d), _vector("beta", d)
        n = sp.diag(*gamma) * n + beta
    return n


@cache
def scale_invariance_residual(d: int = 3, norm: str = "layernorm", affine: bool = True) -> sp.Matrix:
    """N(c h) - N(h), c > 0, eps = 0 (must be the zero vector)."""
    h = _vector("h", check_int("d", d, minimum=2))
    c = sp.Symbol("c", positive=True)
    N = _norm_expr(h, norm, affine)
    return sp.simplify(N.subs({hi: c * hi for hi in h}, simultaneous=True) - N)


@cache
def jacobian_residual(d: int = 3, norm: str = "rmsnorm", affine: bool = False) -> sp.Matrix:
    """``jacobian`` of N minus diag(gamma) (1/s) (I - [1 1^T/d] - n n^T / d) (must be 0)."""
    d = check_int("d", d, minimum=2)
    h = _vector("h", d)
    N = _norm_expr(h, norm, affine)
    z = h - sp.ones(d, 1) * sum(h) / d if norm == "layernorm" else h
    s = sp.sqrt((z.T * z)[0] / d)
    n = z / s
    proj = sp.eye(d) - n * n.T / d
    if norm == "layernorm":
        proj = proj - sp.ones(d, d) / d
    closed = proj / s
    if affine:
        closed = sp.diag(*_vector("gamma", d)) * closed
    return sp.simplify(N.jacobian(list(h)) - closed)


@cache
def logit_grad_residual(d: int = 2, V: int = 3, y: int = 0) -> sp.Matrix:
    """grad_h [-log softmax(U h)_y] - U^T (p - e_y) for symbolic U (V x d), h (must be 0)."""
    d, V = check_int("d", d), check_int("V", V, minimum=2)
    y = check_int("y", y, minimum=0)
    if y >= V:
        raise ValueError(f"y must be < V = {V}; got {y}")
    h = _vector("h", d)
    U = sp.Matrix(V, d, lambda i, j: sp.Symbol(f"u{i}_{j}", real=True))
    z = U * h
    Z = sum(sp.exp(zk) for zk in z)
    loss = -z[y] + sp.log(Z)
    p = sp.Matrix([sp.exp(zk) / Z for zk in z])
    e = sp.Matrix([1 if k == y else 0 for k in range(V)])
    return sp.simplify(_gradient(loss, h) - U.T * (p - e))


@cache
def quartic_residual():
    """a_{l+1}^2 - a_l^2 - 2 eta^2 c^2 - eta^4 c^4 / a_l^2 with a_{l+1} = a_l + eta^2 c^2 / a_l
    (must be 0); the omitted eta^4 c^4 / a_l^2 >= 0 gives a_L^2 >= a_0^2 + 2 sum eta_l^2 c_l^2."""
    a, eta, c = sp.symbols("a eta c", positive=True)
    nxt = a + eta**2 * c**2 / a
    return sp.simplify(nxt**2 - a**2 - 2 * eta**2 * c**2 - eta**4 * c**4 / a**2)
