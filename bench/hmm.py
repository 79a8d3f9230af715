"""HMM benchmark: our batched Bayes-mixture predictor (all K HMMs x all prompts in one
normalised forward pass, likelihoods in log space) against a loop over ``hmmlearn`` (one
``CategoricalHMM`` per task, one call per prompt and task) on the same prompts, timed in
interleaved rounds of the same run.

What is compared.  Ours returns the whole predictive table (T+1 rows per prompt); the
hmmlearn route computes only what the last row needs: each task's log-likelihood of the
demonstrations and of the test sequence (``score``) and the filtered law of the last
hidden state (``predict_proba``, whose last row is the filtering posterior), giving
p(o_{T+1}) = sum_k w_k post_k T_k E_k.  Times are the best wall-clock round; the ratio of
the best process CPU times is printed beside it (steadier when other processes load the
cores; both sides run single-threaded at these sizes).  Agreement: the largest difference of that last row
and of the mixture weights.  Cost slopes: log time against log K (fixed length) and
against log test length (fixed K) for our predictor; both should be about 1 (linear).

``hmmlearn`` is a bench-only dependency (``pip install hmmlearn``); without it the peer is
skipped with a message and only our slopes are measured.
"""

from __future__ import annotations

import numpy as np

from bench import table, time_rounds
from mechverify.theory.algorithms.hmm import bayes_mixture_predictive
from mechverify.theory.tasks.hmm import random_hmms, sample_prompts

S, O, N_DEMOS, DEMO_LEN = 8, 8, 4, 12


def _hmmlearn_models(hmms):
    from hmmlearn.hmm import CategoricalHMM
    models = []
    for h in hmms:
        m = CategoricalHMM(n_components=h.n_states, n_features=h.n_obs, init_params="", params="")
        m.startprob_, m.transmat_, m.emissionprob_ = h.initial, h.transition, h.emission
        models.append(m)
    return models


def _hmmlearn_last_row(models, hmms, prior, demos, test):
    """(B, O) last predictive row and (B, K) final weights, by a loop over prompts and tasks."""
    B, n, L = demos.shape
    K = len(models)
    pred, weights = np.zeros((B, O)), np.zeros((B, K))
    for b in range(B):
        logw, rows = np.log(prior).copy(), np.zeros((K, O))
        X_demo = demos[b].reshape(-1, 1)
        X_test = test[b].reshape(-1, 1)
        for k, (m, h) in enumerate(zip(models, hmms)):
            if n:
                logw[k] += m.score(X_demo, lengths=[L] * n)
            logw[k] += m.score(X_test)
            post = m.predict_proba(X_test)[-1]
            rows[k] = post @ h.transition @ h.emission
        w = np.exp(logw - logw.max())
        w /= w.sum()
        weights[b], pred[b] = w, w @ rows
    return pred, weights


def _slope(x, t) -> float:
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


def run(quick: bool, emit) -> dict:
    record = {"peer": {}, "slopes": {}}
    reps = 2 if quick else 5
    try:
        import hmmlearn
        have_peer = True
        record["hmmlearn_version"] = hmmlearn.__version__
    except ImportError:
        have_peer = False
        emit("\nhmmlearn is not installed: skipping the peer comparison (pip install hmmlearn); "
             "measuring our slopes only")

    if have_peer:
        rows = []
        B = 4 if quick else 16
        for K, Lt in ((16, 64), (64, 64), (64, 256)):
            hmms = random_hmms(K, S, O, 4, seed=0)
            prior = np.full(K, 1.0 / K)
            p = sample_prompts(hmms, B, N_DEMOS, DEMO_LEN, Lt, seed=1)
            models = _hmmlearn_models(hmms)
            ours = lambda: bayes_mixture_predictive(hmms, prior, p.demos, p.test, return_weights=True)
            theirs = lambda: _hmmlearn_last_row(models, hmms, prior, p.demos, p.test)
            t = time_rounds({"ours": ours, "hmmlearn": theirs}, reps=reps)
            (pred, w), (pred2, w2) = ours(), theirs()
            diff_p = float(np.abs(pred[:, -1] - pred2).max())
            diff_w = float(np.abs(w[:, -1] - w2).max())
            ratio = t["hmmlearn"].best / t["ours"].best
            ratio_cpu = t["hmmlearn"].best_cpu / t["ours"].best_cpu
            record["peer"][f"K{K}_T{Lt}"] = {"ours_s": t["ours"].best, "hmmlearn_s": t["hmmlearn"].best,
                                             "hmmlearn_over_ours": ratio, "hmmlearn_over_ours_cpu": ratio_cpu,
                                             "max_pred_diff": diff_p,
                                             "max_weight_diff": diff_w, "prompts": B}
            rows.append([f"K={K} T={Lt} B={B}", f"{t['ours'].best * 1e3:.1f}", f"{t['hmmlearn'].best * 1e3:.1f}",
                         f"{ratio:.1f}", f"{ratio_cpu:.1f}", f"{diff_p:.1e}", f"{diff_w:.1e}"])
        emit(f"\nBayes mixture: batched forward (ours, all rows) vs a loop over hmmlearn {record['hmmlearn_version']} "
             f"CategoricalHMM (last row); S = {S}, O = {O}, {N_DEMOS} demos of length {DEMO_LEN}")
        emit(table(["setting", "ours ms", "hmmlearn ms", "hmmlearn/ours", "(CPU time)", "max |pred diff|",
                    "max |w diff|"], rows))

    B = 64 if quick else 256
    Ks = (16, 32, 64, 128)
    hmms_all = random_hmms(max(Ks), S, O, 4, seed=0)
    tk = []
    for K in Ks:
        hmms = hmms_all[:K]
        p = sample_prompts(hmms, B, N_DEMOS, DEMO_LEN, 64, seed=2)
        prior = np.full(K, 1.0 / K)
        tk.append(time_rounds({"ours": lambda: bayes_mixture_predictive(hmms, prior, p.demos, p.test)},
                              reps=reps)["ours"].best)
    lengths = (64, 128, 256, 512)
    hmms = hmms_all[:32]
    prior = np.full(32, 1.0 / 32)
    tl = []
    for Lt in lengths:
        p = sample_prompts(hmms, B, N_DEMOS, DEMO_LEN, Lt, seed=3)
        tl.append(time_rounds({"ours": lambda: bayes_mixture_predictive(hmms, prior, p.demos, p.test)},
                              reps=reps)["ours"].best)
    record["slopes"] = {"K": list(Ks), "time_vs_K_s": tk, "slope_K": _slope(Ks, tk),
                        "length": list(lengths), "time_vs_length_s": tl, "slope_length": _slope(lengths, tl),
                        "prompts": B}
    emit(f"\nOur Bayes mixture cost (B = {B} prompts): log-log slopes (1 = linear)")
    emit(table(["axis", "values", "best s", "slope"],
               [["K (T = 64)", " ".join(map(str, Ks)), " ".join(f"{x:.3f}" for x in tk), f"{_slope(Ks, tk):.2f}"],
                ["T (K = 32)", " ".join(map(str, lengths)), " ".join(f"{x:.3f}" for x in tl),
                 f"{_slope(lengths, tl):.2f}"]]))
    return record
