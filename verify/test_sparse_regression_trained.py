"""Claims: trained multi-head models on in-context sparse regression (docs/sparse_regression.md
§6, §7): head usage, pruning, probes, head count.

``--scale quick`` (default): the linear-attention theory model, one run per head count
h in {1, 2, 4, 8} (``h<H>`` in ``mechverify.training.sparse_regression.runs``); the per-head analyses use the
h = 4 run.  ``--scale paper``: the GPT-2 style softmax model (long; GPU advised).  The
paper's models are GPT-2 softmax transformers trained far longer; a claim that fails at
our scale is reported as measured.
"""

import math

import numpy as np
import pytest

from mechverify.training import sparse_regression
from mechverify.training.sparse_regression import (eval_prompts, excess_risks, head_importance, importance_entropy,
                                                   probe_risks, pruned)
from mechverify.training.runner import trained
from mechverify.training.gates import sparse_gate
from mechverify.theory.algorithms.regression import gd_iterates, pto_iterates

PAPER = "chen-zhao-zou-2024"
pytestmark = pytest.mark.trained


# Findings at --scale quick (seed 0): the trained linear models reach GD's risk, not PtO's
# (h = 4: 0.225 vs tuned GD 0.214 and tuned PtO 0.131 on the same task), and three of the
# paper's observations do not appear.  Strict: a change that makes them pass must be looked at.
# --scale paper (training seeds 0-2; the GPT-2 style softmax models, width 64, 3 layers,
# 20000 Adam steps at batch 64 with warmup, cosine decay and an input-dimension curriculum):
# the models reach tuned GD (h = 4: 0.208, 0.167 and 0.203 vs 0.233), so the gate is met and the
# three observations below are findings at paper scale too (the texts quote seeds 0 and 1).  (With the first paper preset, constant
# lr 3e-4, the models missed the gate and the claims were inconclusive.)
HEAD_IMPORTANCE_PATTERN_FINDINGS = {
    "quick": ("importance entropy per layer (h = 4) is 0.52, 0.82, 0.38 nats: layer 2 is more spread "
              "than layer 1"),
    "paper": ("importance entropy per layer (h = 4) is 0.31, 1.33, 0.94 nats (seed 0; 0.24, 1.31, 0.98 "
              "at seed 1): layer 1 is the most concentrated, one head carrying 1.78 of its importance, "
              "the opposite of the paper's pattern"),
}
PRUNING_FINDINGS = {
    "quick": ("all layer-1 heads + top head elsewhere raise the excess risk by 29% (0.225 -> 0.291), "
              "above 10%; top head everywhere: +79%"),
    "paper": ("all layer-1 heads + top head elsewhere raise the excess risk by 354% (0.208 -> 0.943; "
              "seed 1: 0.167 -> 1.187, +611%), far above 10%: the later layers use several heads"),
}
LAYER_PROBES_FINDINGS = {
    "quick": ("probe excess risk 0.83, 0.34, 0.24 after layers 1-3 fits GD with l steps (residual "
              "0.050) far better than PtO with l-1 steps (4.63): a linear probe already reads the "
              "one-step estimate <r_hat, x_q> after layer 1"),
    "paper": ("probe excess risk 2.06, 0.74, 0.24 after layers 1-3 (seed 1: 2.01, 0.58, 0.19) falls "
              "monotonely but fits GD with l steps (residual 0.89; seed 1: 0.96) better than PtO "
              "with l-1 steps (2.41; seed 1: 2.85)"),
}
HEAD_COUNT_CURVE_FINDINGS: dict = {}


@pytest.fixture(scope="module")
def runs(scale, recompute, device):
    """h -> (model, config), trained once per cache."""
    return {c.n_heads: (trained(c, recompute=recompute, device=device)[0], c)
            for c in sparse_regression.runs(scale).values()}


@pytest.fixture(scope="module")
def gate(runs):
    """h -> convergence gate of that run (:func:`mechverify.training.gates.sparse_gate`): held-out
    excess risk at most tuned GD's + 2 SE.  GD is the baseline the paper's trained models beat;
    PtO, the mechanism the claims test for, is not used."""
    return {h: sparse_gate(model, config) for h, (model, config) in runs.items()}


@pytest.fixture(scope="module")
def analysed(runs):
    model, config = runs[4]
    batch = eval_prompts(config)
    importance = head_importance(model, batch, config.noise)
    return model, config, batch, importance


@pytest.mark.claim(id="pto/head-importance-pattern", paper=PAPER, provenance="paper", kind="trained",
                   findings=HEAD_IMPORTANCE_PATTERN_FINDINGS)
def test_head_importance_pattern(record_claim, gate, analysed):
    """Masking importance (risk increase when one head is zeroed, 4096 held-out prompts) is
    spread over the heads of layer 1 and concentrated in later layers: the entropy of the
    normalised importances of layer 1 exceeds that of every later layer."""
    gate = gate[4]                                   # the h = 4 run is the one analysed
    record_claim.gate(gate.passed, **gate.as_kwargs())
    _, _, _, importance = analysed
    entropy = importance_entropy(importance)
    detail = {"entropy": entropy.round(3).tolist(), "importance": importance.round(4).tolist()}
    record_claim(float(entropy[1:].max()), float(entropy[0]), detail=detail)
    assert np.all(entropy[0] > entropy[1:]), detail


@pytest.mark.claim(id="pto/pruning", paper=PAPER, provenance="paper", kind="trained", findings=PRUNING_FINDINGS)
def test_pruning(record_claim, gate, analysed):
    """Keeping all layer-1 heads plus the top head in every other layer raises the excess risk
    by <= 10% (relative); keeping only the top head in layer 1 as well raises it by at least
    twice that increase."""
    gate = gate[4]                                   # the h = 4 run is the one analysed
    record_claim.gate(gate.passed, **gate.as_kwargs())
    model, config, batch, importance = analysed
    full = excess_risks(model, batch, config.noise).mean()
    kept = excess_risks(pruned(model, importance, keep_first_layer=True), batch, config.noise).mean()
    single = excess_risks(pruned(model, importance, keep_first_layer=False), batch, config.noise).mean()
    inc_kept, inc_single = (kept - full) / full, (single - full) / full
    detail = {"full": float(full), "pruned": float(kept), "top1_everywhere": float(single),
              "increase_pruned": float(inc_kept), "increase_top1": float(inc_single)}
    record_claim(float(inc_kept), 0.10, detail=detail)
    assert inc_kept <= 0.10, detail
    assert inc_single >= 2 * max(inc_kept, 0.0), detail


def _curve_residual(probe: np.ndarray, curves) -> tuple[float, float]:
    """min over lr of the squared distance between probe risks and a predicted curve."""
    best = (math.inf, math.nan)
    for lr, curve in curves:
        r = float(np.sum((probe - curve) ** 2))
        if r < best[0]:
            best = (r, lr)
    return best


@pytest.mark.claim(id="pto/layer-probes", paper=PAPER, provenance="reconstructed", kind="trained",
                   findings=LAYER_PROBES_FINDINGS)
def test_layer_probes(record_claim, gate, analysed):
    """Linear probes of y_q from the query token after each layer (fit on 4096 prompts, scored
    on 4096 fresh ones): the probe risk does not increase from layer 2 on, and the per-layer
    curve is closer (least squares over the step size) to PtO with l - 1 GD steps after layer l
    than to GD with l steps [reconstructed reading of "P-probing"]."""
    gate = gate[4]                                   # the h = 4 run is the one analysed
    record_claim.gate(gate.passed, **gate.as_kwargs())
    model, config, batch, _ = analysed
    test = eval_prompts(config, part=1)
    probe = probe_risks(model, batch, test, config.noise)[1:]                # layers 1..L
    L = probe.size
    excess = lambda w: float(np.mean(np.sum((w - test.w) ** 2, axis=1)))
    lrs = np.geomspace(0.01, 2.0, 40)
    # after layer l: PtO with l - 1 GD steps (iterates 0..L-1), GD with l steps (iterates 1..L)
    pto = [(lr, np.array([excess(w) for w in pto_iterates(test.X, test.y, lr, L - 1)])) for lr in lrs]
    gd = [(lr, np.array([excess(w) for w in gd_iterates(test.X, test.y, lr, L)][1:])) for lr in lrs]
    (res_pto, lr_pto), (res_gd, lr_gd) = _curve_residual(probe, pto), _curve_residual(probe, gd)
    monotone = bool(np.all(np.diff(probe[1:]) <= 0))
    detail = {"probe": probe.round(4).tolist(), "pto_residual": res_pto, "pto_lr": lr_pto,
              "gd_residual": res_gd, "gd_lr": lr_gd}
    record_claim(res_pto, res_gd, detail=detail)
    assert monotone, detail
    assert res_pto < res_gd, detail


@pytest.mark.claim(id="pto/head-count-curve", paper=PAPER, provenance="paper", kind="trained",
                   findings=HEAD_COUNT_CURVE_FINDINGS)
def test_head_count_curve(record_claim, gate, runs):
    """Excess risk at n = 16 (4096 held-out prompts) is non-increasing in h in {1, 2, 4, 8}
    within 2 standard errors, and the largest drop is from h = 1 to h = 2."""
    # Gate: the widest run (the most capable of the family) reaches tuned GD, so the budget is
    # enough for the task; the curve then compares the head counts at that budget.
    gate = gate[max(runs)]
    record_claim.gate(gate.passed, **gate.as_kwargs())
    stats = {}
    for h, (model, config) in runs.items():
        r = excess_risks(model, eval_prompts(config), config.noise)
        stats[h] = (float(r.mean()), float(r.std(ddof=1) / math.sqrt(r.size)))
    hs = sorted(stats)
    rises = [(stats[b][0] - stats[a][0]) - 2 * math.hypot(stats[a][1], stats[b][1]) for a, b in zip(hs, hs[1:])]
    drops = [stats[a][0] - stats[b][0] for a, b in zip(hs, hs[1:])]
    detail = {"risk": {h: round(m, 4) for h, (m, _) in stats.items()}, "drops": [round(x, 4) for x in drops]}
    record_claim(max(rises), 0.0, detail=detail)
    assert max(rises) <= 0, detail
    assert int(np.argmax(drops)) == 0, detail
