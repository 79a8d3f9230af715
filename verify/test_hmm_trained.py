"""Claims: a small GPT trained on a mixture of HMMs (docs/hmm.md §6, §7): ICL
curves against the Bayes mixture, layer-wise probes, position independence.

``--scale quick`` (default): one shared run, 64 HMMs x 8 states, O = 8, rank 4, a 4-layer
GPT (d_model 48) for 2000 steps (``mixture`` in ``mechverify.training.hmm.runs``).  ``--scale paper``: 256 HMMs
x 16 states, 6 layers (GPU advised).  The paper's model has >= 14 layers and 8192 HMMs x
128 states; a claim that fails at our scale is reported as measured (strict xfail).
"""

import math

import numpy as np
import pytest
from scipy import stats

from mechverify.training import hmm
from mechverify.training.hmm import first_layer_at, icl_table, independence_scores, probe_table
from mechverify.training.gates import hmm_gate
from mechverify.training.runner import trained

PAPER = "hao-ye-han-zhang-2025"
pytestmark = pytest.mark.trained

# Probe claims use the block outputs, layers 1..L: layer 0 (the embedding: the token and its
# position, no attention) is recorded in the details and shown in the figures.

# Findings only for a run that met its convergence gate.  The quick run (2000 steps) stays
# 0.06-0.13 nats above the Bayes mixture (gate: 0.05), so every claim below is inconclusive
# at --scale quick; what its probes showed (peak layers [4, 1, 1, ...], Indep_l falling with
# depth) is in the README as a measurement of an unconverged model, not as a finding.
PROBE_PEAK_SHIFT_FINDINGS: dict = {}
TIME_DISENTANGLE_FINDINGS: dict = {}


@pytest.fixture(scope="module")
def run(scale, recompute, device):
    config = hmm.runs(scale)["mixture"]
    model, payload = trained(config, recompute=recompute, device=device)
    return model, config


@pytest.fixture(scope="module")
def icl(run):
    model, config = run
    return icl_table(model, config, 2000)


@pytest.fixture(scope="module")
def gate(icl):
    """Convergence gate of the run (:func:`mechverify.training.gates.hmm_gate`): mean held-out
    log-loss within 0.05 nats of the exact Bayes mixture at every n.  Every claim below reads
    the model's mechanism (curves, probes, order sensitivity); a model that has not yet
    reached the optimal predictor's loss cannot be judged on them."""
    return hmm_gate(icl)


@pytest.fixture(scope="module")
def probes(run):
    model, config = run
    return probe_table(model, config)


@pytest.mark.claim(id="hmm/icl-curve", paper=PAPER, provenance="review", kind="trained")
@pytest.mark.parametrize("axis", ["demos", "length"])
def test_icl_curve(record_claim, gate, icl, axis):
    """Next-observation accuracy (argmax = sampled o_{t+1}, 2000 held-out prompts per n) is
    non-decreasing, up to drops of 1 pp, in the number of demonstrations n = 0..4 (averaged
    over test positions) and in the test position t = 1..T-1 (averaged over n; row t = 0,
    the first observation, is predicted from its stationary law and is excluded)."""
    record_claim.gate(gate.passed, **gate.as_kwargs())
    ns = sorted(icl)
    if axis == "demos":
        curve = np.array([icl[n]["model"]["acc"].mean() for n in ns])
        bayes = np.array([icl[n]["bayes"]["acc"].mean() for n in ns])
    else:
        curve = np.mean([icl[n]["model"]["acc"] for n in ns], axis=0)[1:]
        bayes = np.mean([icl[n]["bayes"]["acc"] for n in ns], axis=0)[1:]
    drop = float(max(0.0, -np.diff(curve).min()))
    detail = {"axis": axis, "model_acc": curve.round(4).tolist(), "bayes_acc": bayes.round(4).tolist()}
    record_claim(drop, 0.01, detail=detail)
    assert drop <= 0.01, detail


@pytest.mark.claim(id="hmm/above-bayes", paper=PAPER, provenance="reconstructed", kind="trained")
def test_above_bayes(record_claim, gate, icl):
    """For every n, the model's mean test log-loss (2000 held-out prompts) is >= the exact Bayes
    mixture's minus 2 standard errors of the paired difference; the gaps to Bayes and to the
    oracle that knows the task are recorded."""
    record_claim.gate(gate.passed, **gate.as_kwargs())
    worst = -math.inf
    detail = {}
    for n, rec in sorted(icl.items()):
        diff = rec["model"]["logloss_prompt"] - rec["bayes"]["logloss_prompt"]
        se = diff.std(ddof=1) / math.sqrt(diff.size)
        worst = max(worst, -(diff.mean() / (2 * se)))
        detail[n] = {"model": round(float(rec["model"]["logloss"].mean()), 4),
                     "bayes": round(float(rec["bayes"]["logloss"].mean()), 4),
                     "oracle": round(float(rec["oracle"]["logloss"].mean()), 4), "gap_se": round(float(se), 5)}
    record_claim(max(worst, 0.0), 1.0, detail=detail)
    assert worst <= 1.0, detail


@pytest.mark.claim(id="hmm/probe-distance-decay", paper=PAPER, provenance="paper", kind="trained")
def test_probe_distance_decay(record_claim, gate, probes):
    """At every layer l = 1..L, the probe accuracy for the observation k back (k = 1..8, ridge
    probes fit on 1000 prompts and scored on 1000 fresh ones, at the test tokens) is
    non-increasing in k up to 2 pp."""
    record_claim.gate(gate.passed, **gate.as_kwargs())
    back = probes["back"][:, 1:]                                 # (K, L)
    rise = float(max(0.0, np.diff(back, axis=0).max()))
    detail = {"back_layers_0_to_L": probes["back"].round(3).tolist(),
              "chance": probes["back_chance"].round(3).tolist()}
    record_claim(rise, 0.02, detail=detail)
    assert rise <= 0.02, detail


@pytest.mark.claim(id="hmm/probe-peak-shift", paper=PAPER, provenance="review", kind="trained",
                   findings=PROBE_PEAK_SHIFT_FINDINGS)
def test_probe_peak_shift(record_claim, gate, probes):
    """The layer (1..L) of peak probe accuracy for the observation k back is non-decreasing in k
    (ties: the first peak layer)."""
    record_claim.gate(gate.passed, **gate.as_kwargs())
    peaks = probes["back"][:, 1:].argmax(axis=1) + 1
    down = int(max(0, -np.diff(peaks).min()))
    detail = {"peak_layer": peaks.tolist(), "back": probes["back"].round(3).tolist()}
    record_claim(down, 0.0, detail=detail)
    assert down == 0, detail


@pytest.mark.claim(id="hmm/probe-hierarchy", paper=PAPER, provenance="review", kind="trained")
def test_probe_hierarchy(record_claim, gate, probes):
    """The first layer (1..L) where the hidden-state probe (filtering argmax of the prompt's HMM)
    reaches 90% of its maximum over layers comes strictly before the task-id probe's."""
    record_claim.gate(gate.passed, **gate.as_kwargs())
    ls, lt = first_layer_at(probes["state"][1:]) + 1, first_layer_at(probes["task"][1:]) + 1
    detail = {"state": probes["state"].round(3).tolist(), "true_state": probes["true_state"].round(3).tolist(),
              "task": probes["task"].round(3).tolist(), "state_chance": probes["state_chance"],
              "task_chance": probes["task_chance"], "state_layer": ls, "task_layer": lt}
    record_claim(ls - lt + 1, 0.0, detail=detail)
    assert ls < lt, detail


@pytest.mark.claim(id="hmm/time-disentangle", paper=PAPER, provenance="reconstructed", kind="trained",
                   findings=TIME_DISENTANGLE_FINDINGS)
def test_time_disentangle(record_claim, gate, run):
    """Indep_l = 1 - E |z_l(pi) - zbar_l| / |zbar_l| over 16 random orders of the demonstrations
    (256 prompts, z_l the residual stream at the test tokens) rises with the layer l = 1..L:
    Spearman rho > 0; layers where it falls are recorded (layer 0 never sees the
    demonstrations: score 1, excluded)."""
    record_claim.gate(gate.passed, **gate.as_kwargs())
    model, config = run
    ind = independence_scores(model, config)
    rho = float(stats.spearmanr(np.arange(1, ind.size), ind[1:]).statistic)
    detail = {"indep": ind.round(5).tolist(), "spearman": rho,
              "falls_at": [int(l + 2) for l in np.flatnonzero(np.diff(ind[1:]) < 0)]}
    record_claim(-rho, 0.0, detail=detail)
    assert rho > 0, detail
