"""Closed forms of the reduced staged-learning model (docs/markov.md §4) [reconstructed].

sympy.  Reduced model (see :mod:`mechverify.theory.dynamics.markov`): H heads, values v_h ∈ R^K,
attentions s_h ∈ Δ^{T-1}, target G ∈ R^{K x T} with G[k, j] = μ_k α_j 1[j ∈ I(k)];
loss L = ½‖G − Σ_h v_h s_hᵀ‖_F².

* Block energies e_k = μ_k² ‖α_{I(k)}‖² (= ‖G[k]‖²).
* Ladder saddle k (heads on the k highest-energy blocks, each fitted exactly):
  L_k = ½ Σ_{l>k} e_(l), energies sorted decreasingly.
* Single head, fixed s: v*(s) = G s/‖s‖², L(s) = ½(‖G‖² − ‖Gs‖²/‖s‖²); by Cauchy–Schwarz
  ‖Gs‖²/‖s‖² <= max_k e_k on simplex vectors supported in one block, so the optimum puts
  s ∝ α on the block of largest energy.
* Symmetric reduction: at identical heads (v_h = v/H, s_h = s) every head's time derivative
  is the same, so the symmetric subspace is invariant.
* Logit flow chain rule: s = softmax(a), ȧ = −∂L/∂a = J(s) Rᵀv with J = diag(s) − s sᵀ,
  hence ṡ = J ȧ = J² Rᵀ v.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from mechverify.theory.checks import check_array, check_int

__all__ = ["block_energy", "ladder_losses", "single_head_residuals",
           "single_head_optimum", "symmetric_reduction_residual", "logit_chain_rule_residual"]


def block_energy(mu, alpha) -> sp.Expr:
    """e = μ² Σ α_j² (sympy)."""
    return sp.nsimplify(mu) ** 2 * sum(sp.nsimplify(a) ** 2 for a in alpha)


def _supports(G: np.ndarray) -> list[set]:
    sup = [set(np.nonzero(row)[0].tolist()) for row in G]
    for k in range(len(sup)):
        for l in range(k):
            if sup[k] & sup[l]:
                raise ValueError(f"G rows {l} and {k} share positions {sorted(sup[k] & sup[l])}; "
                                 "blocks must be disjoint")
    return sup


def ladder_losses(G) -> list[float]:
    """[L_0, ..., L_K] for the target G (K x T, rows with disjoint supports), computed exactly
    in rational arithmetic from the entries of G and returned as floats."""
    G = check_array("G", G, ndim=2)
    if G.shape[0] < 1 or G.shape[1] < 1:
        raise ValueError(f"G must be K x T with K, T >= 1; got {G.shape}")
    _supports(G)
    e = [sum(sp.Rational(float(x)) ** 2 for x in row) for row in G]
    e = sorted(e, reverse=True)
    return [float(sp.Rational(1, 2) * sum(e[k:], sp.Integer(0))) for k in range(len(e) + 1)]


def single_head_residuals(K: int, T: int) -> tuple[sp.Expr, sp.Expr]:
    """For symbolic G (K x T) and s (T): the pair
    (‖∂L/∂v at v*(s)‖², L(v*(s), s) − ½(‖G‖² − ‖Gs‖²/‖s‖²)), both simplified; zero
    proves the single-head optimum formulas."""
    K, T = check_int("K", K), check_int("T", T)
    G = sp.Matrix(K, T, lambda i, j: sp.Symbol(f"g{i}_{j}", real=True))
    s = sp.Matrix(T, 1, lambda j, _: sp.Symbol(f"s{j}", positive=True))
    v = sp.Matrix(K, 1, lambda i, _: sp.Symbol(f"v{i}", real=True))
    R = G - v * s.T
    L = sp.Rational(1, 2) * sum(x ** 2 for x in R)
    ss = (s.T * s)[0]
    vstar = G * s / ss
    grad = sp.Matrix([sp.diff(L, x) for x in v]).subs(dict(zip(v, vstar)))
    Lstar = L.subs(dict(zip(v, vstar)))
    closed = sp.Rational(1, 2) * (sum(x ** 2 for x in G) - (G * s).dot(G * s) / ss)
    return sp.simplify(grad.dot(grad)), sp.simplify(Lstar - closed)


def single_head_optimum(G) -> tuple[int, np.ndarray, float]:
    """(block k*, attention s*, loss) of the best single head on a simplex-supported block:
    k* = argmax energy, s* ∝ α (the row of G restricted to I(k*), normalised), loss
    ½(Σ e_l − e_{k*})."""
    G = check_array("G", G, ndim=2)
    _supports(G)
    e = np.sum(G ** 2, axis=1)
    k = int(np.argmax(e))
    s = np.abs(G[k]) / np.abs(G[k]).sum()
    return k, s, 0.5 * float(e.sum() - e[k])


def _rhs_sym(G, V, S, flow: str):
    R = G - sum((V[h] * S[h].T for h in range(len(V))), sp.zeros(*G.shape))
    out = []
    for v, s in zip(V, S):
        g = R.T * v
        J = sp.diag(*s) - s * s.T
        out.append((R * s, (J * J if flow == "logit" else J) * g))
    return out


def symmetric_reduction_residual(K: int, T: int, H: int, flow: str = "replicator") -> sp.Expr:
    """At v_h = v/H, s_h = s (symbolic G, v, s): the squared distance between the H-head
    right-hand side and the reduced one-head system with value v = Σ_h v_h,
    v̇ = H (G − v sᵀ) s, ṡ = J(s)^q (G − v sᵀ)ᵀ v / H (q = 1 replicator, 2 logit), summed over
    heads (each head's ṡ_h and v̇_h = v̇/H).  Simplifies to 0: identical heads stay identical and
    move as one head carrying the summed value."""
    K, T, H = check_int("K", K), check_int("T", T), check_int("H", H)
    if flow not in ("replicator", "logit"):
        raise ValueError(f"flow must be 'replicator' or 'logit'; got {flow!r}")
    G = sp.Matrix(K, T, lambda i, j: sp.Symbol(f"g{i}_{j}", real=True))
    s = sp.Matrix(T, 1, lambda j, _: sp.Symbol(f"s{j}", positive=True))
    v = sp.Matrix(K, 1, lambda i, _: sp.Symbol(f"v{i}", real=True))
    R1 = G - v * s.T
    J = sp.diag(*s) - s * s.T
    vdot = H * R1 * s
    sdot = (J * J if flow == "logit" else J) * R1.T * v / H
    diff = sp.Integer(0)
    for dv, ds in _rhs_sym(G, [v / H] * H, [s] * H, flow):
        diff += (dv - vdot / H).dot(dv - vdot / H) + (ds - sdot).dot(ds - sdot)
    return sp.expand(diff)


def logit_chain_rule_residual(K: int, T: int) -> tuple[sp.Expr, sp.Expr]:
    """Two symbolic residuals, both 0: (i) the softmax Jacobian ∂s_j/∂a_i − J_ji summed in
    square over i, j (s = softmax(a)); (ii) for free symbols s (any point), ‖−∂L/∂s − Rᵀv‖²,
    so −∂L/∂a = Jᵀ(−∂L/∂s) = J Rᵀ v and ṡ = J ȧ = J² Rᵀ v (the logit flow is gradient flow on
    the logits a)."""
    K, T = check_int("K", K), check_int("T", T)
    a = sp.symbols(f"a0:{T}", real=True)
    Z = sum(sp.exp(x) for x in a)
    soft = [sp.exp(x) / Z for x in a]
    r1 = sp.Integer(0)
    for j in range(T):
        for i in range(T):
            Jji = soft[j] * ((1 if i == j else 0) - soft[i])
            r1 += sp.simplify(sp.diff(soft[j], a[i]) - Jji) ** 2
    G = sp.Matrix(K, T, lambda i, j: sp.Symbol(f"g{i}_{j}", real=True))
    s = sp.Matrix(T, 1, lambda j, _: sp.Symbol(f"s{j}", positive=True))
    v = sp.Matrix(K, 1, lambda i, _: sp.Symbol(f"v{i}", real=True))
    R = G - v * s.T
    L = sp.Rational(1, 2) * sum(x ** 2 for x in R)
    diff = sp.Matrix([-sp.diff(L, x) for x in s]) - R.T * v
    return sp.simplify(r1), sp.expand(diff.dot(diff))
