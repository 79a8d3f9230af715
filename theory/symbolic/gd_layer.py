"""Symbolic proof that one linear-attention layer with von Oswald's weights is one GD step.

docs/gd_icl.md §3.1 / §4.1 [reconstructed]; sympy only (the layer is written here from
its formula, independently of ``constructions/``).

Notation (paper -> code)
========================

======================  ===============  =============================================
paper                   code             meaning
======================  ===============  =============================================
e_j = (x_j, y_j)        ``z[:, j]``      token j, a column of Z ∈ R^{(d+1) x (n+1)}
x_q, query              ``z[:, n]``      last column, its y-slot starts at 0
W_K, W_Q (merged)       ``W_KQ``         [[I_d, 0], [0, 0]]
P W_V (merged)          ``W_PV``         η [[0, 0], [w_0ᵀ, −1]]
η, w_0                  ``eta``, ``w0``  step size, starting weights
======================  ===============  =============================================

Layer (our convention): every token t, context or query, is updated from the n context
tokens only,

    z_t ← z_t + (1/n) Σ_{j=1}^{n} W^PV z_j (z_jᵀ W^KQ z_t).

Why it is a GD step: z_jᵀ W^KQ z_t = <x_j, x_t> and W^PV z_j = η (0, <w_0, x_j> − y_j), so
the x-slots do not move and

    y_t ← y_t + (η/n) Σ_j (<w_0, x_j> − y_j) <x_j, x_t> = y_t + η <∇L(w_0), x_t>
        = y_t − <Δw, x_t>,   Δw = −η ∇L(w_0),  L(w) = (1/2n) Σ_j (<w, x_j> − y_j)².

:func:`gd_layer_difference` expands the layer with every entry symbolic and returns the
difference from that right-hand side for every slot of every token; it simplifies to the
zero matrix.
"""

from __future__ import annotations

import sympy as sp

from mechverify.theory.checks import check_int

__all__ = ["gd_layer_symbols", "lsa_layer", "vo_weights", "gd_step_target", "gd_layer_difference"]


def gd_layer_symbols(d: int, n: int) -> dict:
    """Symbols: x_{ij} (context), xq_i (query), y_j, w0_i, eta, for dimension d, n examples."""
    d = check_int("d", d)
    n = check_int("n", n)
    X = sp.Matrix(d, n, lambda i, j: sp.Symbol(f"x_{i + 1}_{j + 1}", real=True))
    xq = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"xq_{i + 1}", real=True))
    y = sp.Matrix(1, n, lambda _, j: sp.Symbol(f"y_{j + 1}", real=True))
    w0 = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"w0_{i + 1}", real=True))
    eta = sp.Symbol("eta", positive=True)
    return {"X": X, "x_query": xq, "y": y, "w0": w0, "eta": eta}


def vo_weights(w0: sp.Matrix, eta) -> tuple[sp.Matrix, sp.Matrix]:
    """W^KQ = [[I_d, 0], [0, 0]] and W^PV = η [[0, 0], [w_0ᵀ, −1]] as sympy matrices."""
    if not isinstance(w0, sp.MatrixBase) or w0.shape[1] != 1:
        raise ValueError(f"w0 must be a sympy column vector (d, 1); got {getattr(w0, 'shape', type(w0))}")
    d = w0.shape[0]
    W_KQ = sp.diag(sp.eye(d), sp.zeros(1, 1))
    W_PV = sp.zeros(d + 1, d + 1)
    W_PV[d, :d] = eta * w0.T
    W_PV[d, d] = -eta
    return W_KQ, W_PV


def lsa_layer(Z: sp.Matrix, W_KQ: sp.Matrix, W_PV: sp.Matrix, n: int) -> sp.Matrix:
    """z_t ← z_t + (1/n) Σ_{j<n} W^PV z_j (z_jᵀ W^KQ z_t) for every column t of Z.

    The first ``n`` columns of Z are the context (keys and values); every column is updated.
    """
    n = check_int("n", n)
    if not isinstance(Z, sp.MatrixBase) or Z.shape[1] < n:
        raise ValueError(f"Z must be a sympy matrix with at least n = {n} columns")
    D = Z.shape[0]
    if W_KQ.shape != (D, D) or W_PV.shape != (D, D):
        raise ValueError(f"W_KQ and W_PV must have shape ({D}, {D}); got {W_KQ.shape}, {W_PV.shape}")
    out = Z.copy()
    for t in range(Z.shape[1]):
        update = sp.zeros(D, 1)
        for j in range(n):
            score = (Z[:, j].T * W_KQ * Z[:, t])[0, 0]
            update += W_PV * Z[:, j] * score
        out[:, t] = Z[:, t] + update / n
    return out


def gd_step_target(X: sp.Matrix, y: sp.Matrix, x_query: sp.Matrix, w0: sp.Matrix, eta) -> sp.Matrix:
    """The tokens after one GD step, written from the GD formula (x-slots unchanged).

    Context y_j − <Δw, x_j>, query 0 − <Δw, x_q>, Δw = −η ∇L(w_0),
    ∇L(w_0) = (1/n) Σ_j (<w_0, x_j> − y_j) x_j.
    """
    d, n = X.shape
    grad = sp.zeros(d, 1)
    for j in range(n):
        grad += ((w0.T * X[:, j])[0, 0] - y[0, j]) * X[:, j]
    grad = grad / n
    delta_w = -eta * grad
    Xall = X.row_join(x_query)
    yall = y.row_join(sp.zeros(1, 1))
    new_y = sp.Matrix(1, n + 1, lambda _, t: yall[0, t] - (delta_w.T * Xall[:, t])[0, 0])
    return Xall.col_join(new_y)


def gd_layer_difference(d: int = 2, n: int = 3) -> sp.Matrix:
    """Layer output minus the GD-step target, every entry expanded: the zero matrix proves it."""
    s = gd_layer_symbols(d, n)
    Z = s["X"].row_join(s["x_query"]).col_join(s["y"].row_join(sp.zeros(1, 1)))
    W_KQ, W_PV = vo_weights(s["w0"], s["eta"])
    out = lsa_layer(Z, W_KQ, W_PV, n)
    target = gd_step_target(s["X"], s["y"], s["x_query"], s["w0"], s["eta"])
    return (out - target).applyfunc(sp.expand)
