"""Claims: HMM window decay and the construction's error decomposition, Monte Carlo part
(docs/hmm.md §3.2, §4.3, §7).  Our reconstruction [reconstructed] of the
fixed-length-memory argument and of Theorem 1's construction; the paper's bounds were not
available (docs/hmm.md §9).  Errors are total variation (TV = half the L1 distance)."""

import functools

import numpy as np
import pytest
import torch

from mechverify.constructions.hmm import error_terms, hmm_construction
from mechverify.theory.algorithms.hmm import (covariance_spectrum, demo_regression, forward_predictive, gd_matrix_iterates,
                                   least_squares_matrix, window_features, windowed_predictive)
from mechverify.theory.tasks.hmm import emission_margin, random_hmm, random_hmms, sample_prompts, sample_sequences

PAPER = "hao-ye-han-zhang-2025"
# Each instance is a whole Monte Carlo experiment: one per run, drawn from the ``instance_seed``
# fixture (it follows --hypothesis-seed and the claim, so a plain run is reproducible).
WINDOWS = np.array([1, 2, 4, 8, 16])
# docs/hmm.md §4.3 reference run (S = 12, d = 3, O = 6, Dirichlet(0.3)): mean L1 error at r = 1 and r = 16.
REFERENCE_ENDS = (1.5e-2, 1.3e-14)


def _fit(x, y) -> tuple[float, float]:
    """Slope and R^2 of the least-squares line through (x, y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, icpt = np.polyfit(x, y, 1)
    resid = y - (slope * x + icpt)
    return float(slope), float(1 - np.sum(resid ** 2) / np.sum((y - y.mean()) ** 2))


def _window_errors(hmm, seed: int, n_seq: int = 2000, length: int = 24) -> np.ndarray:
    """(n_seq, len(WINDOWS)): |p_full - p_window(r)|_1 at the last position of each sequence."""
    obs, _ = sample_sequences(hmm, n_seq, length, seed=seed)
    full = forward_predictive(hmm, obs)[:, -1]
    return np.stack([np.abs(full - windowed_predictive(hmm, obs, int(r))[:, -1]).sum(-1) for r in WINDOWS], axis=1)




# The spec's reference setting is overcomplete (S = 12 > O = 6: sigma_min(emission) = 0) and its
# rank-3 transition forgets the past within a few steps whatever the emissions: there the
# near-duplicate control barely slows the decay (measured at --hypothesis-seed 0-9).
N_DRAWS = 64        # HMM draws per setting (16 left the sticky test without power: 3 SE > effect at seeds 5, 6)
# "Linear in r" is asked of 95 % of the draws, not of every one: the window error is a sum of
# exponentials (one per eigenvalue of the transition), and where two modes are comparable its log
# bends.  Asking it of all 64 draws failed at --hypothesis-seed 19 (thorough): the worst sticky
# draw had R^2 0.893; seed 19 was the only one of seeds 0-20 with a draw under 0.9.
MIN_LINEAR_FRACTION = 0.95
FINDINGS = {"spec": "S = 12 > O = 6 (emission margin 0) with a rank-3 Dirichlet transition: decay slope "
                    "about -2.1 per window step (R^2 > 0.92) for the model and for the near-duplicate control "
                    "(eps = 0.05): over 64 HMM draws the control is slower by -0.007 to 0.037 per step (SE 0.009-0.016; "
                    "--hypothesis-seed 0-9; 0.033, SE 0.013 at seed 0), at most 1.8% of the rate, not the 10% asked; "
                    "forgetting comes from the low-rank mixing, not from observability (the sticky setting passes at "
                    "seeds 0-9; with 16 draws its control was slower by 0.08-0.13 per step on slopes of about -0.45)"}


@pytest.mark.claim(id="hmm/window-decay", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.parametrize("setting", [
    pytest.param("spec", marks=pytest.mark.xfail(strict=True, reason=FINDINGS["spec"])),
    "sticky"])
def test_window_decay(record_claim, setting, instance_seed):
    """log mean |p_full - p_window(r)|_1 (2000 sequences of length 24, last position) is linear in
    r in {1, 2, 4, 8, 16} (R^2 > 0.9), and the near-duplicate-emission control (row pairs at
    eps = 0.05, sigma_min(emission) driven towards 0) decays more slowly.  Both over 64 HMM draws
    (the control is drawn from the same seed as its model): at least 95 % of the model fits have R^2 > 0.9 (see
    MIN_LINEAR_FRACTION), all have a
    negative slope, and the mean of (control slope - model slope) over the draws exceeds 3 of its
    standard errors (over draws: which HMM is drawn matters more than the sequences; a single draw
    decides the "spec" setting one way or the other depending on the seed) and 10% of the model's
    mean rate |slope| ("more slowly" as an effect, not a difference of a few per cent).
    Settings: "spec" S = 12, rank 3, O = 6, Dirichlet(0.3) emissions (the spec's reference run;
    its end values 1.5e-2 .. 1.3e-14 are recorded next to ours); "sticky" S = 4, O = 6,
    T = 0.8 I + 0.2 Dirichlet (slow mixing, margin > 0: the observability regime)."""
    kw = dict(S=12, O=6, rank=3) if setting == "spec" else dict(S=4, O=6, rank=None, self_loop=0.8)
    rows = []
    for seed in np.random.SeedSequence(instance_seed).generate_state(N_DRAWS):
        seed = int(seed)
        hmm = random_hmm(kw["S"], kw["O"], kw["rank"], seed=seed, self_loop=kw.get("self_loop", 0.0))
        control = random_hmm(kw["S"], kw["O"], kw["rank"], seed=seed, self_loop=kw.get("self_loop", 0.0),
                             duplicate_eps=0.05)
        err, err_c = _window_errors(hmm, seed).mean(axis=0), _window_errors(control, seed).mean(axis=0)
        slope, r2 = _fit(WINDOWS, np.log(err))
        slope_c, r2_c = _fit(WINDOWS, np.log(err_c))
        rows.append((slope, r2, slope_c, r2_c, emission_margin(hmm.emission), emission_margin(control.emission)))
    slope, r2, slope_c, r2_c, margin, margin_c = map(np.array, zip(*rows))
    diff = slope_c - slope
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    detail = {"setting": setting, "slopes": slope.round(3).tolist(), "control_slopes": slope_c.round(3).tolist(),
              "R2_min": float(r2.min()), "control_R2_min": float(r2_c.min()), "mean_difference": float(diff.mean()),
              "difference_se": se, "margin": margin.round(4).tolist(), "control_margin": margin_c.round(4).tolist(),
              "spec_reference_ends": REFERENCE_ENDS}
    linear = float(np.mean(r2 > 0.9))
    detail["fraction_R2_above_0.9"] = linear
    record_claim(1 - linear, 1 - MIN_LINEAR_FRACTION, detail=detail)
    record_claim(3 * se, float(diff.mean()), detail=detail)
    assert linear >= MIN_LINEAR_FRACTION and slope.max() < 0, detail
    assert diff.mean() > 3 * se and diff.mean() > 0.1 * abs(slope.mean()), detail


# --- the construction's error decomposition -------------------------------------------------------

O_OBS, STATES, RANK, N_HMM, DEMO_LEN, TEST_LEN, N_PROMPTS = 3, 6, 2, 8, 12, 12, 64


@functools.lru_cache(maxsize=None)
def _setting(seed: int):
    return random_hmms(N_HMM, STATES, O_OBS, RANK, seed=seed)


@functools.lru_cache(maxsize=None)
def _terms(seed: int, n: int, r: int, K: int, beta: float, lr: float = 1.0) -> dict:
    hmms = _setting(seed)
    p = sample_prompts(hmms, N_PROMPTS, n, DEMO_LEN, TEST_LEN, seed=seed + n)
    return error_terms(hmms, p.task, p.demos, p.test, r, K, lr, beta)


def _raw_scores(seed: int, n: int, r: int, K: int, beta: float):
    """(construction raw scores, numpy LS raw scores, numpy K-step GD raw scores), eta = 1/lambda_max."""
    hmms = _setting(seed)
    p = sample_prompts(hmms, N_PROMPTS, n, DEMO_LEN, TEST_LEN, seed=seed + n)
    X, Y = demo_regression(p.demos, O_OBS, r)
    lr = 1.0 / float(covariance_spectrum(X)[:, -1].max())
    Xq = window_features(p.test, O_OBS, r, lag=0)
    model = hmm_construction(O_OBS, r, K, lr, beta, DEMO_LEN)
    with torch.no_grad():
        raw = model(torch.from_numpy(p.demos), torch.from_numpy(p.test)).numpy()
    ls = np.einsum("bop,btp->bto", least_squares_matrix(X, Y), Xq)
    gd = np.einsum("bop,btp->bto", gd_matrix_iterates(X, Y, lr, K)[-1], Xq)
    return raw[:, r - 1:], ls[:, r - 1:], gd[:, r - 1:]


@pytest.mark.claim(id="hmm/construction-error", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.parametrize("part", ["n", "r", "K", "beta", "total"])
def test_construction_error(record_claim, part, instance_seed):
    """The constructed transformer (8 random HMMs, S = 6, rank 2, O = 3; 64 prompts, demos and
    test of length 12; TV to the oracle P_k(o_{t+1} | o^test_<=t) at test positions t >= r):

    n      total TV at r = 2, K = 4, beta = 20 against n in {4, 16, 64, 256}: log-log slope in [-0.7, -0.3];
    r      the window term TV(oracle, P_k(. | last r obs)) at the last test position, r = 1..6:
           log-linear in r (R^2 > 0.9, slope < 0);
    K      the optimisation term on the raw scores, mean |W_K x - W_LS x|_1 (construction at
           beta = 40, eta = 1/lambda_max, n = 16) for K in {1, 2, 4, 8, 16}: log-linear (R^2 > 0.9, slope < 0);
    beta   the softmax term on the raw scores, mean |construction(beta) - numpy GD_K|_1 for beta in
           {2.5, 5, 10, 20}: log-linear in beta with slope in [-1.5, -0.5] (leakage ~ e^{-beta});
    total  the mean total TV falls over (n, K) = (4, 1), (16, 4), (256, 16) (r = 2, beta = 20), and at
           n = 256, K = 16 it is within 5% of the statistical term TV(P_k(. | last r obs), LS readout):
           the error plateaus at the statistical floor.  The triangle inequality
           TV(oracle, model) <= window + statistical + optimisation + softmax is recorded (detail
           "triangle_min_slack") but not asserted: the four terms are distances along one chain
           oracle -> window -> LS -> GD -> model, so it holds whatever the construction computes."""
    seed = instance_seed
    if part == "n":
        ns = [4, 16, 64, 256]
        tot = np.array([_terms(seed, n, 2, 4, 20.0)["total"].mean() for n in ns])
        slope, r2 = _fit(np.log(ns), np.log(tot))
        detail = {"n": ns, "total_tv": tot.tolist(), "slope": slope, "R2": r2,
                  "statistical_tv": [float(_terms(seed, n, 2, 4, 20.0)["statistical"].mean()) for n in ns]}
        record_claim(abs(slope + 0.5), 0.2, detail=detail)
        assert -0.7 <= slope <= -0.3, detail
    elif part == "r":
        rs = np.arange(1, 7)
        hmms = _setting(seed)
        p = sample_prompts(hmms, N_PROMPTS, 0, 1, TEST_LEN, seed=seed)
        win = np.array([np.mean([np.abs(forward_predictive(hmms[k], p.test[b])[-1]
                                        - windowed_predictive(hmms[k], p.test[b], int(r))[-1]).sum() / 2
                                 for b, k in enumerate(p.task)]) for r in rs])
        slope, r2 = _fit(rs, np.log(win))
        totals = {int(r): float(_terms(seed, 64, int(r), 4, 20.0)["total"].mean()) for r in (1, 2, 3)}
        detail = {"r": rs.tolist(), "window_tv": win.tolist(), "slope": slope, "R2": r2,
                  "total_tv_n64": totals}
        record_claim(1 - r2, 0.1, detail=detail)
        assert r2 > 0.9 and slope < 0, detail
    elif part == "K":
        Ks = [1, 2, 4, 8, 16]
        err = np.array([np.abs(_raw_scores(seed, 16, 2, K, 40.0)[0] - _raw_scores(seed, 16, 2, K, 40.0)[1])
                        .sum(-1).mean() for K in Ks])
        post = [float(_terms(seed, 16, 2, K, 20.0)["optimisation"].max()) for K in (1, 16)]
        slope, r2 = _fit(Ks, np.log(err))
        detail = {"K": Ks, "raw_l1_to_ls": err.tolist(), "slope": slope, "R2": r2,
                  "post_readout_tv_max_K1_K16": post}
        record_claim(1 - r2, 0.1, detail=detail)
        assert r2 > 0.9 and slope < 0, detail
    elif part == "beta":
        betas = [2.5, 5.0, 10.0, 20.0]
        err = []
        for b in betas:
            raw, _, gd = _raw_scores(seed, 16, 2, 4, b)
            err.append(float(np.abs(raw - gd).sum(-1).mean()))
        slope, r2 = _fit(betas, np.log(err))
        detail = {"beta": betas, "raw_l1_to_gd": err, "slope": slope, "R2": r2,
                  "post_readout_softmax_tv": [float(_terms(seed, 16, 2, 4, b)["softmax"].mean()) for b in (5.0, 20.0)]}
        record_claim(abs(slope + 1), 0.5, detail=detail)
        assert r2 > 0.9 and -1.5 <= slope <= -0.5, detail
    else:
        worst, totals = 0.0, []
        for n, K in ((4, 1), (16, 4), (256, 16)):
            t = _terms(seed, n, 2, K, 20.0)
            slack = t["window"] + t["statistical"] + t["optimisation"] + t["softmax"] - t["total"]
            worst = min(worst, float(slack.min()))
            totals.append(float(t["total"].mean()))
        t = _terms(seed, 256, 2, 16, 20.0)
        total = float(t["total"].mean())
        detail = {"triangle_min_slack": worst, "total_n4K1_n16K4_n256K16": totals, "total_n256_K16": total,
                  "statistical": float(t["statistical"].mean()), "window": float(t["window"].mean()),
                  "optimisation": float(t["optimisation"].mean()), "softmax": float(t["softmax"].mean())}
        rel = abs(total - float(t["statistical"].mean())) / float(t["statistical"].mean())
        detail["rel_gap_to_statistical"] = rel
        record_claim(rel, 0.05, detail=detail)
        assert totals[0] > totals[1] > totals[2], detail
        assert rel <= 0.05, detail
