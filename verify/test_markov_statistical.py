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
def test_minimal_exact_fit(record_claim, sizes, alpha, instance_seed):
    """Hand-built minimal model (d = 50, τ = 0.1, m = 1.7, L = 20; 10⁴ sequences): at β = 40 its
    Monte Carlo CE on sampled next tokens is within 3 standard errors of the teacher's exact CE
    (per-sequence means), and the exact KL(teacher ‖ model) per position decreases strictly
    over β ∈ {0, 2, 4, 8, 16, 32} (first 1000 sequences) to below 1e-10.  The teacher draw Q and the
    sequences follow ``instance_seed``; α = (0.7, 0.3) is in the official order (first weight on the
    oldest position of a block)."""
    task = MarkovTask(d=50, sizes=sizes, alpha=alpha, L=20, teacher_seed=instance_seed % 2**31)
    seq = sample_sequences(task, 10_000, instance_seed + 1)
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


# markov/teacher-ce-levels: the spec's levels are single teacher draws (one draw varies by sd ~0.17 nats;
# the official code's own draws give 2.47-3.04 for the 2.83 level), so each level is compared with the
# mean over many Q draws, within 3 standard errors of that mean (docs/markov.md §7).
# 48 draws per level; 192 where the verdict sits near 3 SE (4.26; bayes-222, whose 48-draw finding
# flipped at --hypothesis-seed 9) and for the per-teacher above-uniform check.
CE_DRAWS = {"bayes-222": 192, "bayes-444": 48, "truncated-222": 48, "truncated-444-k1": 192, "above-uniform": 192}
CE_SEQS = 250


def _ce_draws(sizes, k, n_draws, seed) -> np.ndarray:
    """Per-draw exact teacher CE (truncated to the k most important blocks; k = None: Bayes) over
    ``n_draws`` teacher draws Q, each on CE_SEQS sampled sequences; draws and sequences from ``seed``."""
    states = np.random.SeedSequence(seed).generate_state(2 * n_draws)
    return np.array([teacher_cross_entropy(MarkovTask(d=50, sizes=sizes, teacher_seed=int(states[2 * i])), CE_SEQS,
                                           int(states[2 * i + 1]), k=k)[0] for i in range(n_draws)])


CE_FINDINGS = {    # measured at the default instance seed (plain run)
    "bayes-222": "Bayes CE on [2,2,2], mean over 192 Q draws 0.5923 (SE 0.0022) vs the spec's 0.57: 9.9 SE above "
                 "(--hypothesis-seed 9: 0.586, SE 0.0028, 5.7 SE)",
    "bayes-444": "Bayes CE on [4,4,4], mean over 48 Q draws 0.3432 (SE 0.0032) vs the spec's 0.39: 15 SE below",
    "truncated-222": "truncated teachers on [2,2,2], means over 48 Q draws: k = 1 2.937 (SE 0.022) vs 2.83 (4.9 SE), "
                     "k = 2 1.230 (SE 0.009) vs 1.14 (9.6 SE), k = 3 0.587 (SE 0.005) vs 0.57 (3.5 SE)",
    "truncated-444-k1": "k = 1 truncated teacher on [4,4,4], mean over 192 Q draws 4.105 (SE 0.022) vs the spec's "
                        "4.26: 7.1 SE below",
}
# The spec's levels are each one teacher draw: our means over draws differ by 0.02-0.16 nats, beyond
# 3 SE of the mean; they agree within the spread of single draws (see "range" in the claims report).


@pytest.mark.claim(id="markov/teacher-ce-levels", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.parametrize("part", [p if p not in CE_FINDINGS else pytest.param(
    p, marks=pytest.mark.xfail(strict=True, reason=CE_FINDINGS[p]))
    for p in ("bayes-222", "bayes-444", "truncated-222", "truncated-444-k1", "above-uniform")])
def test_teacher_ce_levels(record_claim, part, instance_seed):
    """d = 50, τ = 0.1, m = 1.7: the mean over 48 teacher draws Q (192 for 4.26 and 0.57 on [2,2,2]; 250 sequences each) of the exact
    teacher CE is within 3 standard errors (of that mean, over draws) of each spec level: 0.57
    ([2,2,2]) and 0.39 ([4,4,4]); truncated teachers 2.83, 1.14, 0.57 on [2,2,2] and 4.26 for k = 1
    on [4,4,4].  above-uniform: the k = 1 truncated teacher on [4,4,4] is worse than uniform, the
    mean over 192 Q draws minus 3 SE > ln 50 (the number of single draws below ln 50 is recorded:
    37 of 192 at the default seed, so it holds on average, not for every teacher)."""
    if part == "above-uniform":
        ce = _ce_draws((4, 4, 4), 1, CE_DRAWS[part], instance_seed)
        mean, se = float(ce.mean()), float(ce.std(ddof=1) / math.sqrt(ce.size))
        below = int(np.sum(ce <= math.log(50)))
        detail = {"mean": mean, "se": se, "min": float(ce.min()), "draws_below_ln50": below, "ln50": math.log(50)}
        record_claim(math.log(50), mean - 3 * se, detail=detail)
        assert mean - 3 * se > math.log(50), detail
        return
    cases = {"bayes-222": [((2, 2, 2), None, 0.57)], "bayes-444": [((4, 4, 4), None, 0.39)],
             "truncated-222": [((2, 2, 2), k, ref) for k, ref in ((1, 2.83), (2, 1.14), (3, 0.57))],
             "truncated-444-k1": [((4, 4, 4), 1, 4.26)]}[part]
    rows = []
    for sizes, k, ref in cases:
        ce = _ce_draws(sizes, k, CE_DRAWS[part], instance_seed)
        mean, se = float(ce.mean()), float(ce.std(ddof=1) / math.sqrt(ce.size))
        rows.append({"sizes": sizes, "k": k, "mean": round(mean, 4), "se": round(se, 4), "spec": ref,
                     "z": round(abs(mean - ref) / se, 2), "range": [round(float(ce.min()), 3), round(float(ce.max()), 3)]})
        record_claim(abs(mean - ref), 3 * se, detail={"rows": rows})
    assert all(r["z"] <= 3 for r in rows), rows
