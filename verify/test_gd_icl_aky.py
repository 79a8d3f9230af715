"""Trained claims of the GD-ICL spec (gd_icl.md §7, rows 17-18): the Akyürek et al. (ICLR 2023)
analogue [review] -- which algorithm a trained GPT-2 style in-context regressor matches, and
what linear probes read from its layers.

Runs (``aky_*`` in ``mechverify.training.gd_icl.runs``): d = 8, n = 16, w ~ N(0, I) (tau = 1), sigma = 0 or 0.5;
``big`` = 4 layers, width 64, 4 heads (spec §6.2), ``small`` = 2 layers, width 32.
``--scale paper`` trains 10000 Adam steps (the spec's 2000 were too few, see
``mechverify.training.gd_icl.runs``), ``--scale quick`` 600.  The statements
come from reviews of the paper ([review]); the paper's models were trained far longer, and a
claim that does not hold at our scale is recorded as a measured finding (strict xfail).
"""

import numpy as np
import pytest

from mechverify.training import gd_icl
from mechverify.training.aky import best_match, compare_references, layer_probes
from mechverify.training.runner import trained

PAPER = "akyurek-2023"
pytestmark = pytest.mark.trained
RUNS = {"big-noise-free": ("big", False), "big-noisy": ("big", True), "small-noise-free": ("small", False)}


# Findings (seed 0).  --scale quick: 600 steps do not take the models off the trivial plateau
# (prefix-averaged training loss ~3.95 vs 4.0 at the start), so every model matches the zero
# predictor best.  --scale paper (10000 steps): the reference matches hold; the probes do not.
# Strict: a change that makes them pass must be looked at.
AKY_OLS_RIDGE_FINDINGS = {
    "quick": {
        "big-noise-free": ("after 600 steps the big model still predicts ~0 (training loss 3.94; risk 8.82 vs the "
                           "zero predictor's 8.84): best match zero by both metrics (spd 0.099 to zero vs 5.37 to "
                           "GD, 8.82 to OLS; iwd 0.10 vs 4.95, 8.16); it holds at --scale paper"),
        "big-noisy": ("after 600 steps best match zero by both metrics (spd 0.139 to zero vs 5.05 to GD, 8.12 "
                      "to Bayes ridge, 8.65 to OLS); training loss 3.99; holds at --scale paper"),
        "small-closer-to-gd": ("after 600 steps the small model predicts ~0: best match zero (spd 0.033 vs 5.34 to GD, "
                               "8.76 to OLS); holds at --scale paper"),
    },
}
AKY_PROBES_FINDINGS = {
    "quick": ("after 600 steps no probe beats the train mean: held-out R^2 at y_n <= -0.004 (X^T y / n)"
              " and <= -0.012 (w_OLS) at every intermediate layer"),
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

    Recorded error: the stated reference's ``spd`` over the closest other reference's (< 1
    when it is the best match)."""
    if case == "small-closer-to-gd":
        m, stated = compared["small-noise-free"], "gd"
        extra = {"big_spd": compared["big-noise-free"]["spd"]}
    else:
        stated = "ridge" if case == "big-noisy" else "ols"
        m, extra = compared[case], {}
    ratio = m["spd"][stated] / min(v for k, v in m["spd"].items() if k != stated)
    detail = {"best_spd": best_match(m["spd"]), "best_iwd": best_match(m["iwd"]), **m, **extra}
    record_claim(ratio, 1.0, detail=detail)
    assert best_match(m["spd"]) == stated, detail
    assert best_match(m["iwd"]) == stated, detail


@pytest.mark.claim(id="gd-icl/aky-probes", paper=PAPER, provenance="review", kind="trained",
                   findings=AKY_PROBES_FINDINGS)
def test_aky_probes(record_claim, runs):
    """Linear probes (ridge, intercept, fitted on 2048 held-out prompts, R^2 on 2048 others) of
    the big noise-free model recover the moment X^T y / n and w_OLS (= w here: sigma = 0 and
    n = 16 > d): for each target, the best R^2 over the intermediate layers exceeds 0.9.

    Features: the residual stream at the last label token y_n, where Aky decode the targets
    from (per the review of their Fig. 4; their probe pools positions with a learned
    attention, ours reads one token).  "Intermediate" = after blocks 1 .. L-1, i.e. neither
    the embedding (index 0) nor the last block's output, which feeds the read-out directly.
    The same probes at the query token are recorded in the detail."""
    model, config = runs["big-noise-free"]
    r2 = layer_probes(model, config, position="last_y")
    at_query = layer_probes(model, config, position="query")
    peaks = {k: float(v[1:-1].max()) for k, v in r2.items()}
    detail = {"r2_last_y": {k: v.round(4).tolist() for k, v in r2.items()}, "peak_intermediate": peaks,
              "r2_query": {k: v.round(4).tolist() for k, v in at_query.items()}}
    record_claim(1.0 - min(peaks.values()), 0.1, detail=detail)
    assert all(p > 0.9 for p in peaks.values()), detail
