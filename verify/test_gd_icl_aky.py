"""Trained claims of the GD-ICL spec (docs/gd_icl.md §7, rows 17-18): the Akyürek et al. (ICLR 2023)
analogue [review] -- which algorithm a trained GPT-2 style in-context regressor matches, and
what linear probes read from its layers.

Runs (``aky_*`` in ``mechverify.training.gd_icl.runs``): d = 8, n = 16, w ~ N(0, I) (tau = 1), sigma = 0 or 0.5;
``big`` = 4 layers, width 64, 4 heads (docs/gd_icl.md §6.2), ``small`` = 2 layers, width 32.
``--scale paper`` trains 10000 Adam steps (the spec's 2000 were too few, see
``mechverify.training.gd_icl.runs``); ``--scale quick`` 1200 (big) and 2000 (small) steps with
warmup and an input-dimension curriculum.  The statements come from reviews of the paper
([review]); the paper's models were trained far longer.  A run that misses its convergence gate
(:func:`mechverify.training.gates.aky_gate`) makes its claims inconclusive; a claim that does
not hold for a run that met its gate is a measured finding (strict xfail).
"""

import numpy as np
import pytest

from mechverify.training import gd_icl
from mechverify.training.aky import best_match, compare_references, layer_probes
from mechverify.training.gates import aky_gate
from mechverify.training.runner import trained

PAPER = "akyurek-2023"
pytestmark = pytest.mark.trained
RUNS = {"big-noise-free": ("big", False), "big-noisy": ("big", True), "small-noise-free": ("small", False)}


# Findings (seed 0), only for runs that met their convergence gate.  --scale quick: no Aky run
# reaches its gate (see the README: matching OLS needs paper scale), so the claims are
# inconclusive there, with the gate's numbers.  --scale paper (10000 steps): the reference
# matches hold; the probes do not.  Strict: a change that makes them pass must be looked at.
AKY_OLS_RIDGE_FINDINGS: dict = {}
AKY_PROBES_FINDINGS = {
    "paper": ("the big noise-free model predicts like OLS after 10000 steps (risk 0.23; spd 0.23 to OLS"
              " vs 2.70 to GD) yet one-token linear probes do not recover the targets: at y_n the best "
              "intermediate R^2 is 0.25 (X^T y / n) and 0.22 (w_OLS), both after block 3 (0.32 / 0.33 "
              "after the last block); at the query token <= 0.08 everywhere. Aky's probe pools all "
              "positions with a learned attention, which we do not implement"),
}


@pytest.fixture(scope="module")
def runs(scale, recompute, device):
    """name -> (model, config), each trained once per cache."""
    out = {}
    for name, (size, noisy) in RUNS.items():
        config = gd_icl.runs(scale)[f"aky_{size}" + ("_noisy" if noisy else "")]
        out[name] = (trained(config, recompute=recompute, device=device)[0], config)
    return out


@pytest.fixture(scope="module")
def compared(runs):
    """name -> :func:`mechverify.training.aky.compare_references` of that run (512 held-out prompts)."""
    return {name: compare_references(model, config) for name, (model, config) in runs.items()}


@pytest.mark.claim(id="gd-icl/aky-ols-ridge", paper=PAPER, provenance="review", kind="trained",
                   findings=AKY_OLS_RIDGE_FINDINGS)
@pytest.mark.parametrize("case", ["big-noise-free", "big-noisy", "small-closer-to-gd"])
def test_aky_ols_ridge(record_claim, compared, case):
    """Metrics (Aky's two): squared prediction difference at the query (``spd``) and
    implicit-weight difference (``iwd``; implicit weights = least-squares fit of the model's
    predictions at 16 extra queries x ~ N(0, I) on each context), on 512 held-out prompts.
    References: OLS, ridge with the Bayes lambda = sigma^2 / tau^2 (noisy run only; at sigma = 0
    it is OLS), one GD step from 0 with its step tuned for risk, averaging X^T y / n, and zero.

    ``big-noise-free`` / ``big-noisy``: the big model's best-matching reference is the stated
    one by both metrics -- OLS at sigma = 0, Bayes ridge at sigma = 0.5.

    ``small-closer-to-gd``: "smaller models are closer to GD", asserted as: the small model's
    best-matching reference (noise-free task, same candidates, zero and averaging included) is
    the tuned GD step, by both metrics -- so it is a GD-like learner, not merely a model closer
    to GD than to OLS (a model stuck at the zero predictor is that too).  The big model's
    distances are recorded alongside.

    Gate (:func:`mechverify.training.gates.aky_gate`): the model's held-out risk closes >= 90 %
    of the gap from the zero predictor to the Bayes predictor (big runs) or to the tuned GD
    step (small run); otherwise the run is too short to say which algorithm it learned.

    Recorded error: the stated reference's ``spd`` over the closest other reference's (< 1
    when it is the best match)."""
    if case == "small-closer-to-gd":
        m, stated = compared["small-noise-free"], "gd"
        extra = {"big_spd": compared["big-noise-free"]["spd"]}
    else:
        stated = "ridge" if case == "big-noisy" else "ols"
        m, extra = compared[case], {}
    # Gate: the run closes >= 90 % of the risk gap from the zero predictor to the Bayes predictor
    # (big runs: OLS / Bayes ridge) or to one tuned GD step (small run); not whom it matches.
    gate = aky_gate(m["risk"], stated)
    record_claim.gate(gate.passed, **gate.as_kwargs())
    ratio = m["spd"][stated] / min(v for k, v in m["spd"].items() if k != stated)
    detail = {"best_spd": best_match(m["spd"]), "best_iwd": best_match(m["iwd"]), **m, **extra}
    record_claim(ratio, 1.0, detail=detail)
    assert best_match(m["spd"]) == stated, detail
    assert best_match(m["iwd"]) == stated, detail


@pytest.mark.claim(id="gd-icl/aky-probes", paper=PAPER, provenance="review", kind="trained",
                   findings=AKY_PROBES_FINDINGS)
def test_aky_probes(record_claim, runs, compared):
    """Linear probes (ridge, intercept, fitted on 2048 held-out prompts, R^2 on 2048 others) of
    the big noise-free model recover the moment X^T y / n and w_OLS (= w here: sigma = 0 and
    n = 16 > d): for each target, the best R^2 over the intermediate layers exceeds 0.9.

    Features: the residual stream at the last label token y_n, where Aky decode the targets
    from (per the review of their Fig. 4; their probe pools positions with a learned
    attention, ours reads one token).  "Intermediate" = after blocks 1 .. L-1, i.e. neither
    the embedding (index 0) nor the last block's output, which feeds the read-out directly.
    The same probes at the query token are recorded in the detail.  Gate: the big noise-free
    run's, as in ``gd-icl/aky-ols-ridge`` (a model that has not learned the task need not hold
    the targets)."""
    model, config = runs["big-noise-free"]
    gate = aky_gate(compared["big-noise-free"]["risk"], "ols")      # the model has learned the task
    record_claim.gate(gate.passed, **gate.as_kwargs())
    r2 = layer_probes(model, config, position="last_y")
    at_query = layer_probes(model, config, position="query")
    peaks = {k: float(v[1:-1].max()) for k, v in r2.items()}
    detail = {"r2_last_y": {k: v.round(4).tolist() for k, v in r2.items()}, "peak_intermediate": peaks,
              "r2_query": {k: v.round(4).tolist() for k, v in at_query.items()}}
    record_claim(1.0 - min(peaks.values()), 0.1, detail=detail)
    assert all(p > 0.9 for p in peaks.values()), detail
