"""Claims: staged-Markov teacher and the hand-built minimal model, Monte Carlo part
(docs/markov.md §2.2, §3.1, §7).  Both are our reconstructions [reconstructed]:
the reference CE levels come from our simulations (docs/markov.md §2.2), the construction from §3.1.
"""

import math

import numpy as np
import pytest
import torch

from mechverify.constructions.markov import exact_minimal_model
from mechverify.theory.tasks.markov import MarkovTask, log_softmax, sample_sequences, teacher_cross_entropy, teacher_logits

PAPER = "yuksel-2026"
N_SEQ = 4000
SEED = 1          # sequence draws; the Q draw is teacher_seed = 0


def _model_logp(model, seq, w, chunk=1000):
    out = []
    with torch.no_grad():
        for i in range(0, len(seq), chunk):
            x = torch.from_numpy(seq[i:i + chunk, :-1])
            out.append(torch.log_softmax(model(x, query_from=w - 1), -1).numpy())
    return np.concatenate(out)


@pytest.mark.claim(id="markov/minimal-exact-fit", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.parametrize("sizes, alpha", [((2, 2, 2), None), ((4, 4, 4), None), ((2, 2, 2), (0.7, 0.3))],
                         ids=["222", "444", "222-alpha"])
def test_minimal_exact_fit(record_claim, sizes, alpha):
    """Hand-built minimal model (d = 50, τ = 0.1, m = 1.7, L = 20; 10⁴ sequences): at β = 40 its
    Monte Carlo CE on sampled next tokens is within 3 standard errors of the teacher's exact CE
    (per-sequence means), and the exact KL(teacher ‖ model) per position decreases strictly
    over β ∈ {0, 2, 4, 8, 16, 32} (first 1000 sequences) to below 1e-10."""
    task = MarkovTask(d=50, sizes=sizes, alpha=alpha, L=20)
    seq = sample_sequences(task, 10_000, SEED)
    logp = log_softmax(teacher_logits(task, seq))
    nxt = seq[:, task.w:, None]
    bayes = -(np.exp(logp) * logp).sum(-1).mean(-1)                   # per sequence, exact entropy
    logq = _model_logp(exact_minimal_model(task, 40.0), seq, task.w)
    ce = -np.take_along_axis(logq, nxt, -1)[..., 0].mean(-1)           # per sequence, sampled tokens
    diff = ce - bayes
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    kls = []
    for beta in (0.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        lq = _model_logp(exact_minimal_model(task, beta), seq[:1000], task.w)
        kls.append(float((np.exp(logp[:1000]) * (logp[:1000] - lq)).sum(-1).mean()))
    detail = {"ce_model": float(ce.mean()), "ce_teacher": float(bayes.mean()), "se": float(se), "kl_vs_beta": kls}
    record_claim(abs(diff.mean()), 3 * se, detail=detail)
    assert abs(diff.mean()) <= 3 * se, detail
    assert np.all(np.diff(kls) < 0) and kls[-1] < 1e-10, detail


CE_FINDINGS = {
    "truncated-222": "truncated teachers on [2,2,2] (Q draw 0, 4000 sequences): CE 3.159, 1.211, 0.595 (SE <= "
                     "0.011) vs the spec's 2.83, 1.14, 0.57; k = 1 is 0.33 nats off and k = 2 0.07 (Q draws 0-4 give "
                     "2.95-3.15 and 1.20-1.31 at 2000 sequences), beyond the ±0.05 tolerance: the spec's reference "
                     "draw is not reproduced",
    "truncated-444-k1": "k = 1 truncated teacher on [4,4,4]: CE 4.465 (SE 0.022) vs the spec's 4.26 (Q draws 0-4: "
                        "4.08-4.53 at 2000 sequences); it is above ln 50 = 3.91 as the spec says (part above-uniform)",
}


@pytest.mark.claim(id="markov/teacher-ce-levels", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.parametrize("part", [p if p not in CE_FINDINGS else pytest.param(
    p, marks=pytest.mark.xfail(strict=True, reason=CE_FINDINGS[p]))
    for p in ("bayes-222", "bayes-444", "truncated-222", "truncated-444-k1", "above-uniform")])
def test_teacher_ce_levels(record_claim, part):
    """d = 50, τ = 0.1, m = 1.7, Q draw 0, 4000 sequences: teacher CE ≈ 0.57 ([2,2,2]) and 0.39
    ([4,4,4]); truncated teachers 2.83, 1.14, 0.57 on [2,2,2] and 4.26 for k = 1 on [4,4,4}
    (±0.05 nats each); the k = 1 truncated teacher on [4,4,4] is worse than uniform (ln 50)."""
    t222, t444 = MarkovTask(d=50, sizes=(2, 2, 2)), MarkovTask(d=50, sizes=(4, 4, 4))
    if part == "above-uniform":
        ce, se = teacher_cross_entropy(t444, N_SEQ, SEED, k=1)
        record_claim(math.log(50) - ce + 3 * se, 1e-12, detail={"ce": ce, "se": se, "ln50": math.log(50)})
        assert ce - 3 * se > math.log(50)
        return
    cases = {"bayes-222": [(t222, None, 0.57)], "bayes-444": [(t444, None, 0.39)],
             "truncated-222": [(t222, k, ref) for k, ref in ((1, 2.83), (2, 1.14), (3, 0.57))],
             "truncated-444-k1": [(t444, 1, 4.26)]}[part]
    worst, rows = 0.0, []
    for task, k, ref in cases:
        ce, se = teacher_cross_entropy(task, N_SEQ, SEED, k=k)
        rows.append({"sizes": task.sizes, "k": k, "ce": round(ce, 4), "se": round(se, 4), "spec": ref})
        worst = max(worst, abs(ce - ref))
    record_claim(worst, 0.05, detail={"rows": rows})
    assert worst <= 0.05, rows
