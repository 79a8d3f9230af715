"""Closed forms for one linear self-attention (LSA) layer on in-context linear regression.

Zhang, Frei & Bartlett (ZFB, 2024) and Ahn et al. (2023); docs/gd_icl.md §4.1–4.2.
numpy for the numbers, sympy for the proofs; no torch.

Notation (paper -> code)
========================

===========================  ==============================  ===========================
paper                        code                            meaning
===========================  ==============================  ===========================
Λ (ZFB), Σ (Ahn)             ``Lam`` / ``lam`` / ``Sigma``   covariance of x (SPD, d x d)
N (ZFB), n (Ahn)             ``N`` / ``n``                   prompt length the layer is fitted to
M                            ``M``                           prompt length at test time
σ                            ``noise``                       label-noise standard deviation
u · W^{KQ}_{11}, A           ``G`` / ``A``                   merged parameter / preconditioner
Γ                            ``zfb_gamma(...)``              (1+1/N)Λ + ((tr Λ + σ²)/N) I
M_Γ                          same as Γ                       matrix in the gradient −2Λ(I − G M_Γ)Λ
h                            —                               (1/M) Σ_i y_i x_i
===========================  ==============================  ===========================

The model and its risk (our derivation, [reconstructed])
========================================================

A test prompt holds M pairs (x_i, y_i) and a query x_q, with x ~ N(0, Λ), w ~ N(0, I_d),
y_i = <w, x_i> + σ ε_i.  The one-layer LSA prediction with the ZFB structured weights is
ŷ = x_qᵀ G h with h = (1/M) Σ_i y_i x_i; one preconditioned GD step from w = 0 on
L(w) = (1/2M) Σ_i (<w, x_i> − y_i)² gives the same ŷ with A = G (Ahn).

We take the risk against the noise-free target (the query's label noise only adds σ²):

    R(G) = E (ŷ − <w, x_q>)² = E (Gh − w)ᵀ Λ (Gh − w)          (x_q independent of h, w)
         = tr Λ − 2 E[wᵀ Λ G h] + tr(Gᵀ Λ G E[h hᵀ]).

* E[wᵀΛw] = tr Λ because E[w wᵀ] = I.
* E[h | w] = E[x xᵀ] w = Λ w, so E[wᵀ Λ G h] = E[wᵀ Λ G Λ w] = tr(Λ G Λ) = tr(G Λ²).
* E[h hᵀ] = (1/M²) Σ_{i,j} E[y_i y_j x_i x_jᵀ].  For i ≠ j the pairs are independent given w:
  E[Λ w wᵀ Λ] = Λ².  For i = j, Isserlis' theorem gives E[(xᵀw)² x xᵀ | w] = (wᵀΛw) Λ +
  2 Λ w wᵀ Λ, whose mean over w is (tr Λ) Λ + 2Λ²; the noise adds σ² Λ.  Hence
  K_M := E[h hᵀ] = ((M−1)/M) Λ² + (1/M)((tr Λ + σ²) Λ + 2Λ²)
       = (1 + 1/M) Λ² + ((tr Λ + σ²)/M) Λ.

So   R(G; Λ, M, σ) = tr Λ − 2 tr(G Λ²) + tr(Gᵀ Λ G K_M),     K_M = Λ Γ_M = Γ_M Λ,

with Γ_M = (1 + 1/M) Λ + ((tr Λ + σ²)/M) I.  For every G (not only symmetric ones, not only
ones commuting with Λ) R is a convex quadratic in G with gradient

    ∇_G R = −2 Λ² + 2 Λ G K_M = −2 Λ (I − G Γ_M) Λ,

which vanishes exactly at G = Γ_M⁻¹ (Λ and K_M are SPD, so the minimiser is unique).  With
M = N this is ZFB's global minimum Γ⁻¹ (noise adds σ²/N to the trace term).  The Hessian
quadratic form is 2 tr(Δᵀ Λ Δ K_M) > 0 for Δ ≠ 0, hence every perturbation of Γ⁻¹
strictly increases R:  R(Γ⁻¹ + Δ) − R(Γ⁻¹) = tr(Δᵀ Λ Δ K_N).

For diagonal Λ = diag(λ_k) and M = N, with T = tr Λ + σ², m_k = (1+1/N)λ_k + T/N,

    R(Γ⁻¹) = Σ_k λ_k (1 − λ_k/m_k) = Σ_k λ_k (λ_k + T) / ((N+1) λ_k + T),

which for Λ = I_d, σ = 0 is d(d+1)/(N+d+1).  For M → ∞ (K → Λ²) at G = Γ⁻¹ (fitted to N),

    R_∞ = Σ_k λ_k (1 − λ_k/m_k)² = Σ_k λ_k (λ_k + T)² / ((N+1) λ_k + T)²,

positive and O(1/N²): N² R_∞ < Σ_k (λ_k + T)² / λ_k for every N ≥ 1 (since (N+1)λ_k + T > Nλ_k).

Single-layer optimum of Ahn et al. (docs/gd_icl.md §4.1)
==============================================

* w ~ N(0, I): the risk above with M = n; A* = Γ⁻¹.
* w ~ N(0, Σ⁻¹): E[w wᵀ] = Σ⁻¹ changes the three terms to E[wᵀΣw] = d, E[wᵀΣ A h] = tr(AΣ)
  and E[h hᵀ] = ((n−1)/n) Σ + ((d + 2 + σ²)/n) Σ = c⁻¹ Σ with c = n/(n+d+1+σ²), so
  R(A) = d − 2 tr(AΣ) + c⁻¹ tr(AᵀΣAΣ), minimised by A* = c Σ⁻¹ with R* = d(1 − c)
  = d(d+1+σ²)/(n+d+1+σ²); for σ = 0: A* = (n/(n+d+1)) Σ⁻¹, R* = d(d+1)/(n+d+1).

Best single GD step (isotropic)
===============================

For x ~ N(0, I_d), one GD step of size η from w = 0 predicts ŷ = η x_qᵀ h, i.e. G = η I:
R(η) = d − 2ηd + η² d (n + 1 + d + σ²)/n, minimised by η* = n/(n + d + 1 + σ²)
(derived with sympy in :func:`best_one_step_lr_expr`).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import sympy as sp

from mechverify.theory.checks import check_array, check_int, check_real, check_spd

PRIORS = ("isotropic", "inverse_cov")

__all__ = [
    "zfb_gamma", "zfb_risk", "zfb_risk_gradient", "zfb_long_prompt_floor", "zfb_floor_bound",
    "best_one_step_lr", "ahn_optimum", "ahn_risk", "ahn_inverse_prior_min_risk",
    "zfb_risk_expr", "isotropic_risk_difference", "diagonal_risk_difference",
    "long_prompt_limit", "long_prompt_bound_gap", "stationarity_residual", "gradient_formula_residual",
    "best_one_step_lr_expr",
]


# ----------------------------------------------------------------------------------------
# numeric (numpy)
# ----------------------------------------------------------------------------------------

def _covariance(name: str, value, d: int | None = None) -> np.ndarray:
    """A covariance given as a positive diagonal vector (d,) or an SPD matrix (d, d)."""
    arr = check_array(name, value)
    if arr.ndim == 1:
        if arr.size < 1:
            raise ValueError(f"{name} must hold at least one eigenvalue; got shape {arr.shape}")
        if np.any(arr <= 0):
            raise ValueError(f"{name} (diagonal) must be > 0 entrywise; smallest entry {arr.min():.3g}")
        arr = np.diag(arr)
    elif arr.ndim != 2:
        raise ValueError(f"{name} must be a diagonal vector (d,) or a matrix (d, d); got shape {arr.shape}")
    return check_spd(name, arr, d)


def _length(name: str, value, allow_inf: bool = False) -> float:
    """A prompt length: an integer >= 1 (or math.inf when allowed)."""
    if allow_inf:
        if isinstance(value, float) and math.isinf(value) and value > 0:
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise (ValueError if isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                   else TypeError)(f"{name} must be an integer >= 1 or math.inf; got {value!r}")
    return float(check_int(name, value))


def zfb_gamma(lam, N: int, noise: float = 0.0) -> np.ndarray:
    """Γ = (1 + 1/N) Λ + ((tr Λ + σ²)/N) I_d  (ZFB's optimum is Γ⁻¹).

    ``lam``: diagonal of Λ (d,) or Λ itself (d, d), SPD; ``N``: training prompt length;
    ``noise``: label-noise standard deviation σ.
    """
    Lam = _covariance("lam", lam)
    N = _length("N", N)
    noise = check_real("noise", noise, nonnegative=True)
    d = Lam.shape[0]
    return (1.0 + 1.0 / N) * Lam + ((np.trace(Lam) + noise**2) / N) * np.eye(d)


def _second_moment(Lam: np.ndarray, M: float, noise: float) -> np.ndarray:
    """K_M = E[h hᵀ] = (1 + 1/M) Λ² + ((tr Λ + σ²)/M) Λ  (M may be inf)."""
    inv = 0.0 if math.isinf(M) else 1.0 / M
    return (1.0 + inv) * (Lam @ Lam) + (np.trace(Lam) + noise**2) * inv * Lam


def _check_G(G, d: int) -> np.ndarray:
    return check_array("G", G, shape=(d, d))


def zfb_risk(G, Lam, M, noise: float = 0.0) -> float:
    """R(G; Λ, M, σ) = tr Λ − 2 tr(GΛ²) + tr(Gᵀ Λ G K_M) (see the module docstring).

    The risk E(x_qᵀ G h − <w, x_q>)² of the prediction on a test prompt of length ``M``
    (an integer >= 1, or ``math.inf``) against the noise-free target; ``G`` any (d, d)
    matrix; ``Lam`` SPD (d, d) or its diagonal (d,).
    """
    Lam = _covariance("Lam", Lam)
    d = Lam.shape[0]
    G = _check_G(G, d)
    M = _length("M", M, allow_inf=True)
    noise = check_real("noise", noise, nonnegative=True)
    K = _second_moment(Lam, M, noise)
    return float(np.trace(Lam) - 2.0 * np.sum(G * (Lam @ Lam).T) + np.sum((Lam @ G) * (G @ K)))


def zfb_risk_gradient(G, Lam, N: int, noise: float = 0.0) -> np.ndarray:
    """∇_G R(G; Λ, N, σ) = −2 Λ (I − G M_Γ) Λ, M_Γ = Γ = (1+1/N)Λ + ((tr Λ + σ²)/N) I."""
    Lam = _covariance("Lam", Lam)
    d = Lam.shape[0]
    G = _check_G(G, d)
    M_gamma = zfb_gamma(Lam, N, noise)
    return -2.0 * Lam @ (np.eye(d) - G @ M_gamma) @ Lam


def zfb_long_prompt_floor(lam, N: int, noise: float = 0.0) -> float:
    """lim_{M→∞} R(Γ⁻¹; Λ, M) for diagonal Λ = diag(lam): Σ_k λ_k (λ_k+T)²/((N+1)λ_k+T)²."""
    lam = check_array("lam", lam, ndim=1)
    if lam.size < 1 or np.any(lam <= 0):
        raise ValueError("lam must be a non-empty vector of positive eigenvalues")
    N = check_int("N", N)
    noise = check_real("noise", noise, nonnegative=True)
    T = lam.sum() + noise**2
    return float(np.sum(lam * (lam + T) ** 2 / ((N + 1) * lam + T) ** 2))


def zfb_floor_bound(lam, noise: float = 0.0) -> float:
    """Σ_k (λ_k + T)²/λ_k, T = Σ λ + σ²: a strict upper bound on N² · R_∞ for every N >= 1."""
    lam = check_array("lam", lam, ndim=1)
    if lam.size < 1 or np.any(lam <= 0):
        raise ValueError("lam must be a non-empty vector of positive eigenvalues")
    noise = check_real("noise", noise, nonnegative=True)
    T = lam.sum() + noise**2
    return float(np.sum((lam + T) ** 2 / lam))


def best_one_step_lr(d: int, n: int, noise: float = 0.0) -> float:
    """η* minimising the risk of one GD step from 0 (x ~ N(0, I_d), w ~ N(0, I), σ = noise).

    Evaluates the sympy-derived :func:`best_one_step_lr_expr` (= n/(n+d+1+σ²)).
    """
    d = check_int("d", d)
    n = check_int("n", n)
    noise = check_real("noise", noise, nonnegative=True)
    return float(_best_one_step_lr_numeric()(d, n, noise))


def _ahn_args(Sigma, n, noise, prior) -> tuple[np.ndarray, int, float]:
    """Validated (Sigma, n, noise) of the Ahn single-layer functions."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}; got {prior!r}")
    return _covariance("Sigma", Sigma), check_int("n", n), check_real("noise", noise, nonnegative=True)


def ahn_optimum(Sigma, n: int, noise: float = 0.0, prior: str = "isotropic") -> np.ndarray:
    """The single-layer optimum A* of ŷ = x_qᵀ A (1/n) Σ_i y_i x_i (Ahn et al.; docs/gd_icl.md §4.1).

    ``prior="isotropic"`` (w ~ N(0, I)): A* = ((1+1/n)Σ + ((tr Σ + σ²)/n) I)⁻¹ = Γ⁻¹.
    ``prior="inverse_cov"`` (w ~ N(0, Σ⁻¹)): A* = (n/(n+d+1+σ²)) Σ⁻¹.
    """
    Sigma, n, noise = _ahn_args(Sigma, n, noise, prior)
    d = Sigma.shape[0]
    if prior == "isotropic":
        A = np.linalg.inv(zfb_gamma(Sigma, n, noise))
    else:
        A = (n / (n + d + 1 + noise**2)) * np.linalg.inv(Sigma)
    return 0.5 * (A + A.T)


def ahn_risk(A, Sigma, n: int, noise: float = 0.0, prior: str = "isotropic") -> float:
    """Closed-form risk E(x_qᵀ A h − <w, x_q>)² of a single layer with preconditioner A.

    ``prior="isotropic"``: :func:`zfb_risk` with M = n.  ``prior="inverse_cov"``:
    d − 2 tr(AΣ) + ((n+d+1+σ²)/n) tr(AᵀΣAΣ).
    """
    Sigma, n, noise = _ahn_args(Sigma, n, noise, prior)
    d = Sigma.shape[0]
    A = check_array("A", A, shape=(d, d))
    if prior == "isotropic":
        return zfb_risk(A, Sigma, n, noise)
    k = (n + d + 1 + noise**2) / n
    return float(d - 2.0 * np.sum(A * Sigma.T) + k * np.sum((Sigma @ A) * (A @ Sigma)))


def ahn_inverse_prior_min_risk(d: int, n: int, noise: float = 0.0) -> float:
    """Minimal risk under w ~ N(0, Σ⁻¹): d(d+1+σ²)/(n+d+1+σ²) (σ = 0: d(d+1)/(n+d+1))."""
    d = check_int("d", d)
    n = check_int("n", n)
    noise = check_real("noise", noise, nonnegative=True)
    return d * (d + 1 + noise**2) / (n + d + 1 + noise**2)


# ----------------------------------------------------------------------------------------
# symbolic (sympy): each function returns an expression that must simplify to 0
# ----------------------------------------------------------------------------------------

def _check_symbolic_dim(d) -> int:
    d = check_int("d", d)
    if d > 4:
        raise ValueError(f"d must be <= 4 for the symbolic checks (expression swell); got {d}")
    return d


def _risk_matrix(G: sp.Matrix, Lam: sp.Matrix, M, noise=0) -> sp.Matrix:
    """Λ − 2GΛ² + GᵀΛG K_M: the matrix whose trace is R(G; Λ, M, σ)."""
    if not isinstance(G, sp.MatrixBase) or not isinstance(Lam, sp.MatrixBase):
        raise TypeError("G and Lam must be sympy matrices")
    if G.shape != Lam.shape or G.shape[0] != G.shape[1]:
        raise ValueError(f"G and Lam must be square of one shape; got {G.shape} and {Lam.shape}")
    M = sp.sympify(M)
    T = Lam.trace() + sp.sympify(noise) ** 2
    K = (1 + 1 / M) * Lam**2 + (T / M) * Lam
    return Lam - 2 * G * Lam**2 + G.T * Lam * G * K


def zfb_risk_expr(G: sp.Matrix, Lam: sp.Matrix, M, noise=0) -> sp.Expr:
    """The sympy form of R(G; Λ, M, σ) = tr Λ − 2 tr(GΛ²) + tr(GᵀΛG K_M)."""
    return _risk_matrix(G, Lam, M, noise).trace()


def _zero(expr) -> sp.Expr:
    """Put a rational function over one denominator and cancel: 0 iff it is identically 0."""
    return sp.cancel(sp.together(expr))


def _diag_symbols(d: int):
    lams = sp.symbols(f"lambda_1:{d + 1}", positive=True)
    N, M, sigma = sp.symbols("N M sigma", positive=True)
    return lams, N, M, sigma


def _diagonal_setup(d: int, noise: bool):
    """Symbolic diag(λ), N, M, σ, T = tr Λ + σ² and G = Γ⁻¹(N)."""
    lams, N, M, sigma = _diag_symbols(d)
    s = sigma if noise else sp.Integer(0)
    Lam = sp.diag(*lams)
    T = Lam.trace() + s**2
    G = ((1 + 1 / N) * Lam + (T / N) * sp.eye(d)).inv()
    return lams, N, M, s, Lam, T, G


def isotropic_risk_difference(d: int | None = None, noise: bool = False) -> sp.Expr:
    """R(Γ⁻¹; I_d, M = N) − d(d+1+σ²)/(N+d+1+σ²), simplified (0 proves the claim).

    ``d=None``: d stays a symbol; with Λ = I_d and G = g I every trace is d times a scalar,
    so the matrix formula reduces exactly to a scalar one.  An integer d uses d x d sympy
    matrices instead.  ``noise=False`` sets σ = 0 (ZFB's setting).
    """
    N, sigma = sp.symbols("N sigma", positive=True)
    s2 = sigma**2 if noise else sp.Integer(0)
    if d is None:
        dd = sp.symbols("d", positive=True, integer=True)
        g = 1 / ((1 + 1 / N) + (dd + s2) / N)
        k = (1 + 1 / N) + (dd + s2) / N          # K_N = k I when Λ = I
        risk = dd - 2 * g * dd + g**2 * k * dd   # tr I − 2 tr(g I) + tr(g² k I)
    else:
        dd = _check_symbolic_dim(d)
        Lam = sp.eye(dd)
        G = ((1 + 1 / N) * Lam + ((Lam.trace() + s2) / N) * sp.eye(dd)).inv()
        risk = zfb_risk_expr(G, Lam, N, sp.sqrt(s2))
    return _zero(risk - dd * (dd + 1 + s2) / (N + dd + 1 + s2))


def diagonal_risk_difference(d: int, noise: bool = False) -> tuple[sp.Expr, ...]:
    """Per-coordinate residuals of R(Γ⁻¹; diag(λ), M = N) = Σ_k λ_k(λ_k+T)/((N+1)λ_k+T).

    λ_1..λ_d and N (and σ when ``noise``) are positive symbols.  R is the trace of the
    matrix Λ − 2GΛ² + GᵀΛGK_N (:func:`zfb_risk_expr`); residual k is its (k, k) entry minus
    the k-th summand, simplified.  All residuals 0 proves the sum formula (the trace is the
    sum of the diagonal entries); cancelling entry by entry keeps d = 3, 4 fast.
    """
    d = _check_symbolic_dim(d)
    lams, N, _, s, Lam, T, G = _diagonal_setup(d, noise)
    E = _risk_matrix(G, Lam, N, s)
    return tuple(_zero(E[k, k] - lams[k] * (lams[k] + T) / ((N + 1) * lams[k] + T)) for k in range(d))


def long_prompt_limit(d: int, noise: bool = False) -> tuple[sp.Expr, tuple[sp.Expr, ...], tuple]:
    """lim_{M→∞} R(Γ⁻¹(N); diag(λ), M) with symbolic λ_k, N (sympy ``limit``).

    The limit of the trace is taken entry by entry (a finite sum).  Returns
    ``(limit, residuals, (lams, N, sigma))``: the limit, and per coordinate its difference
    from λ_k(λ_k+T)²/((N+1)λ_k+T)² (all 0 proves the closed form of the floor).
    """
    d = _check_symbolic_dim(d)
    lams, N, M, s, Lam, T, G = _diagonal_setup(d, noise)
    E = _risk_matrix(G, Lam, M, s)
    parts = [sp.limit(sp.together(E[k, k]), M, sp.oo) for k in range(d)]
    residuals = tuple(_zero(parts[k] - lams[k] * (lams[k] + T) ** 2 / ((N + 1) * lams[k] + T) ** 2)
                      for k in range(d))
    return sp.Add(*parts), residuals, (lams, N, s)


def long_prompt_bound_gap(d: int, noise: bool = False) -> tuple[sp.Expr, ...]:
    """Per coordinate, (λ_k+T)²/λ_k − N² λ_k(λ_k+T)²/((N+1)λ_k+T)², factored.

    Each equals (λ_k+T)³ ((2N+1)λ_k + T) / (λ_k ((N+1)λ_k+T)²) (difference of squares:
    ((N+1)λ_k+T)² − N²λ_k² = (λ_k+T)((2N+1)λ_k+T)), a product of positive factors, so
    N² R_∞ < Σ_k (λ_k+T)²/λ_k for every N > 0.
    """
    d = _check_symbolic_dim(d)
    lams, N, _, s, _, T, _ = _diagonal_setup(d, noise)
    return tuple(sp.factor((l + T) ** 2 / l - N**2 * l * (l + T) ** 2 / ((N + 1) * l + T) ** 2) for l in lams)


def _general_G(d: int) -> sp.Matrix:
    return sp.Matrix(d, d, lambda i, j: sp.Symbol(f"g_{i + 1}{j + 1}", real=True))


def _symbolic_lambda(d: int, diagonal: bool) -> sp.Matrix:
    if diagonal:
        return sp.diag(*sp.symbols(f"lambda_1:{d + 1}", positive=True))
    # a general symmetric Λ (symbolic entries; positivity is not needed for the identity)
    return sp.Matrix(d, d, lambda i, j: sp.Symbol(f"l_{min(i, j) + 1}{max(i, j) + 1}", real=True))


def _symbolic_gradient(d: int, diagonal: bool, noise: bool):
    """(G, Λ, ∂R/∂G by sympy ``diff`` at M = N, Γ = M_Γ) for a general symbolic G."""
    d = _check_symbolic_dim(d)
    N, sigma = sp.symbols("N sigma", positive=True)
    s = sigma if noise else sp.Integer(0)
    Lam = _symbolic_lambda(d, diagonal)
    G = _general_G(d)
    R = sp.expand(zfb_risk_expr(G, Lam, N, s))
    grad = sp.Matrix(d, d, lambda i, j: sp.diff(R, G[i, j]))
    Gamma = (1 + 1 / N) * Lam + ((Lam.trace() + s**2) / N) * sp.eye(d)
    return G, Lam, grad, Gamma


def gradient_formula_residual(d: int, diagonal: bool = True, noise: bool = True) -> sp.Matrix:
    """∂R/∂G (sympy ``diff`` of :func:`zfb_risk_expr`, general G, M = N) − (−2Λ(I − G M_Γ)Λ).

    Returns the simplified residual matrix (all zeros proves the formula).
    """
    G, Lam, grad, M_gamma = _symbolic_gradient(d, diagonal, noise)
    formula = -2 * Lam * (sp.eye(d) - G * M_gamma) * Lam
    return (grad - formula).applyfunc(_zero)


def stationarity_residual(d: int, diagonal: bool = True, noise: bool = True) -> sp.Matrix:
    """∂R/∂G evaluated at G = Γ⁻¹ (M = N), simplified: all zeros proves stationarity."""
    G, Lam, grad, Gamma = _symbolic_gradient(d, diagonal, noise)
    G_star = Gamma.inv() if diagonal else Gamma.adjugate() / Gamma.det()
    subs = {G[i, j]: G_star[i, j] for i in range(d) for j in range(d)}
    return grad.subs(subs).applyfunc(_zero)


@cache
def best_one_step_lr_expr() -> tuple[sp.Expr, tuple]:
    """η* = argmin_η R(η I; I_d, n, σ) derived with sympy; returns ``(expr, (d, n, sigma))``.

    R(η) = d − 2ηd + η² d ((1 + 1/n) + (d + σ²)/n) is the risk above with G = η I, Λ = I_d
    (one GD step of size η from w = 0 predicts η x_qᵀ h).  It is a convex parabola in η.
    """
    d, n, sigma, eta = sp.symbols("d n sigma eta", positive=True)
    risk = d - 2 * eta * d + eta**2 * d * ((1 + 1 / n) + (d + sigma**2) / n)
    (solution,) = sp.solve(sp.diff(risk, eta), eta)
    return sp.simplify(solution), (d, n, sigma)


@cache
def _best_one_step_lr_numeric():
    expr, symbols = best_one_step_lr_expr()
    return sp.lambdify(symbols, expr, modules="math")
