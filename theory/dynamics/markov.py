"""Reduced dynamics of staged sparse-attention learning (docs/markov.md §3.2, §5).

numpy/scipy only.  Each of H heads has a position-only attention s_h on the simplex
Δ^{T-1} and a value vector v_h ∈ R^K (its coordinates on the Frobenius-orthonormal
features Ā_k); the target is the K x T matrix G with G[k, j] = μ_k α_j 1[j ∈ I(k)]:

    R   = G − Σ_h v_h s_hᵀ                 (K x T residual),   L = ½ ‖R‖_F²
    v̇_h = R s_h
    ṡ_h = J(s_h) Rᵀ v_h                    flow="replicator"  (the paper code's Eq. (4))
    ṡ_h = J(s_h)² Rᵀ v_h                   flow="logit"       (gradient flow on softmax logits)

with J(s) = diag(s) − s sᵀ.  The replicator form is the one in the official fig10 notebook
[paper-code]; the logit form is the ``--squared`` option of the official ``ode.py``; that
both have the same fixed points is our reconstruction.

Stage k (k = 1..K) is entered at the first time L(t) < (L_{k-1} + L_k)/2, with L_k the
ladder-saddle losses ½ Σ_{l>k} e_l (energies e_l = ‖G[l]‖², sorted decreasingly); LSODA
locates the crossings as solver events.  :func:`euler` integrates the same system with a
fixed step (the official notebook's integrator) for the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from mechverify.theory.checks import check_array, check_int, check_real
from mechverify.theory.tasks.markov import lag_weights

FLOWS = ("replicator", "logit")

__all__ = ["FLOWS", "ODEResult", "block_target", "fig10_target", "energies", "plateau_levels", "rhs", "jacobian",
           "loss_of", "initial_state", "simulate", "euler", "stage_times_from_curve", "t1_formula"]


def block_target(mu, sizes, T: int, alpha=None, start: int = 0) -> np.ndarray:
    """G (K x T) for blocks of the given sizes placed contiguously from position ``start``
    (block k first; column j is lag j + 1, nearest first): G[k, j] = μ_k α_j on I(k).
    ``alpha`` is listed as in the official code and :class:`~mechverify.theory.tasks.markov.MarkovTask`,
    oldest position of a block first, and rescaled to sum to 1 (``lag_weights``); default 1."""
    mu = check_array("mu", mu, ndim=1)
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of block sizes; got {type(sizes).__name__}")
    sizes = [check_int("sizes entry", s) for s in sizes]
    T = check_int("T", T)
    start = check_int("start", start, minimum=0)
    if len(sizes) != mu.size:
        raise ValueError(f"sizes must hold one size per entry of mu ({mu.size}); got {len(sizes)}")
    if start + sum(sizes) > T:
        raise ValueError(f"T must be >= start + sum(sizes) = {start + sum(sizes)}; got {T}")
    G = np.zeros((mu.size, T))
    pos = start
    for k, n in enumerate(sizes):
        a = np.ones(n) if alpha is None else lag_weights(check_array("alpha", alpha, shape=(n,)), n)
        G[k, pos:pos + n] = mu[k] * a
        pos += n
    return G


def fig10_target(m: float = 1.7, T: int = 40, K: int = 3) -> np.ndarray:
    """The fig10 setting: singleton blocks at positions 0..K-1, G[k, k] = m^{K-1-k}."""
    m = check_real("m", m, positive=True)
    return block_target(m ** np.arange(check_int("K", K) - 1, -1, -1.0), [1] * K, T)


def _check_G(G) -> np.ndarray:
    G = check_array("G", G, ndim=2)
    if G.shape[0] < 1 or G.shape[1] < 2:
        raise ValueError(f"G must be K x T with K >= 1, T >= 2; got {G.shape}")
    return G


def energies(G) -> np.ndarray:
    """e_k = ‖G[k]‖² per row."""
    return np.sum(_check_G(G) ** 2, axis=1)


def plateau_levels(G) -> np.ndarray:
    """L_0 .. L_K: ½ × the sum of all but the k largest energies (rows with disjoint support)."""
    e = np.sort(energies(G))[::-1]
    return np.array([0.5 * e[k:].sum() for k in range(e.size + 1)])


def _check_flow(flow: str) -> str:
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}; got {flow!r}")
    return flow


def rhs(y: np.ndarray, G: np.ndarray, H: int, flow: str) -> np.ndarray:
    """Time derivative of the state y = [vec V (H x K), vec S (H x T)]."""
    K, T = G.shape
    V = y[:H * K].reshape(H, K)
    S = y[H * K:].reshape(H, T)
    R = G - V.T @ S
    Vd = S @ R.T
    g = V @ R
    Sd = S * (g - (S * g).sum(1, keepdims=True))
    if flow == "logit":
        Sd = S * (Sd - (S * Sd).sum(1, keepdims=True))
    return np.concatenate([Vd.ravel(), Sd.ravel()])


def jacobian(y: np.ndarray, G: np.ndarray, H: int, flow: str) -> np.ndarray:
    """∂ rhs / ∂ y (analytic; the state layout of :func:`rhs`).  With g_h = Rᵀv_h:
    ∂(R s_h)/∂v_h' = −(s_h'·s_h) I, ∂(R s_h)/∂s_h' = δ_hh' R − v_h' s_hᵀ,
    ∂g_h/∂v_h' = δ_hh' Rᵀ − s_h' v_hᵀ, ∂g_h/∂s_h' = −(v_h'·v_h) I, and for ṡ = J(s) g:
    ∂ṡ/∂g = J, ∂ṡ/∂s = diag(g) − (s·g) I − s gᵀ (logit flow: chain rule through u = J g)."""
    K, T = G.shape
    V = y[:H * K].reshape(H, K)
    S = y[H * K:].reshape(H, T)
    R = G - V.T @ S
    n = H * (K + T)
    Jac = np.zeros((n, n))
    vs = lambda h: slice(h * K, (h + 1) * K)
    ss = lambda h: slice(H * K + h * T, H * K + (h + 1) * T)
    SS, VV = S @ S.T, V @ V.T
    eyeK, eyeT = np.eye(K), np.eye(T)
    for h in range(H):
        s, v = S[h], V[h]
        g = R.T @ v
        Js = np.diag(s) - np.outer(s, s)
        dsg = np.diag(g) - (s @ g) * eyeT - np.outer(s, g)      # ∂(J(s) g)/∂s at fixed g
        if flow == "logit":
            u = Js @ g
            dsg = np.diag(u) - (s @ u) * eyeT - np.outer(s, u) + Js @ dsg
            Jg = Js @ Js
        else:
            Jg = Js
        for hp in range(H):
            Jac[vs(h), vs(hp)] = -SS[h, hp] * eyeK
            Jac[vs(h), ss(hp)] = -np.outer(V[hp], s) + (R if hp == h else 0.0)
            dg_dv = -np.outer(S[hp], v) + (R.T if hp == h else 0.0)
            dg_ds = -VV[h, hp] * eyeT
            Jac[ss(h), vs(hp)] = Jg @ dg_dv
            Jac[ss(h), ss(hp)] = Jg @ dg_ds + (dsg if hp == h else 0.0)
    return Jac


def loss_of(y: np.ndarray, G: np.ndarray, H: int) -> np.ndarray:
    """L = ½‖R‖² for one state (n,) or many (n_t, n)."""
    K, T = G.shape
    y = np.atleast_2d(y)
    V = y[:, :H * K].reshape(-1, H, K)
    S = y[:, H * K:].reshape(-1, H, T)
    R = G - np.einsum("nhk,nht->nkt", V, S)
    return 0.5 * np.sum(R ** 2, axis=(1, 2))


def initial_state(G, n_heads: int, eps: float, seed: int) -> np.ndarray:
    """v_h(0) = 0, s_h(0) = 1/T + ε N(0, 1) per entry, clipped at 1e-12 and renormalised."""
    G = _check_G(G)
    H = check_int("n_heads", n_heads)
    eps = check_real("eps", eps, nonnegative=True)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    K, T = G.shape
    S = 1.0 / T + eps * rng.standard_normal((H, T))
    S = np.clip(S, 1e-12, None)
    S /= S.sum(axis=1, keepdims=True)
    return np.concatenate([np.zeros(H * K), S.ravel()])


@dataclass
class ODEResult:
    """A simulated trajectory: ``t`` (n_t,), ``loss`` (n_t,), ``S`` (n_t, H, T) attention,
    ``V`` (n_t, H, K) values, ``levels`` L_0..L_K, ``stage_times`` (K,) entry time of stage k
    (nan if never entered), ``nfev`` right-hand-side evaluations."""

    t: np.ndarray
    loss: np.ndarray
    S: np.ndarray
    V: np.ndarray
    levels: np.ndarray
    stage_times: np.ndarray
    nfev: int


def _check_run(G, n_heads, flow, eps, t_max, seed):
    G = _check_G(G)
    H = check_int("n_heads", n_heads)
    _check_flow(flow)
    t_max = check_real("t_max", t_max, positive=True)
    y0 = initial_state(G, H, eps, seed)
    return G, H, t_max, y0


def simulate(G, n_heads: int = 3, flow: str = "replicator", eps: float = 1e-6, t_max: float = 500.0,
             seed: int = 0, *, rtol: float = 1e-10, atol: float = 1e-14, n_eval: int = 400,
             y0: np.ndarray | None = None, stop_at_last_stage: bool = False) -> ODEResult:
    """Integrate the reduced ODE with LSODA on a log-spaced grid of ``n_eval`` times in
    [t_max·1e-4, t_max] (plus t = 0); stage entries are solver events (midpoint rule).
    ``y0`` overrides the initial state of :func:`initial_state`; ``stop_at_last_stage`` ends
    the integration at the entry of stage K (the trajectory then stops there)."""
    G, H, t_max, init = _check_run(G, n_heads, flow, eps, t_max, seed)
    n_eval = check_int("n_eval", n_eval, minimum=2)
    check_real("rtol", rtol, positive=True)
    check_real("atol", atol, positive=True)
    if y0 is not None:
        init = check_array("y0", y0, shape=init.shape)
    K, T = G.shape
    levels = plateau_levels(G)
    thresholds = 0.5 * (levels[:-1] + levels[1:])

    def event(k):
        def f(t, y):
            r = (G - y[:H * K].reshape(H, K).T @ y[H * K:].reshape(H, T)).ravel()
            return 0.5 * float(r @ r) - thresholds[k]
        f.direction = -1
        f.terminal = bool(stop_at_last_stage and k == K - 1)
        return f

    t_eval = np.concatenate([[0.0], np.geomspace(t_max * 1e-4, t_max, n_eval)])
    sol = solve_ivp(lambda t, y: rhs(y, G, H, flow), (0.0, t_max), init, method="LSODA", t_eval=t_eval,
                    jac=lambda t, y: jacobian(y, G, H, flow), rtol=rtol, atol=atol, events=[event(k) for k in range(K)])
    if sol.status < 0:
        raise RuntimeError(f"LSODA failed: {sol.message}")
    Y = sol.y.T
    stages = np.array([te[0] if te.size else math.nan for te in sol.t_events])
    return ODEResult(sol.t, loss_of(Y, G, H), Y[:, H * K:].reshape(-1, H, T), Y[:, :H * K].reshape(-1, H, K),
                     levels, stages, int(sol.nfev))


def stage_times_from_curve(t: np.ndarray, loss: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """First crossing below each midpoint (L_{k-1} + L_k)/2, linearly interpolated; nan if none."""
    thresholds = 0.5 * (levels[:-1] + levels[1:])
    out = np.full(thresholds.size, math.nan)
    for k, thr in enumerate(thresholds):
        below = np.nonzero(loss < thr)[0]
        if below.size:
            i = below[0]
            if i == 0:
                out[k] = t[0]
            else:
                f = (loss[i - 1] - thr) / (loss[i - 1] - loss[i])
                out[k] = t[i - 1] + f * (t[i] - t[i - 1])
    return out


def euler(G, n_heads: int = 3, flow: str = "replicator", eps: float = 1e-6, t_max: float = 500.0,
          seed: int = 0, *, dt: float = 0.005, record_every: int = 100) -> ODEResult:
    """Fixed-step forward Euler of the same system (step ``dt``), recording every
    ``record_every`` steps; stage times from the recorded loss at every step."""
    G, H, t_max, y = _check_run(G, n_heads, flow, eps, t_max, seed)
    dt = check_real("dt", dt, positive=True)
    record_every = check_int("record_every", record_every)
    K, T = G.shape
    n_steps = int(round(t_max / dt))
    levels = plateau_levels(G)
    thresholds = 0.5 * (levels[:-1] + levels[1:])
    stages = np.full(K, math.nan)
    ts, Ys = [0.0], [y.copy()]
    prev = loss_of(y, G, H)[0]
    for i in range(1, n_steps + 1):
        y = y + dt * rhs(y, G, H, flow)
        cur = loss_of(y, G, H)[0]
        for k in np.nonzero(np.isnan(stages) & (cur < thresholds))[0]:
            f = (prev - thresholds[k]) / (prev - cur) if prev != cur else 1.0
            stages[k] = (i - 1 + f) * dt
        prev = cur
        if i % record_every == 0 or i == n_steps:
            ts.append(i * dt)
            Ys.append(y.copy())
    Y = np.array(Ys)
    return ODEResult(np.array(ts), loss_of(Y, G, H), Y[:, H * K:].reshape(-1, H, T),
                     Y[:, :H * K].reshape(-1, H, K), levels, stages, n_steps)


def t1_formula(mu1: float, n1: int, T: int, flow: str = "replicator") -> float:
    """Early-time estimate of the first stage time (docs/markov.md §4.4) [reconstructed]:
    √(2T ln(T/2n₁)/n₁)/μ₁ (replicator), T √(2 ln(T/2n₁)/n₁)/μ₁ (logit flow)."""
    mu1 = check_real("mu1", mu1, positive=True)
    n1, T = check_int("n1", n1), check_int("T", T)
    if T <= 2 * n1:
        raise ValueError(f"T must be > 2 n1 = {2 * n1}; got {T}")
    base = math.sqrt(2 * math.log(T / (2 * n1)) / n1) / mu1
    return base * math.sqrt(T) if _check_flow(flow) == "replicator" else base * T
