"""Claims: trained minimal models on the staged-Markov task (docs/markov.md §6, §7).

``--scale quick`` (default): the reduced setting of docs/markov.md §6.2 (d = 20, blocks [2, 2, 2],
L = 10, AdamW lr 0.08, clip 1, ReduceLROnPlateau) with small init (σ_Q = 1e-9, W_V = 0) and
Frobenius-orthogonal A* (``mechverify.training.markov.runs``, served by the ``configs`` and
``get_run`` fixtures of verify/conftest.py).  The ``main`` run is online (256
fresh sequences per step, 1500 steps): on a fixed set of 2000 sequences the model overfits
before stage 3 completes.  The early-stopping claim uses fixed sets of 100, 300 and 2000
sequences (full batch); the acquisition order also uses online runs with reversed importance and
with unequal blocks.  The learned 1/2/3-block baselines (the minimal model restricted to
the lags of the k nearest blocks, Xavier init) train 1500 online steps each.
The timing claim adds a σ_Q = 1e-3 run and an m = 2.5 run at quick scale; ``--scale paper``
uses d = 50, L = 20 and wider σ_Q and m sweeps (long; GPU advised).

Stage times of a run: the first logged step where the validation CE falls below the midpoint
between consecutive reference levels ln d, CE_1, CE_2, CE_3 (CE_k = best validation CE of the
learned k-block baseline).  Block mass: each head's mean attention on I(k) at the last query
position.  A claim that does not hold at our scale is an xfail carrying the measured numbers.
"""

import math

import numpy as np
import pytest

from mechverify.training.markov import acquisition_steps, baseline_payloads, loss_stage_times, plateau_ce_levels
from mechverify.training.gates import Gate, combine, early_stopping_gate, markov_gate, markov_levels

PAPER = "yuksel-2026"
pytestmark = pytest.mark.trained

SYMMETRY_PRESERVED_TRAINED_FINDINGS = {
    "quick": {
        "kl1-smallest": ("in the first 20 steps, while the model is still near the uniform predictor, KL to "
                         "A*_{1:2} is the smallest (step 10: KL_1, KL_1:2, KL_1:3 = 1.889, 1.840, 1.844); from "
                         "step 30 on KL to A*_1 is the smallest at every logged step (final 0.922, 1.054, 1.101) "
                         "and the heads stay exactly identical"),
    },
    "paper": {
        "kl1-smallest": ("d = 50, L = 20, 500 steps, 500 sequences (gate met, heads exactly identical): KL to "
                         "A*_{1:2} is the smallest at every logged step 10..500, never KL to A*_1 (step 10: "
                         "KL_1, KL_1:2, KL_1:3 = 2.679, 2.674, 2.683; final 2.640, 2.345, 2.465), so identical "
                         "heads approach the two-block teacher, not the one-block one; training seed 0"),
    },
}
# No m-sweep finding: at --scale quick m = 2.5 never puts a head's mass > 0.5 on block 3 within
# 1500 steps (acquisitions at steps 50, 1260, -), nor at --scale paper within 3000 steps (seed 0:
# closes 0.84 of the ce_2 -> ce_3 gap, block 3 never past 0.5), so that sweep is inconclusive.
TRAINED_VS_ODE_TIMING_FINDINGS = {
    "quick": {
        "sigma": ("both runs of the sweep meet the gate, but t3 - t2 shrinks as sigma_Q shrinks, against the "
                  "ODE: acquisition steps (t1, t2, t3) = (50, 470, 1040) at sigma_Q = 1e-3 and (50, 930, 1340) "
                  "at 1e-9, so t3 - t2 = 570 then 410 (the smaller init delays stage 2 by 460 steps and "
                  "stage 3 by only 300); one training seed, quick scale"),
    },
    "paper": {
        "sigma": ("d = 50, L = 20, 3000 steps, every run of the sweep meets the gate and acquires all three "
                  "blocks, but t3 - t2 does not increase as sigma_Q shrinks: (t1, t2, t3) = (120, 270, 970) at "
                  "sigma_Q = 1e-3, (120, 400, 1100) at 1e-6, (120, 440, 840) at 1e-9, so t3 - t2 = 700, 700, 400 "
                  "(as at quick scale, the smaller init delays stage 2, not stage 3); training seed 0"),
    },
}


def _stages(config, payload, recompute=False, device="cpu"):
    """(steps, stage times t_1..t_h, reference levels) from the validation CE."""
    levels = plateau_ce_levels(config, baseline_payloads(config, recompute=recompute, device=device))
    steps = payload["log_steps"].numpy()
    return steps, loss_stage_times(steps, payload["val"].numpy(), levels), levels


def _at(steps, t):
    return int(np.searchsorted(steps, t))


def _max_tv(lag_mass):
    H = lag_mass.shape[0]
    return max(0.5 * np.abs(lag_mass[a] - lag_mass[b]).sum() for a in range(H) for b in range(H))


def _levels(config, main=None, recompute=False, device="cpu") -> np.ndarray:
    """Gate levels of a run: the learned k-block baselines' (the levels the stage times use) of
    the run itself or, for a run on the main run's task, of ``main``; else the teachers' own
    (:func:`mechverify.training.gates.markov_levels`, used at stage h only)."""
    source = config if tuple(config.baselines) == tuple(range(1, config.task.h + 1)) else (
        main if main is not None and main.task == config.task else None)
    if source is not None:
        return plateau_ce_levels(source, baseline_payloads(source, recompute=recompute, device=device))
    return markov_levels(config.task)


def _acquired(acq: np.ndarray, name: str = "run") -> Gate:
    """Every block has an acquisition step (a head's mass on I(k) > 0.5 within the run).  The
    order and timing claims are measured on these steps: a block never acquired is not
    measured, so the claim is inconclusive, never decided "by infinity"."""
    missing = [int(k) + 1 for k in np.flatnonzero(~np.isfinite(acq))]
    return Gate(not missing, "every block acquired within the run",
                {f"{name}.blocks_not_acquired": ",".join(map(str, missing)) or "none"})


def _gate(record_claim, config, payload, stage=None, levels=None, also: Gate | None = None) -> Gate:
    """Record the convergence gate of one run (:func:`mechverify.training.gates.markov_gate`: the
    best validation CE has crossed the midpoint of the last level drop before ``stage``, default
    h) and return it; an unmet gate stops the test as inconclusive."""
    levels = _levels(config) if levels is None else levels
    gate = markov_gate(payload, levels, config.task.h if stage is None else stage)
    gate = gate if also is None else gate & also
    record_claim.gate(gate.passed, **gate.as_kwargs())
    return gate


@pytest.mark.claim(id="markov/symmetry-preserved-trained", paper=PAPER, provenance="reconstructed", kind="trained",
                   findings=SYMMETRY_PRESERVED_TRAINED_FINDINGS)
@pytest.mark.parametrize("part", ["heads-identical", "kl1-smallest"])
def test_symmetry_preserved_trained(record_claim, configs, get_run, part):
    """σ_Q = 0, W_V = 0, float64.  heads-identical: the heads' parameters and attention stay
    identical (to 1e-10).  kl1-smallest: KL to the one-block teacher A*_1 is the smallest of
    the three truncated-teacher KLs at every logged step after step 0."""
    model, payload = get_run("symmetric")
    # identical heads learn one block at most: gated at stage 1 with the main run's learned
    # 1-block baseline (same task; the symmetric run trains no baselines of its own)
    _gate(record_claim, configs["symmetric"], payload, stage=1, levels=_levels(configs["main"]))
    if part == "heads-identical":
        spread = max(float((model.W_Q - model.W_Q[:1]).abs().max()),
                     float((model.W_V - model.W_V[:1]).abs().max()),
                     float((payload["lag_mass"] - payload["lag_mass"][:, :1]).abs().max()))
        record_claim(spread, 1e-10, detail={"head_spread": spread})
        assert spread <= 1e-10
        return
    steps = payload["log_steps"].numpy()[1:]
    kl = payload["kl_teacher"].numpy()[1:]
    bad = steps[np.argmin(kl, axis=1) != 0]
    detail = {"steps_where_kl1_not_smallest": bad.tolist(),
              "kl_at_those_steps": kl[np.argmin(kl, 1) != 0].round(4).tolist(), "final_kl": kl[-1].round(4).tolist()}
    record_claim(float(bad.size), 0.5, detail=detail)
    assert bad.size == 0, detail


@pytest.mark.claim(id="markov/competitive-first", paper=PAPER, provenance="paper", kind="trained")
def test_competitive_first(record_claim, configs, get_run):
    """Main run: on the stage-1 plateau (step √(t1 t2)) every head has ≥ 0.5 of its mass on
    I(1) and the heads' mean attention patterns are within TV 0.1 of each other; on the stage-2
    plateau (√(t2 t3)) the largest pairwise TV is ≥ 0.5."""
    config = configs["main"]
    _, payload = get_run("main")
    _gate(record_claim, config, payload)
    steps, t, levels = _stages(config, payload)
    assert np.all(np.isfinite(t)), {"stage_times": t.tolist(), "levels": levels.tolist()}
    i1, i2 = _at(steps, math.sqrt(t[0] * t[1])), _at(steps, math.sqrt(t[1] * t[2]))
    mass = payload["mass"].numpy()
    lag_mass = payload["lag_mass"].numpy()
    tv1, tv2 = _max_tv(lag_mass[i1]), _max_tv(lag_mass[i2])
    detail = {"stage_times": t.tolist(), "step_plateau1": int(steps[i1]), "mass_I1": mass[i1, :, 0].round(3).tolist(),
              "tv_plateau1": tv1, "step_plateau2": int(steps[i2]), "tv_plateau2": tv2}
    record_claim(tv1, 0.1, detail=detail)
    assert mass[i1, :, 0].min() >= 0.5 and tv1 <= 0.1 and tv2 >= 0.5, detail


@pytest.mark.claim(id="markov/cooperative-offsets", paper=PAPER, provenance="reconstructed", kind="trained")
def test_cooperative_offsets(record_claim, configs, get_run):
    """Main run (σ_Q = 1e-9, W_V = 0, orthogonal A*): on the stage-2 plateau (step √(t2 t3)),
    after one head has moved to block 2, some head that stayed on block 1 (mass > 0.5) has a
    negative value alignment ⟨W_V^h, A*_2⟩/‖A*_2‖ < 0."""
    config = configs["main"]
    _, payload = get_run("main")
    _gate(record_claim, config, payload)
    steps, t, _ = _stages(config, payload)
    i = _at(steps, math.sqrt(t[1] * t[2]))
    mass, align = payload["mass"].numpy()[i], payload["align"].numpy()[i]
    stay = np.nonzero(mass[:, 0] > 0.5)[0]
    moved = np.nonzero(mass[:, 1] > 0.5)[0]
    detail = {"step": int(steps[i]), "mass": mass.round(3).tolist(), "align": align.round(3).tolist()}
    best = float(align[stay, 1].min()) if stay.size else math.inf
    record_claim(best, 0.0, detail=detail)
    assert moved.size >= 1 and stay.size >= 1 and best < 0, detail


@pytest.mark.claim(id="markov/acquisition-order", paper=PAPER, provenance="paper", kind="trained")
@pytest.mark.parametrize("run", ["main", "reversed", "unequal"])
def test_acquisition_order(record_claim, configs, get_run, scale, run):
    """The blocks are acquired (first logged step where any head's mass on I(k) > 0.5) in the
    order of decreasing energy e_k = μ_k²‖α_{I(k)}‖²: the importance order for ``main`` and
    ``reversed`` (most important block farthest back), block 2 first for ``unequal`` (sizes
    (1, 3), m = 1.25: e = (1.56 d, 3 d))."""
    if run not in configs:
        pytest.skip(f"run {run!r} is trained at --scale paper only")
    config = configs[run]
    _, payload = get_run(run)
    steps = payload["log_steps"].numpy()
    acq = acquisition_steps(steps, payload["mass"].numpy())
    _gate(record_claim, config, payload, levels=_levels(config, configs["main"]), also=_acquired(acq))
    expected = [int(k) for k in np.argsort(-config.task.energies(), kind="stable")]
    order = [int(k) for k in np.argsort(acq, kind="stable") if np.isfinite(acq[k])]
    detail = {"acquisition_steps": acq.tolist(), "order": order, "energy_order": expected}
    record_claim(0.0 if order == expected else 1.0, 0.5, detail=detail)
    assert order == expected, detail


@pytest.mark.claim(id="markov/plateau-kl-baselines", paper=PAPER, provenance="reconstructed", kind="trained")
def test_plateau_kl_baselines(record_claim, configs, get_run):
    """Main run: for k = 1, 2, 3 the logged step of least KL(model ‖ learned k-block baseline)
    lies inside stage k, [t_k, t_{k+1}) (t_4 = end of training)."""
    config = configs["main"]
    _, payload = get_run("main")
    _gate(record_claim, config, payload)
    steps, t, _ = _stages(config, payload)
    kl = payload["kl_base"].numpy()
    bounds = list(t) + [steps[-1] + 1]
    argmins = [int(steps[np.argmin(kl[:, k])]) for k in range(3)]
    inside = [bounds[k] <= argmins[k] < bounds[k + 1] for k in range(3)]
    detail = {"stage_times": t.tolist(), "argmin_steps": argmins, "min_kl": kl.min(0).round(4).tolist()}
    record_claim(float(3 - sum(inside)), 0.5, detail=detail)
    assert all(inside), detail


@pytest.mark.claim(id="markov/online-stages", paper=PAPER, provenance="paper-code", kind="trained")
def test_online_stages(record_claim, configs, get_run):
    """Online run (fresh sequences every step): the validation CE crosses all three stage
    midpoints, at three distinct logged steps (three separate drops)."""
    config = configs["online"]
    _, payload = get_run("online")
    _gate(record_claim, config, payload)
    steps, t, levels = _stages(config, payload)
    drops = int(np.sum(np.isfinite(t)))
    distinct = drops == 3 and bool(np.all(np.diff(t) > 0))
    detail = {"stage_times": t.tolist(), "levels": levels.round(4).tolist(),
              "final_val": float(payload["val"][-1])}
    record_claim(3 - drops, 0.5, detail=detail)
    assert distinct, detail


@pytest.mark.claim(id="markov/early-stopping-class", paper=PAPER, provenance="paper", kind="trained")
def test_early_stopping_class(record_claim, configs, get_run):
    """At the best-validation logged step, the closest learned baseline (argmin_k KL(model ‖
    k-block baseline)) is non-decreasing in the number of training sequences.  Gate
    (:func:`mechverify.training.gates.early_stopping_gate`): every run trained past its best
    validation step, so that step is an early-stopping point and not the end of the run."""
    sizes = sorted(int(name.split("_")[1]) for name in configs if name.startswith("data_"))
    classes, rows = [], {}
    gate = combine({f"data_{n}": early_stopping_gate(get_run(f"data_{n}")[1]) for n in sizes})
    record_claim.gate(gate.passed, **gate.as_kwargs())
    for n in sizes:
        _, payload = get_run(f"data_{n}")
        steps = payload["log_steps"].numpy()
        i = int(np.nonzero(steps == payload["best_step"])[0][0])
        kl = payload["kl_base"].numpy()[i]
        classes.append(int(np.argmin(kl)) + 1)
        rows[n] = {"best_step": int(payload["best_step"]), "best_val": float(payload["val"][i]),
                   "kl_base": kl.round(4).tolist()}
    detail = {"classes": dict(zip(sizes, classes)), "runs": rows}
    record_claim(float(np.sum(np.diff(classes) < 0)), 0.5, detail=detail)
    assert np.all(np.diff(classes) >= 0), detail


def _ode_stage_times(m: float) -> np.ndarray:
    """Stage times t1, t2, t3 of the reduced ODE (fig10 target at ``m``, 3 heads, replicator
    flow, eps = 1e-6, seed 0), run until the last stage is entered."""
    from mechverify.theory.dynamics.markov import fig10_target, simulate
    return simulate(fig10_target(m), 3, "replicator", 1e-6, 4000.0, 0, n_eval=400, stop_at_last_stage=True).stage_times


@pytest.mark.claim(id="markov/trained-vs-ode-timing", paper=PAPER, provenance="reconstructed", kind="trained",
                   findings=TRAINED_VS_ODE_TIMING_FINDINGS)
@pytest.mark.parametrize("sweep", ["sigma", "m"])
def test_trained_vs_ode_timing(record_claim, configs, get_run, sweep):
    """Later stages lengthen as in the reduced ODE (where t3 − t2 grows as ε shrinks and as m
    grows: 60, 184, 1445 for m = 1.3, 1.7, 2.5).  Stage times t_k: block acquisition steps
    (first logged step where a head's mass on I(k) exceeds 0.5).

    Gate: every run of the sweep entered its last stage (:func:`mechverify.training.gates.markov_gate`)
    and acquired every block, so no stage time is missing: a block never acquired is "not
    measured" (inconclusive), never "infinitely late".  ``sigma``: t3 − t2 increases as σ_Q shrinks.  ``m``: t3 − t2 increases
    with m, and the spec's ratio (t3 − t2)/(t2 − t1) orders across m as in the ODE (same
    ranking)."""
    prefix = "sigma_" if sweep == "sigma" else "m_"
    names = [n for n in configs if n.startswith(prefix)]
    if sweep == "sigma":
        names.sort(key=lambda n: -configs[n].sigma_q)
    else:
        names.sort(key=lambda n: configs[n].task.m)
    payloads = {n: get_run(n)[1] for n in names}
    times = {n: acquisition_steps(payloads[n]["log_steps"].numpy(), payloads[n]["mass"].numpy()) for n in names}
    gate = combine({n: markov_gate(payloads[n], _levels(configs[n], configs["main"]), configs[n].task.h)
                    & _acquired(times[n], n) for n in names})
    record_claim.gate(gate.passed, **gate.as_kwargs())
    detail = {"order": names, "acquisition": {n: t.tolist() for n, t in times.items()}}
    gaps = [float(times[n][2] - times[n][1]) for n in names]
    detail["t3_minus_t2"] = gaps
    ok = bool(np.all(np.diff(gaps) > 0))
    if sweep == "m":
        ratio = [float((times[n][2] - times[n][1]) / max(times[n][1] - times[n][0], 1)) for n in names]
        ode = [_ode_stage_times(configs[n].task.m) for n in names]
        ode_ratio = [float((t[2] - t[1]) / (t[1] - t[0])) for t in ode]
        same_rank = bool(np.array_equal(np.argsort(ratio, kind="stable"), np.argsort(ode_ratio, kind="stable")))
        detail.update(ratio_trained=ratio, ratio_ode=ode_ratio, ode_stage_times=[t.tolist() for t in ode])
        ok = ok and same_rank
    record_claim(0.0 if ok else 1.0, 0.5, detail=detail)
    assert ok, detail
