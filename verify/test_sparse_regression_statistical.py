"""Claims: preprocess-then-optimize against GD, ridge, OLS and Lasso, Monte Carlo part
(spec sparse_regression_icl.md §4, §7).  PtO is our reconstruction of the paper's
algorithm; the risk table of spec §4 is our reference simulation, not the paper's numbers.

Tuned methods (``mechverify.theory.algorithms.tuning``): each is tuned on 300 prompts and evaluated on
300 fresh prompts of the same stream (never on the tuning prompts).  Excess risk is
|w_hat - w*|^2 (x ~ N(0, I_d)).
"""

import math

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from scipy import stats

from mechverify.theory.algorithms.regression import correlation, gd_weights, ols_weights, ridge_weights
from mechverify.theory.algorithms.risk import gd_conditional_risk, ols_risk, ridge_conditional_risk
from mechverify.theory.algorithms.tuning import SparseComparison, sparse_method_weights
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training.sparse_regression import comparison
from verify.instances import seeds

PAPER = "chen-zhao-zou-2024"
# Each example is a whole Monte Carlo table: one per run, and no shrinking (it would redraw
# whole tables for a seed that is no simpler than any other).
STAT = settings(max_examples=1, deadline=None, phases=(Phase.explicit, Phase.generate))

# Spec §4 reference simulation (sigma = 0.5): (d, s, n) -> GD, ridge, PtO, Lasso.
REFERENCE = {(16, 4, 16): (0.97, 0.95, 0.57, 0.31), (16, 2, 16): (0.59, 0.58, 0.23, 0.15),
             (32, 2, 16): (1.22, 1.22, 0.40, 0.20), (32, 2, 32): (0.60, 0.59, 0.14, 0.07)}


def _mean_ci(values) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), 1.96 * float(v.std(ddof=1) / math.sqrt(v.size))


def _paired_less(a, b) -> float:
    """One-sided paired t-test p-value for mean(a) < mean(b)."""
    return float(stats.ttest_rel(a, b, alternative="less").pvalue)


def _random_rotations(rng, B: int, d: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((B, d, d)))
    return Q * np.sign(np.einsum("bii->bi", R))[:, None, :]        # Haar


@pytest.mark.claim(id="pto/unbiased-correlation", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_unbiased_correlation(record_claim, seed):
    """E r_hat = w* for x ~ N(0, I_d): over 1e5 prompts (d = 8, s = 2, n = 10, sigma = 0.5) the
    mean of r_hat - w* is within 3 standard errors of 0 in every coordinate."""
    b = sample_regression(100_000, 10, 8, sparsity=2, noise=0.5, seed=seed)
    diff = correlation(b.X, b.y) - b.w
    mean, se = diff.mean(axis=0), diff.std(axis=0, ddof=1) / math.sqrt(diff.shape[0])
    z = np.abs(mean) / se
    record_claim(float(z.max()), 3.0, detail={"mean": mean.round(5).tolist(), "se": se.round(5).tolist()})
    assert np.all(z <= 3.0)


@pytest.mark.claim(id="pto/rotation-invariance", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_rotation_invariance(record_claim, seed):
    """Ridge and GD from 0 are rotation-equivariant: averaged over X ~ N(0, I), their closed-form
    conditional risk at a sparse w* equals that at Q w* (Q Haar).  d = 16, s = 4, n = 16,
    sigma = 0.5, 4000 paired X; ridge lam in {0.06, 0.3}, GD (lr, steps) in {(0.05, 190), (0.2, 20)}.
    Asserted: the 95% confidence intervals of the two means overlap."""
    b = sample_regression(4000, 16, 16, sparsity=4, noise=0.5, seed=seed)
    rotated = np.einsum("bde,be->bd", _random_rotations(np.random.default_rng(seed), 4000, 16), b.w)
    cases = [("ridge", lambda w, lam=lam: ridge_conditional_risk(b.X, w, 0.5, lam)) for lam in (0.06, 0.3)]
    cases += [("gd", lambda w, lr=lr, t=t: gd_conditional_risk(b.X, w, 0.5, lr, t)) for lr, t in ((0.05, 190), (0.2, 20))]
    for name, risk in cases:
        (m0, h0), (m1, h1) = _mean_ci(risk(b.w)), _mean_ci(risk(rotated))
        gap = abs(m0 - m1)
        record_claim(gap, h0 + h1, detail={"method": name, "sparse": m0, "rotated": m1, "ci": [h0, h1]})
        assert gap <= h0 + h1, (name, m0, m1, h0, h1)


@pytest.mark.claim(id="pto/sparse-advantage", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_sparse_advantage(record_claim, seed, recompute):
    """PtO is not rotation-equivariant and exploits sparsity: with its hyperparameters tuned for
    the sparse task (d = 16, s = 4, n = 16, sigma = 0.5), its risk on 1000 tasks is lower at the
    sparse w* than at Q w* on the same X and noise (paired t-test p < 0.01).  Spec reference
    run: 0.85 vs 1.40."""
    tuned = comparison(SparseComparison(16, 4, 16, 0.5, seed=seed, methods=("pto",)), recompute)["params"]["pto"]
    b = sample_regression(1000, 16, 16, sparsity=4, noise=0.5, seed=seed, first=10_000)
    rotated = np.einsum("bde,be->bd", _random_rotations(np.random.default_rng(seed), 1000, 16), b.w)
    y_rot = b.y + np.einsum("bnd,bd->bn", b.X, rotated - b.w)          # same X and noise
    r_sparse = np.sum((sparse_method_weights("pto", tuned, b.X, b.y, 0.5) - b.w) ** 2, axis=1)
    r_rot = np.sum((sparse_method_weights("pto", tuned, b.X, y_rot, 0.5) - rotated) ** 2, axis=1)
    p = _paired_less(r_sparse, r_rot)
    record_claim(p, 0.01, detail={"sparse": float(r_sparse.mean()), "rotated": float(r_rot.mean())})
    assert p < 0.01


@pytest.mark.claim(id="pto/risk-ordering", paper=PAPER, provenance="paper", kind="statistical")
@pytest.mark.parametrize("part", ["ordering", pytest.param("reference-table", marks=pytest.mark.xfail(
    strict=False, reason="seed 0: in-sample Lasso risk at (d, s, n) = (32, 2, 32) is 0.081 against the "
    "reference 0.07 (+15.3%, tolerance 15%); every other cell is within 15%.  A mean over 300 tasks has a "
    "relative standard error of 4.5% there, so two independent runs differ by up to ~13% at 2 SE; "
    "non-strict because the outcome depends on the seed"))])
@STAT
@given(seed=seeds)
def test_risk_ordering(record_claim, seed, recompute, part):
    """Sparse noisy regime (sigma = 0.5), the four cells of the spec's table.

    ``ordering``: on 300 fresh tasks tuned PtO < tuned GD and < tuned ridge, and Lasso < PtO
    (paired t-tests, p < 0.01); GD and ridge within 15% of each other.
    ``reference-table``: the spec's reference simulation (§4; our own earlier run, not the
    paper's numbers) tuned every method on the 300 tasks it reports, so our in-sample risks
    on the tuning prompts (the same protocol) must be within 15% of each of its cells."""
    for (d, s, n), ref in REFERENCE.items():
        table = comparison(SparseComparison(d, s, n, 0.5, seed=seed), recompute)
        if part == "reference-table":
            tuned = table["tune_risk"]
            rel = {m: abs(tuned[m] / r - 1) for m, r in zip(("gd", "ridge", "pto", "lasso"), ref)}
            se = {m: round(float(np.std(v, ddof=1) / np.mean(v) / math.sqrt(len(v))), 3)
                  for m, v in table["risks"].items()}
            detail = {"cell": [d, s, n], "in_sample": {m: round(v, 3) for m, v in tuned.items()},
                      "reference": ref, "relative_se": se}
            record_claim(max(rel.values()), 0.15, detail=detail)
            assert max(rel.values()) <= 0.15, detail
            continue
        risks = table["risks"]
        means = {m: float(np.mean(v)) for m, v in risks.items()}
        p = {f"pto<{m}": _paired_less(risks["pto"], risks[m]) for m in ("gd", "ridge")}
        p["lasso<pto"] = _paired_less(risks["lasso"], risks["pto"])
        gd_ridge = abs(means["gd"] / means["ridge"] - 1)
        detail = {"cell": [d, s, n], "means": {m: round(v, 3) for m, v in means.items()}, "p": p}
        record_claim(max(p.values()), 0.01, detail=detail)
        record_claim(gd_ridge, 0.15, detail=detail)
        assert max(p.values()) < 0.01, detail
        assert gd_ridge <= 0.15, detail


@pytest.mark.claim(id="pto/lasso-comparable", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_lasso_comparable(record_claim, seed, recompute):
    """d <= n: the risk ratio PtO / Lasso (d = 16, s = 2, sigma = 0.5) over n in {d, 2d, 4d, 8d}
    stays below C log d with C = ratio(n = d) / log d fitted once at n = d, i.e. the ratio does
    not grow with n (allowed: 3 standard errors of the ratio, by the delta method)."""
    d = 16
    ratios = []
    for n in (d, 2 * d, 4 * d, 8 * d):
        risks = comparison(SparseComparison(d, 2, n, 0.5, seed=seed, methods=("pto", "lasso")), recompute)["risks"]
        a, b = np.asarray(risks["pto"]), np.asarray(risks["lasso"])
        ratio = a.mean() / b.mean()
        # delta-method SE of a ratio of paired means
        se = ratio * math.sqrt(np.var(a / a.mean() - b / b.mean(), ddof=1) / a.size)
        ratios.append((n, float(ratio), float(se)))
    C = ratios[0][1] / math.log(d)
    for n, ratio, se in ratios:
        ceiling = C * math.log(d) + 3 * math.hypot(se, ratios[0][2])
        record_claim(ratio, ceiling, detail={"C": C, "ratios": [(m, round(r, 3)) for m, r, _ in ratios]})
        assert ratio <= ceiling, ratios


@pytest.mark.claim(id="pto/low-noise-caveat", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.xfail(strict=True, reason="does not hold for our tuned PtO (step c / lambda_max of the preprocessed "
                   "loss, t <= 200): seed 0, excess risk OLS 0.0105 vs PtO 0.0088 at n = 32 and 0.0033 vs 0.0029 "
                   "at n = 64 (GD = OLS); PtO wins, p = 0.95 for 'OLS < PtO'")
@STAT
@given(seed=seeds)
def test_low_noise_caveat(record_claim, seed, recompute):
    """At sigma = 0.1 and n >= 2d (d = 16, s = 2, n in {32, 64}) OLS beats the tuned PtO (paired
    t-test over 300 fresh tasks, p < 0.01): the spec expects x_tilde = r_hat * x to be too
    ill-conditioned for 200 GD steps.  Tuned GD is recorded too."""
    d, failures = 16, []
    for n in (2 * d, 4 * d):
        c = SparseComparison(d, 2, n, 0.1, seed=seed, methods=("gd", "pto"))
        risks = comparison(c, recompute)["risks"]
        test = sample_regression(c.n_tasks, n, d, sparsity=2, noise=0.1, seed=seed, first=c.n_tasks)
        ols = np.sum((ols_weights(test.X, test.y) - test.w) ** 2, axis=1)
        p = _paired_less(ols, risks["pto"])
        detail = {"n": n, "ols": float(ols.mean()), "gd": float(np.mean(risks["gd"])),
                  "pto": float(np.mean(risks["pto"])), "p": p}
        record_claim(p, 0.01, detail=detail)
        if p >= 0.01:
            failures.append(detail)
    assert not failures, failures


@pytest.mark.claim(id="pto/baseline-risk-formulas", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_baseline_risk_formulas(record_claim, seed):
    """For one fixed X (d = 8, n in {6, 12}: under- and overdetermined), sparse w* and sigma = 0.5,
    the ridge and GD conditional-risk closed forms equal the Monte Carlo mean of |w_hat - w*|^2
    over 1e5 noise draws within 1% (relative)."""
    rng = np.random.default_rng(seed)
    for n in (6, 12):
        b = sample_regression(1, n, 8, sparsity=3, seed=seed)
        X, w = b.X, b.w
        eps = rng.standard_normal((100_000, n))
        Y = np.einsum("bnd,bd->bn", X, w) + 0.5 * eps                # 1e5 noisy copies of one prompt
        Xs = np.broadcast_to(X, (100_000, n, 8))
        for name, est, formula in [
            ("ridge", lambda: ridge_weights(Xs, Y, 0.2), ridge_conditional_risk(X, w, 0.5, 0.2)),
            ("gd", lambda: gd_weights(Xs, Y, 0.1, 30), gd_conditional_risk(X, w, 0.5, 0.1, 30)),
        ]:
            mc = np.sum((est() - w) ** 2, axis=1)
            rel = abs(mc.mean() / formula[0] - 1)
            record_claim(rel, 0.01, detail={"estimator": name, "n": n, "formula": float(formula[0]),
                                            "mc": float(mc.mean()), "se": float(mc.std() / math.sqrt(mc.size))})
            assert rel <= 0.01, (name, n, formula[0], mc.mean())


@pytest.mark.claim(id="pto/ols-harness", paper=PAPER, provenance="reconstructed", kind="statistical")
@STAT
@given(seed=seeds)
def test_ols_harness(record_claim, seed):
    """OLS on x ~ N(0, I_d), d = 5, n = 20, sigma = 0.5: the Monte Carlo mean of |w_OLS - w*|^2
    over 2e5 draws of X and noise equals sigma^2 d / (n - d - 1) within 1% (relative)."""
    b = sample_regression(200_000, 20, 5, noise=0.5, seed=seed)
    w_ols = ols_weights(b.X, b.y)
    mc = np.sum((w_ols - b.w) ** 2, axis=1)
    formula = ols_risk(20, 5, 0.5)
    rel = abs(mc.mean() / formula - 1)
    record_claim(rel, 0.01, detail={"formula": formula, "mc": float(mc.mean()),
                                    "se": float(mc.std() / math.sqrt(mc.size))})
    assert rel <= 0.01
