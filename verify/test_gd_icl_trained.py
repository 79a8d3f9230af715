"""Trained claims of the GD-ICL spec (docs/gd_icl.md §7, rows 13-16): trained linear
self-attention against gradient descent, GD++ and the Zhang-Frei-Bartlett optimum.

Convergence gates (:mod:`mechverify.training.gates`): an L-layer model's held-out query loss is
at most that of L tuned GD steps + 2 SE (paired): the model class contains that GD, so a
converged model reaches it whatever algorithm it ends up running.  The SGD-tracks-ODE claim
instead needs a decay curve long enough to fit: >= 5 points per entry above 5 SE.

Runs come from the catalogue ``mechverify.training.gd_icl.runs`` through the cache (the ``configs``
and ``get_run`` fixtures of verify/conftest.py), so the figures reuse them.
"""

import numpy as np
import pytest

from mechverify.constructions.gd_icl import gd_transformer
from mechverify.theory.algorithms.tuning import tune_gd_lr, tune_gdpp
from mechverify.theory.symbolic.lsa_optimum import zfb_gamma
from mechverify.training.analysis import compare_with_gd, compare_with_gdpp, interpolation_risks
from mechverify.training.gates import Gate, lsa_gate

TUNE_PROMPTS, EVAL_PROMPTS = 8192, 4096
TUNE_SEED, EVAL_SEED = 10**6, 10**6 + 1   # disjoint from the training streams (seed 0.., step seeds)


def _tune_and_gate(record_claim, config, model, steps: int):
    """(tuning prompts, GD step size tuned for ``steps`` steps, held-out prompts) of a run, after
    recording its convergence gate (:func:`lsa_gate`: held-out loss at most that of ``steps``
    tuned GD steps + 2 SE)."""
    tune = config.sample(TUNE_PROMPTS, TUNE_SEED)
    lr, _ = tune_gd_lr(tune.X, tune.y, tune.x_query, tune.y_query, steps, lr_max=50.0)
    ev = config.sample(EVAL_PROMPTS, EVAL_SEED)
    gate = lsa_gate(model, ev, lr, steps)
    record_claim.gate(gate.passed, **gate.as_kwargs())
    return tune, lr, ev


@pytest.mark.claim(id="gd-icl/trained-lsa-matches-gd", paper="von-oswald-2023", provenance="paper-code",
                   kind="trained")
def test_trained_lsa_matches_gd(record_claim, configs, get_run):
    config = configs["vo_1"]
    model, _ = get_run("vo_1")
    _, lr, ev = _tune_and_gate(record_claim, config, model, 1)
    m = compare_with_gd(model, ev, lr, 1)
    alphas = np.linspace(0.0, 1.0, 11)
    risks = interpolation_risks(model, gd_transformer(config.d, 1, lr), ev, alphas)
    # Claim: sensitivity cosine > 0.99 (spec tolerance); error = 1 - cosine.
    record_claim(1.0 - m["sens_cos_mean"], 0.01,
                 detail={"lr_star": lr, **m, "interpolation_risk_max_over_ends": float(
                     risks.max() / max(risks[0], risks[-1]))})
    assert m["sens_cos_mean"] > 0.99, m


# A finding at --scale quick only: at --scale paper (10 000 steps) the 2-layer model passes.
GDPP_DEEPER_FINDINGS = {
    "quick": {
        "2": ("finding at CPU scale (5k Adam steps, d = N = 10): the 2-layer trained LSA is closer to "
              "plain 2-step GD than to tuned GD++ (RMS prediction difference 0.177 to GD vs 0.241 to "
              "GD++, ratio 1.36); its risk 0.139 lies between GD's 0.157 and GD++'s 0.111, i.e. it has "
              "not reached the GD++ solution. The 3-layer model passes."),
    },
}


@pytest.mark.claim(id="gd-icl/gdpp-deeper", paper="von-oswald-2023", provenance="paper-code", kind="trained",
                   findings=GDPP_DEEPER_FINDINGS)
@pytest.mark.parametrize("n_layers", [2, 3])
def test_gdpp_deeper(record_claim, configs, get_run, n_layers):
    config = configs[f"vo_{n_layers}"]
    model, _ = get_run(f"vo_{n_layers}")
    tune, lr, ev = _tune_and_gate(record_claim, config, model, n_layers)
    lr_pp, gamma, _ = tune_gdpp(tune.X, tune.y, tune.x_query, tune.y_query, n_layers, lr0=lr)
    to_gd = compare_with_gd(model, ev, lr, n_layers)
    to_pp = compare_with_gdpp(model, ev, lr_pp, gamma, n_layers)
    ratio = to_pp["pred_diff_rms"] / to_gd["pred_diff_rms"]
    record_claim(ratio, 1.0, detail={"n_layers": n_layers, "gd_lr": lr, "gdpp_lr": lr_pp, "gdpp_gamma": gamma,
                                     "diff_to_gd": to_gd["pred_diff_rms"], "diff_to_gdpp": to_pp["pred_diff_rms"],
                                     "risk_model": to_gd["risk_model"], "risk_gd": to_gd["risk_ref"],
                                     "risk_gdpp": to_pp["risk_ref"]})
    assert ratio < 1.0, (to_gd, to_pp)


@pytest.mark.claim(id="gd-icl/zfb-optimum", paper="zhang-frei-bartlett-2024", provenance="paper", kind="trained")
def test_zfb_optimum(record_claim, configs, get_run):
    config = configs["zfb"]
    model, payload = get_run("zfb")
    _tune_and_gate(record_claim, config, model, 1)
    G = payload["G"][-1].numpy()
    target = np.linalg.inv(zfb_gamma(np.asarray(config.cov_diag), config.n))
    err = float(np.abs(G - target).max())
    record_claim(err, 0.05, detail={"steps": config.steps, "batch": config.batch})
    assert err <= 0.05


def _resolvable(dev: np.ndarray, se: np.ndarray) -> int:
    """Number of leading points of a decay curve that stand 5 standard errors above 0 (and
    above 2 % of the start)."""
    ok = (np.abs(dev) > 5 * se) & (np.abs(dev) > 0.02 * abs(dev[0]))
    return int(np.argmin(ok)) if not ok.all() else len(ok)


def _fit_decay_rate(dev: np.ndarray, se: np.ndarray, lr: float, steps: np.ndarray) -> float:
    """Decay rate per unit time (t = lr * step) of a mean trajectory dev_t ~ dev_0 q^step:
    log-linear fit over the :func:`_resolvable` leading points, then the exact
    discrete-to-continuous map rate = (1 - q) / lr of the mean's linear recursion."""
    last = _resolvable(dev, se)
    slope = np.polyfit(steps[:last], np.log(np.abs(dev[:last])), 1)[0]
    return (1.0 - np.exp(slope)) / lr


@pytest.mark.claim(id="gd-icl/zfb-sgd-tracks-ode", paper="zhang-frei-bartlett-2024", provenance="reconstructed",
                   kind="trained")
def test_zfb_sgd_tracks_ode(record_claim, configs, get_run):
    names = [name for name in configs if name.startswith("zfb_track_")]
    runs = [get_run(name)[1] for name in names]
    steps = runs[0]["log_steps"].numpy()
    Gs = np.stack([r["G"].numpy() for r in runs])                   # (seeds, T, d, d)
    config = configs[names[0]]
    lam = np.asarray(config.cov_diag)
    m = np.diag(zfb_gamma(lam, config.n))                            # m_l = (1+1/N) lam_l + tr/N
    target = np.diag(1.0 / m)
    dev = Gs.mean(axis=0) - target
    se = Gs.std(axis=0, ddof=1) / np.sqrt(len(runs))
    points = min(_resolvable(dev[:, k, l], se[:, k, l]) for k in range(config.d) for l in range(config.d))
    gate = Gate(points >= 5, "decay curve resolvable: >= 5 leading points above 5 SE for every entry",
                {"min_resolvable_points": points, "seeds": len(runs)})
    record_claim.gate(gate.passed, **gate.as_kwargs())
    worst = 0.0
    for k in range(config.d):
        for l in range(config.d):
            predicted = lam[k] * lam[l] * m[l]
            fitted = _fit_decay_rate(dev[:, k, l], se[:, k, l], config.lr, steps)
            rel = abs(fitted - predicted) / predicted
            record_claim(rel, 0.10, detail={"entry": [k, l], "fitted": fitted, "predicted": predicted})
            worst = max(worst, rel)
    assert worst <= 0.10
