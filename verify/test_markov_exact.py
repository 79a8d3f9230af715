"""Claims: staged learning of sparse attention on high-order Markov chains, exact part
(docs/markov.md §4, §5, §7): teacher norms, the reduced ODE's plateaus, stages and
phases, sympy closed forms.

The reduced ODE and every statement about its stages are our reconstruction [reconstructed]
(scipy LSODA, rtol 1e-10, atol 1e-14; stage k entered when L(t) < (L_{k-1} + L_k)/2), except
where the marker says the system itself is the paper code's [paper-code].  fig10 setting:
H = 3, T = 40, singleton blocks at positions 0, 1, 2 with G = (m², m, 1), m = 1.7.
"""

import functools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mechverify.theory.dynamics.markov import block_target, fig10_target, initial_state, jacobian, rhs, simulate, t1_formula
from mechverify.theory.symbolic.markov import (ladder_losses, logit_chain_rule_residual, single_head_optimum,
                                           single_head_residuals, symmetric_reduction_residual)
from mechverify.theory.tasks.markov import MarkovTask, teacher_logits, teacher_matrices
from verify.instances import seeds

PAPER = "yuksel-2026"
FIG10_LEVELS = (6.121, 1.945, 0.500, 0.0)       # docs/markov.md §4.1


@functools.lru_cache(maxsize=None)
def run(m=1.7, T=40, H=3, flow="replicator", eps=1e-6, t_max=500.0, seed=0, n_eval=400, stop=False):
    """Cached fig10-type simulation (shared by several claims); ``stop``: end at the last stage."""
    return simulate(fig10_target(m, T), H, flow, eps, t_max, seed, n_eval=n_eval, stop_at_last_stage=stop)


def plateau_value(res, k):
    """Loss on the plateau of stage k (1 <= k < K): the value of least |dL/d ln t| between the
    entries of stages k and k+1."""
    t, L, stg = res.t, res.loss, res.stage_times
    sel = (t > stg[k - 1]) & (t < stg[k])
    slope = np.abs(np.gradient(L[sel], np.log(t[sel])))
    return float(L[sel][np.argmin(slope)])


def at_time(res, time):
    return int(np.searchsorted(res.t, time))


def max_tv(S):
    """Largest pairwise total-variation distance between heads' attentions (H, T)."""
    return max(0.5 * np.abs(S[a] - S[b]).sum() for a in range(len(S)) for b in range(len(S)))


def block_mass(S, G):
    """(H, K): each head's attention mass on each block's support."""
    return np.stack([S[:, G[k] != 0].sum(1) for k in range(G.shape[0])], axis=1)


# --- teacher -------------------------------------------------------------------------------

@pytest.mark.claim(id="markov/teacher-norms", paper=PAPER, provenance="paper-code", kind="exact")
@given(d=st.integers(2, 12), h=st.integers(1, 4), m10=st.integers(10, 25), seed=seeds,
       orthogonal=st.booleans())
def test_teacher_norms(record_claim, d, h, m10, seed, orthogonal):
    """‖A*_k‖_2 = m^{h-k} and ‖A*_k‖_F = m^{h-k}√d (1e-10 relative); with ``orthogonal`` the
    A*_k are also mutually Frobenius-orthogonal (then the spectral norm is not claimed).

    Domain: Frobenius-orthogonalising needs linearly independent Q_k.  At d = 2 the rotations
    and the reflections each span a 2-dimensional subspace of R^{2x2}, so a draw with three or
    more Q_k of one determinant sign cannot be orthogonalised (found at --hypothesis-seed
    1262009718: d = 2, h = 3, teacher seed 3, error 0.55).  Those draws are outside the claim:
    there the generator must raise ValueError naming teacher_seed, which is asserted instead."""
    m = m10 / 10
    task = MarkovTask(d=d, sizes=(1,) * h, m=m, orthogonal=orthogonal, teacher_seed=seed % 2**31)
    if orthogonal and d == 2:
        Q = teacher_matrices(MarkovTask(d=d, sizes=(1,) * h, m=1.0, teacher_seed=seed % 2**31))   # the raw Q_k
        signs = np.sign(np.linalg.det(Q))
        if max(np.sum(signs > 0), np.sum(signs < 0)) >= 3:
            with pytest.raises(ValueError, match="teacher_seed"):
                teacher_matrices(task)
            return
    A = teacher_matrices(task)
    err = 0.0
    for k in range(1, h + 1):
        ref = m ** (h - k)
        err = max(err, abs(np.linalg.norm(A[k - 1]) / (ref * math.sqrt(d)) - 1))
        if not orthogonal:
            err = max(err, abs(np.linalg.norm(A[k - 1], 2) / ref - 1))
    if orthogonal:
        gram = np.einsum("kij,lij->kl", A, A) / d
        err = max(err, float(np.abs(gram - np.diag(np.diag(gram))).max()) / max(1.0, m ** (2 * h)))
    record_claim(err, 1e-10, detail={"d": d, "h": h, "m": m, "orthogonal": orthogonal})
    assert err <= 1e-10


def official_formula_logits(A_windows, context, spans, stride, position_weights):
    """Our own numpy transcription of the official IL-SAP linear teacher's formula (read for the
    convention only): the context is in time order (oldest token first); window i starts at
    i * stride (contiguous: after the previous windows), its tokens are summed with the listed
    position weights rescaled to sum to 1, applied in time order (first weight on the oldest token),
    and window i is multiplied by its own matrix A_windows[i].  context: (n, w) token ids;
    returns (n, d) logits before the temperature."""
    n, w = context.shape
    d = A_windows.shape[-1]
    onehot = np.eye(d)[context]                                        # (n, w, d)
    out = np.zeros((n, d))
    for i, span in enumerate(spans):
        start = i * stride if stride is not None else sum(spans[:i])
        pw = np.ones(span) if position_weights is None else np.asarray(position_weights, float)
        pw = pw if position_weights is None else pw / pw.sum()
        agg = np.einsum("j,njd->nd", pw, onehot[:, start:start + span])
        out += agg @ A_windows[i].T
    return out


@pytest.mark.parametrize("sizes, stride, alpha", [((2, 2, 2), None, (0.7, 0.3)), ((3, 3), None, (1.0, 2.0, 5.0)),
                                                  ((3, 3, 3), 2, (0.2, 0.5, 0.3)), ((2, 2, 2), None, None)],
                         ids=["222-alpha", "33-unnormalised", "333-stride2", "222-ones"])
@pytest.mark.parametrize("reverse", [False, True])
def test_alpha_matches_official_convention(sizes, stride, alpha, reverse):
    """(no claim id) MarkovTask's teacher logits equal the official code's formula (docs/markov.md §2:
    listed α applied from the OLDEST to the NEAREST position of each block, rescaled to sum to 1)
    to 1e-13 relative, with the official windows (oldest first) given the matrices of our blocks
    at the same lags.  The lag-indexed reading (first weight on the nearest token) differs by
    O(1) whenever α is not symmetric: the test fails if the convention is reversed."""
    task = MarkovTask(d=7, sizes=sizes, stride=stride, alpha=alpha, reverse=reverse, teacher_seed=5, L=4)
    A = teacher_matrices(task)
    by_position = [A[k - 1] for p in range(task.h) for k in range(1, task.h + 1) if task.position_of(k) == p]
    A_windows = np.stack(by_position[::-1])                            # official window 0 = oldest block
    tokens = np.random.default_rng(0).integers(0, task.d, size=(64, task.w + task.L))
    ours = teacher_logits(task, tokens) * task.tau                     # (64, L, d)
    worst = 0.0
    for t in range(task.L):
        ref = official_formula_logits(A_windows, tokens[:, t:t + task.w], sizes[::-1], stride, alpha)
        worst = max(worst, float(np.abs(ours[:, t] - ref).max() / np.abs(ref).max()))
        if alpha is not None and len(set(alpha)) > 1:
            flipped = official_formula_logits(A_windows, tokens[:, t:t + task.w], sizes[::-1], stride, alpha[::-1])
            assert np.abs(ours[:, t] - flipped).max() / np.abs(ref).max() > 0.1
    assert worst <= 1e-13, worst


# --- ladder and plateaus ----------------------------------------------------------------------

# A target whose rows are in neither energy nor norm order: mu = (1.0, 1.6, 1.2), sizes (2, 1, 3) give
# energies e = mu^2 n = (2, 2.56, 4.32): row 1 has the largest norm, row 2 the largest energy.
UNSORTED = (("1.0", "1.6", "1.2"), (2, 1, 3))


def _unsorted_target(alpha=None):
    mu, sizes = UNSORTED
    return block_target([float(x) for x in mu], list(sizes), 20, alpha=alpha)


def _unsorted_levels() -> list[float]:
    """L_0..L_3 of the unsorted target by hand: e_k = mu_k^2 |I(k)| in exact fractions, sorted."""
    e = sorted((Fraction(mu) ** 2 * n for mu, n in zip(*UNSORTED)), reverse=True)
    return [float(sum(e[k:], Fraction(0)) / 2) for k in range(len(e) + 1)]


@pytest.mark.claim(id="markov/plateau-levels", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("flow, target", [
    ("replicator", "fig10"), ("logit", "fig10"), ("replicator", "unsorted"),
    pytest.param("logit", "unsorted", marks=pytest.mark.xfail(strict=True, reason=(
        "finding: logit flow on the unsorted target (blocks of 2, 1, 3 positions): plateaus L_1, L_2 off by "
        "1.94e-3 and 1.62e-3 relative (> 1e-3; the replicator flow: within 1e-3; fig10's singleton blocks: "
        "within 1e-3 for both flows); under J(s)^2 the attention inside a multi-position block evens out only "
        "slowly, so the plateau is left before it settles")))])
def test_plateau_levels(record_claim, flow, target):
    """fig10: sympy ladder losses equal 6.121, 1.945, 0.500, 0 (spec values, 4 digits).  unsorted
    (rows in neither energy nor norm order, see UNSORTED): sympy ladder losses equal the hand
    computation from sorted e_k = μ_k²|I(k)| (4.44, 2.28, 1, 0; 1e-12).  For both, the simulated L(t)
    (H = 3, ε = 1e-10, long plateaus) starts at L_0, flattens at L_1 and L_2 (value of least
    |dL/d ln t| between stage entries) within 1e-3 relative, and ends below 1e-3 L_0."""
    G = fig10_target() if target == "fig10" else _unsorted_target()
    levels = ladder_losses(G)
    if target == "fig10":
        assert np.allclose(levels, FIG10_LEVELS, atol=5e-4), levels
        res = run(flow=flow, eps=1e-10, t_max=500.0 if flow == "replicator" else 8000.0, n_eval=3000)
    else:
        assert np.allclose(levels, _unsorted_levels(), rtol=1e-12, atol=0), (levels, _unsorted_levels())
        res = simulate(G, 3, flow, 1e-10, 500.0 if flow == "replicator" else 8000.0, 0, n_eval=3000)
    errs = [abs(res.loss[0] - levels[0]) / levels[0]]
    errs += [abs(plateau_value(res, k) - levels[k]) / levels[k] for k in (1, 2)]
    errs.append(res.loss[-1] / levels[0])
    detail = {"target": target, "levels": levels, "plateaus": [float(res.loss[0]), plateau_value(res, 1),
                                                                plateau_value(res, 2), float(res.loss[-1])],
              "stage_times": res.stage_times.tolist()}
    record_claim(max(errs), 1e-3, detail=detail)
    assert max(errs) <= 1e-3, detail


@pytest.mark.claim(id="markov/single-head-optimum", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("part", ["sympy", "ode-alpha", "ode-energy-not-norm"])
def test_single_head_optimum(record_claim, part):
    """sympy: ∂L/∂v = 0 at v*(s) = Gs/‖s‖² and L(v*(s), s) = ½(‖G‖² − ‖Gs‖²/‖s‖²).
    ODE (H = 1, T = 20, ε = 1e-3, replicator; rows given out of order), the head ends on the
    block of largest energy with the loss of the closed form ½(Σ e − e_max) (1e-6 relative):
    ode-alpha: blocks of size 2, μ = (1, m², m) with m = 1.7, α = (0.7, 0.3) in the official
    order (first weight on the OLDEST position): inside the block the attention on the older lag
    over the nearer one is 7:3 (1e-3 relative).
    ode-energy-not-norm: the UNSORTED target (μ = (1.0, 1.6, 1.2), sizes (2, 1, 3)): the head ends
    on row 2 (largest energy 4.32), not on row 1 (largest norm 1.6), uniform inside it (1e-3)."""
    if part == "sympy":
        grad, gap = single_head_residuals(2, 3)
        record_claim(0.0 if grad == 0 and gap == 0 else 1.0, 1e-12, detail={"grad": str(grad), "gap": str(gap)})
        assert grad == 0 and gap == 0
        return
    if part == "ode-alpha":
        G, expected_block = block_target([1.0, 1.7 ** 2, 1.7], [2, 2, 2], 20, alpha=[0.7, 0.3]), 1
    else:
        G, expected_block = _unsorted_target(), 2
    k, s_ref, loss_ref = single_head_optimum(G)
    res = simulate(G, 1, "replicator", 1e-3, 2000.0, 0)
    s = res.S[-1, 0]
    mass = block_mass(res.S[-1], G)[0]
    lags = np.nonzero(G[expected_block])[0]                  # the block's positions, nearest lag first
    if part == "ode-alpha":
        ratio = s[lags[1]] / s[lags[0]]                       # older lag / nearer lag
        shape_err = abs(ratio / (0.7 / 0.3) - 1)
    else:
        ratio = s[lags].max() / s[lags].min()
        shape_err = abs(ratio - 1)
    err = max(shape_err, abs(res.loss[-1] / loss_ref - 1) * 1e3)
    detail = {"block": int(np.argmax(mass)), "expected_block": expected_block, "closed_form_block": k,
              "ratio": float(ratio), "loss": float(res.loss[-1]), "closed_form_loss": loss_ref,
              "mass": mass.round(6).tolist()}
    record_claim(err, 1e-3, detail=detail)
    assert int(np.argmax(mass)) == k == expected_block and err <= 1e-3, detail


def first_acquired(res, G, threshold=0.5):
    """Blocks in order of the first time any head's mass on them exceeds ``threshold``."""
    times = []
    for k in range(G.shape[0]):
        mass = np.stack([block_mass(S, G)[:, k] for S in res.S])        # (n_t, H)
        hit = np.nonzero((mass > threshold).any(1))[0]
        times.append(res.t[hit[0]] if hit.size else math.inf)
    return [int(k) for k in np.argsort(times, kind="stable") if math.isfinite(times[k])], times


@pytest.mark.claim(id="markov/energy-not-norm", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("flow", ["replicator", "logit"])
def test_energy_not_norm(record_claim, flow):
    """μ = (1.5, 1.2), block sizes (1, 3), T = 40, H = 3: energies (2.25, 4.32), so the block of
    largest energy (2) is acquired first (any head's mass > 0.5) although block 1 has the larger
    norm; the control with sizes (1, 1) acquires block 1 first."""
    G = block_target([1.5, 1.2], [1, 3], 40)
    control = block_target([1.5, 1.2], [1, 1], 40)
    t_max = 300.0 if flow == "replicator" else 3000.0
    order, times = first_acquired(simulate(G, 3, flow, 1e-6, t_max, 0), G)
    order_c, times_c = first_acquired(simulate(control, 3, flow, 1e-6, t_max, 0), control)
    detail = {"order": order, "times": times, "control_order": order_c, "control_times": times_c}
    ok = order[:1] == [1] and order_c[:1] == [0]
    record_claim(0.0 if ok else 1.0, 0.5, detail=detail)
    assert ok, detail


@pytest.mark.claim(id="markov/head-stall", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("H", [1, 2])
def test_head_stall(record_claim, H):
    """fig10 with H < K = 3 heads: the loss converges to L_H (within 1e-4 at t = 1000, ε = 1e-2)."""
    levels = ladder_losses(fig10_target())
    res = run(H=H, eps=1e-2, t_max=1000.0)
    err = abs(res.loss[-1] - levels[H])
    record_claim(err, 1e-4, detail={"H": H, "final_loss": float(res.loss[-1]), "L_H": levels[H]})
    assert err <= 1e-4


@pytest.mark.claim(id="markov/symmetry-preserved-ode", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("flow", ["replicator", "logit"])
def test_symmetry_preserved_ode(record_claim, flow):
    """sympy: at identical heads the H-head vector field equals the reduced one-head field
    (H = 3, K = T = 2, symbolic G, v, s).  ODE (fig10, ε = 0, t up to 500 / 4000): heads stay
    equal to 1e-12 until the loss has settled at L_1 (first time within 1e-3 relative), and the
    loss ends at L_1 (1e-3 relative; the logit flow approaches the saddle only algebraically,
    9.6e-5 relative at t = 4000): one head's worth of blocks, never more.

    Why the equality is asserted up to the settling time and not to t_max: L_1 is a saddle whose
    unstable directions include head-antisymmetric ones, so the solver's roundoff (LSODA's
    Newton solves mix the heads; an rhs computed row by row changes nothing) grows there like
    e^{t/240} once the loss sits on it: the spread is 0 until t ~ 630, 5e-16 at t = 1590 and
    1e-11 at t = 4000 (logit flow, measured).  The spread at t_max is recorded."""
    assert symmetric_reduction_residual(2, 2, 3, flow) == 0
    levels = ladder_losses(fig10_target())
    res = run(flow=flow, eps=0.0, t_max=500.0 if flow == "replicator" else 4000.0)
    spread_t = np.maximum(np.abs(res.S - res.S[:, :1]).max(axis=(1, 2)), np.abs(res.V - res.V[:, :1]).max(axis=(1, 2)))
    near = np.nonzero(np.abs(res.loss - levels[1]) / levels[1] <= 1e-3)[0]
    settle = int(near[0]) if near.size else len(res.t) - 1
    spread = float(spread_t[:settle + 1].max())
    loss_err = abs(res.loss[-1] - levels[1]) / levels[1]
    detail = {"head_spread_to_settling": spread, "settling_time": float(res.t[settle]),
              "head_spread_at_t_max": float(spread_t[-1]), "final_loss": float(res.loss[-1]), "L_1": levels[1]}
    record_claim(max(spread / 1e-12, loss_err / 1e-3), 1.0, detail=detail)
    assert near.size and spread <= 1e-12 and loss_err <= 1e-3, detail


@pytest.mark.claim(id="markov/flows-same-fixed-points", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("part", ["chain-rule", "fixed-points", "plateaus"])
def test_flows_same_fixed_points(record_claim, part):
    """chain-rule (sympy): with s = softmax(a), −∂L/∂a = J Rᵀv and ṡ = J²Rᵀv.
    fixed-points: at every ladder saddle of fig10 (k heads' worth of blocks fitted, H = 3) both
    right-hand sides vanish (< 1e-12), and the analytic Jacobians agree with central
    differences (< 1e-6).  plateaus: both flows' simulated plateau losses L_1, L_2 agree to 1e-3
    relative (ε = 1e-10)."""
    if part == "chain-rule":
        r1, r2 = logit_chain_rule_residual(2, 3)
        record_claim(0.0 if r1 == 0 and r2 == 0 else 1.0, 1e-12, detail={"r1": str(r1), "r2": str(r2)})
        assert r1 == 0 and r2 == 0
        return
    G = fig10_target()
    K, T = G.shape
    if part == "fixed-points":
        worst, jac_err = 0.0, 0.0
        for k in range(1, K + 1):
            # heads 0..k-1 on blocks 0..k-1; the spare heads share block 0
            V, S = np.zeros((3, K)), np.zeros((3, T))
            owners = [min(h, k - 1) for h in range(3)]
            for h, b in enumerate(owners):
                S[h, b] = 1.0
                V[h, b] = G[b, b] / owners.count(b)
            y = np.concatenate([V.ravel(), S.ravel()])
            for flow in ("replicator", "logit"):
                worst = max(worst, float(np.abs(rhs(y, G, 3, flow)).max()))
        rng = np.random.default_rng(0)
        for flow in ("replicator", "logit"):
            y = initial_state(G, 3, 0.2 / T, 1)
            y[:3 * K] = rng.standard_normal(3 * K)
            num = np.stack([(rhs(y + 1e-6 * e, G, 3, flow) - rhs(y - 1e-6 * e, G, 3, flow)) / 2e-6
                            for e in np.eye(y.size)], axis=1)
            jac_err = max(jac_err, float(np.abs(jacobian(y, G, 3, flow) - num).max()))
        record_claim(worst, 1e-12, detail={"max_rhs": worst, "jacobian_vs_fd": jac_err})
        assert worst <= 1e-12 and jac_err <= 1e-6
        return
    rep, log = run(eps=1e-10, n_eval=3000), run(flow="logit", eps=1e-10, t_max=8000.0, n_eval=3000)
    diffs = [abs(plateau_value(rep, k) / plateau_value(log, k) - 1) for k in (1, 2)]
    record_claim(max(diffs), 1e-3, detail={"replicator": [plateau_value(rep, k) for k in (1, 2)],
                                           "logit": [plateau_value(log, k) for k in (1, 2)]})
    assert max(diffs) <= 1e-3


# --- stage times ------------------------------------------------------------------------------

T1_FINDINGS = {
    "eps-logit": "logit flow: t1 = 19.13, 21.76, 21.76 for eps = 1e-2, 1e-6, 1e-10 (spread 13.7% > 5%; the spec's "
                 "own table has 19 vs 22): at eps = 1e-2 the initial attention noise already shortens the slow "
                 "logit-flow escape; the replicator spread is 2.6%",
    "formula-replicator": "replicator: the §4.4 estimate is off by -37.9% (T=10, m=2.5, n1=2) and +37.9% (T=160, "
                          "m=1.3, n1=1), just outside ±35%; 14 of 16 settings are within it",
    "formula-logit": "logit flow: the §4.4 estimate T sqrt(2 ln(T/2n1)/n1)/mu1 overestimates t1 by up to +113% "
                     "(T=160, m=2.5, n1=1: 75.8 vs 35.5); simulated t1 grows like ~sqrt(T) x the replicator's, "
                     "but with a smaller constant than the formula's",
}


def _t1_param(part):
    if part in T1_FINDINGS:
        return pytest.param(part, marks=pytest.mark.xfail(strict=True, reason=T1_FINDINGS[part]))
    return part


@pytest.mark.claim(id="markov/t1-scaling", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("part", [_t1_param(p) for p in ("eps-replicator", "eps-logit", "m", "formula-replicator",
                                                         "formula-logit")])
def test_t1_scaling(record_claim, part):
    """eps-*: t1 over ε ∈ {1e-2, 1e-6, 1e-10} spreads ≤ 5% (fig10, each flow).  m: t1·m²
    within 4% over m ∈ {1.3, 1.7, 2.1, 2.5} (replicator).  formula-*: the §4.4 estimates are
    within ±35% of the simulated t1 for T ∈ {10, 40, 160}, m ∈ {1.3, 2.5}, n_1 ∈ {1, 2, 4}
    (three blocks of size n_1, 3 n_1 <= T; ε = 1e-6)."""
    kind, _, flow = part.partition("-")
    if kind == "eps":
        t1 = [run(flow=flow, eps=eps, t_max=40.0 if flow == "replicator" else 200.0).stage_times[0]
              for eps in (1e-2, 1e-6, 1e-10)]
        spread = (max(t1) - min(t1)) / min(t1)
        record_claim(spread, 0.05, detail={"flow": flow, "t1": t1})
        assert spread <= 0.05, t1
    elif kind == "m":
        prod = [run(m=m, t_max=40.0).stage_times[0] * m ** 2 for m in (1.3, 1.7, 2.1, 2.5)]
        spread = (max(prod) - min(prod)) / min(prod)
        record_claim(spread, 0.04, detail={"t1_m2": prod})
        assert spread <= 0.04
    else:
        worst, rows = 0.0, []
        for T in (10, 40, 160):
            for m in (1.3, 2.5):
                for n1 in (1, 2, 4):
                    if 3 * n1 > T:
                        continue
                    est = t1_formula(m * m, n1, T, flow)
                    G = block_target([m * m, m, 1.0], [n1] * 3, T)
                    t1 = simulate(G, 3, flow, 1e-6, 4 * est, 0, n_eval=50).stage_times[0]
                    err = abs(est / t1 - 1) if math.isfinite(t1) else math.inf
                    rows.append((T, m, n1, round(float(t1), 3), round(est, 3)))
                    worst = max(worst, err)
        record_claim(worst, 0.35, detail={"flow": flow, "rows (T, m, n1, t1, estimate)": rows})
        assert worst <= 0.35, rows


DRAWS = 5


@functools.lru_cache(maxsize=None)
def median_stages(m=1.7, H=3, flow="replicator", eps=1e-6, t_max=500.0):
    """Median (over DRAWS noise draws) of the stage times; nan-safe."""
    times = np.array([run(m=m, H=H, flow=flow, eps=eps, t_max=t_max, seed=s, n_eval=50, stop=True).stage_times
                      for s in range(DRAWS)])
    return np.median(times, axis=0), times


@pytest.mark.claim(id="markov/t2-log-eps", paper=PAPER, provenance="reconstructed", kind="exact")
def test_t2_log_eps(record_claim):
    """Replicator, fig10, 5 draws per setting: the median t2 increases as ε falls over
    1e-2 .. 1e-10 and with m ∈ {1.3, 1.7, 2.5} (ε = 1e-6); the median t3 increases with m.  The
    exponent p of t2 ≈ c (ln 1/ε)^p is fitted and recorded (no exponent is asserted)."""
    eps_list = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10)
    t2 = [median_stages(eps=e, t_max=400.0)[0][1] for e in eps_list]
    by_m = {m: median_stages(m=m, t_max={1.3: 300.0, 1.7: 500.0, 2.5: 2500.0}[m])[0] for m in (1.3, 1.7, 2.5)}
    p, logc = np.polyfit(np.log(np.log(1 / np.array(eps_list[1:]))), np.log(t2[1:]), 1)
    mono = (np.all(np.diff(t2) > 0) and np.all(np.diff([by_m[m][1] for m in by_m]) > 0)
            and np.all(np.diff([by_m[m][2] for m in by_m]) > 0))
    detail = {"t2_vs_eps": dict(zip(map(str, eps_list), np.round(t2, 2).tolist())),
              "stages_vs_m": {str(m): np.round(v, 2).tolist() for m, v in by_m.items()},
              "fitted_exponent": float(p), "fitted_constant": float(np.exp(logc))}
    record_claim(0.0 if mono else 1.0, 0.5, detail=detail)
    assert mono, detail


# docs/markov.md §5.4 table: (m, H, eps) -> replicator and logit (t1, t2, t3)
STAGE_TABLE = {
    (1.7, 3, 1e-2): ((4.4, 6.7, 48), (19, 25, 216)),
    (1.7, 3, 1e-6): ((4.6, 51, 236), (22, 326, 2933)),
    (1.7, 3, 1e-10): ((4.6, 130, 430), (22, 1577, 5619)),
    (1.3, 3, 1e-6): ((7.8, 39, 99), (44, 191, 786)),
    (2.5, 3, 1e-6): ((2.2, 89, 1538), (9.2, 840, 15412)),
    (1.7, 4, 1e-6): ((4.5, 46, 151), (23, 259, 1139)),
}


STAGE_FINDINGS = {
    ("logit", 0): "logit flow, eps = 1e-2: median t1 over 5 draws 15.65 vs 19 (-18%; draws 19.1, 15.6, 20.0, 11.2, "
                  "15.6): at large eps t1 depends on the draw, unlike the other rows (all within 1.5%)",
    ("replicator", 2): "t3 depends on the noise draw far more than ±30%: medians over 5 draws 31.3 (spec 48), 180 "
                       "(236), 342 (430), 82.8 (99), 1162 (1538), 123 (151); draw 0 reproduces every spec entry "
                       "within 1%, so the spec table is one draw, and draws 1-4 give systematically earlier t3",
    ("logit", 2): "t3 (logit flow) medians over 5 draws 64.8 (spec 216), 1468 (2933), 3531 (5619), 496 (786), "
                  "6682 (15412), 760 (1139): draw 0 reproduces the spec entries within 1%, the other draws are "
                  "up to 4x earlier",
}


def _stage_param(flow, stage):
    reason = STAGE_FINDINGS.get((flow, stage))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(flow, stage, marks=marks, id=f"{flow}-t{stage + 1}")


@pytest.mark.claim(id="markov/stage-table", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("flow, stage", [_stage_param(f, k) for f in ("replicator", "logit") for k in range(3)])
def test_stage_table(record_claim, flow, stage):
    """Every row of the §5.4 table: the median over 5 noise draws of t_{stage} is within ±5%
    (t1) or ±30% (t2, t3) of the spec's value.  The draw-0 values are recorded alongside."""
    col = 0 if flow == "replicator" else 1
    tol = 0.05 if stage == 0 else 0.30
    worst, rows = 0.0, {}
    for (m, H, eps), ref in STAGE_TABLE.items():
        ref = np.array(ref[col], float)
        med, times = median_stages(m=m, H=H, flow=flow, eps=eps, t_max=1.3 * ref[2])
        rows[f"m={m} H={H} eps={eps:g}"] = {"spec": ref[stage], "median": round(float(med[stage]), 2),
                                             "draw0": round(float(times[0, stage]), 2)}
        err = abs(med[stage] / ref[stage] - 1)
        worst = max(worst, err if np.isfinite(err) else np.inf)     # a stage never reached (NaN) fails
    record_claim(worst, tol, detail=rows)
    assert worst <= tol, rows


# --- phases --------------------------------------------------------------------------------------

@pytest.mark.claim(id="markov/competitive-first-ode", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("eps", [pytest.param(1e-2, marks=pytest.mark.xfail(strict=True, reason=(
    "eps = 1e-2: no separate competitive phase (t1 = 4.43, t2 = 6.65): at sqrt(t1 t2) the least mass on I(1) is "
    "0.02 and the pairwise TV 0.75, i.e. one head specialises while the others are still arriving"))),
    1e-6, 1e-10])
def test_competitive_first_ode(record_claim, eps):
    """fig10 (replicator): on the stage-1 plateau (t = √(t1 t2)) every head has ≥ 0.5 of its
    mass on I(1) and all pairwise TV distances are ≤ 0.1; on the stage-2 plateau (√(t2 t3)) the
    largest pairwise TV distance is ≥ 0.5 (a head has left)."""
    res = run(eps=eps, n_eval=2000)
    t1, t2, t3 = res.stage_times
    S1 = res.S[at_time(res, math.sqrt(t1 * t2))]
    S2 = res.S[at_time(res, math.sqrt(t2 * t3))]
    mass, tv1, tv2 = float(S1[:, 0].min()), max_tv(S1), max_tv(S2)
    detail = {"min_mass_I1": mass, "tv_stage1": tv1, "tv_stage2": tv2}
    record_claim(tv1, 0.1, detail=detail)
    assert mass >= 0.5 and tv1 <= 0.1 and tv2 >= 0.5, detail


@pytest.mark.claim(id="markov/cooperative-offsets-ode", paper=PAPER, provenance="reconstructed", kind="exact")
@pytest.mark.parametrize("eps", [1e-6, 1e-10])
def test_cooperative_offsets_ode(record_claim, eps):
    """fig10 (replicator): on the stage-2 plateau (t = √(t2 t3)) every head that stayed on
    block 1 has a negative value on block 2, v_{h,2} = −0.24 ± 0.05."""
    res = run(eps=eps, n_eval=2000)
    _, t2, t3 = res.stage_times
    i = at_time(res, math.sqrt(t2 * t3))
    stay = np.nonzero(res.S[i][:, 0] > 0.5)[0]
    v2 = res.V[i][stay, 1]
    err = float(np.abs(v2 + 0.24).max())
    detail = {"v_h2_staying_heads": v2.round(4).tolist(), "mass_I1": res.S[i][:, 0].round(3).tolist()}
    record_claim(err, 0.05, detail=detail)
    assert stay.size >= 1 and np.all(v2 < 0) and err <= 0.05, detail


@pytest.mark.claim(id="markov/nonsparse-limit", paper=PAPER, provenance="reconstructed", kind="exact")
def test_nonsparse_limit(record_claim):
    """fig10 with H = K = 3, ε = 1e-2, seeds 0..9, t = 3000: the loss falls below 1e-4 in every
    run, and in at least one run some head keeps > 0.2 of its mass on each of two blocks."""
    mixed, losses = [], []
    for seed in range(10):
        res = run(eps=1e-2, t_max=3000.0, seed=seed)
        mass = res.S[-1][:, :3]
        losses.append(float(res.loss[-1]))
        if ((mass > 0.2).sum(1) >= 2).any():
            mixed.append(seed)
    detail = {"mixed_seeds": mixed, "max_final_loss": max(losses)}
    record_claim(max(losses), 1e-4, detail=detail)
    assert max(losses) < 1e-4 and mixed, detail
