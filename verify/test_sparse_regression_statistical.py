"""Claims: preprocess-then-optimize against GD, ridge, OLS and Lasso, Monte Carlo part
(docs/sparse_regression.md §4, §7).  PtO is our reconstruction of the paper's
algorithm; the risk table of docs/sparse_regression.md §4 is our reference simulation, not the paper's numbers.

Tuned methods (``mechverify.theory.algorithms.tuning``): each is tuned on 300 prompts and evaluated on
300 fresh prompts of the same stream (never on the tuning prompts).  Excess risk is
|w_hat - w*|^2 (x ~ N(0, I_d)).
"""

import math

import numpy as np
import pytest
from scipy import stats

from mechverify.theory.algorithms.regression import correlation, gd_weights, ols_weights, ridge_weights
from mechverify.theory.algorithms.risk import gd_conditional_risk, ols_risk, ridge_conditional_risk
from mechverify.theory.algorithms.tuning import SparseComparison, sparse_method_weights
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training.sparse_regression import comparison
from verify.instances import Z_ALARM, Z_POWER, mean_se, se_verdict

PAPER = "chen-zhao-zou-2024"
# Each instance is a whole Monte Carlo table: one per run, its seed from the ``instance_seed``
# fixture (it follows --hypothesis-seed and the claim; a plain run is reproducible).

# docs/sparse_regression.md §4 reference simulation (sigma = 0.5): (d, s, n) -> GD, ridge, PtO, Lasso.
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
def test_unbiased_correlation(record_claim, instance_seed):
    """E r_hat = w* for x ~ N(0, I_d): over 1e5 prompts (d = 8, s = 2, n = 10, sigma = 0.5) the
    mean of r_hat - w* is within 3 standard errors of 0 in every coordinate (the spec's rule), read
    family-wise: 3 SE is a two-sided 0.27% false alarm for one coordinate, so over d = 8 coordinates
    each is held to the Bonferroni bound z = Phi^-1(1 - 0.0027 / (2 d)) = 3.62 (same 0.27% for the
    whole vector).  Power: a bias of 0.02 (1% of the noise-free scale |w*| ~ 2 per coordinate) in
    any coordinate would be seen, (3.62 + 1.645) SE <= 0.02 is asserted."""
    seed = instance_seed
    b = sample_regression(100_000, 10, 8, sparsity=2, noise=0.5, seed=seed)
    diff = correlation(b.X, b.y) - b.w
    mean, se = diff.mean(axis=0), diff.std(axis=0, ddof=1) / math.sqrt(diff.shape[0])
    z = np.abs(mean) / se
    z_family = float(stats.norm.ppf(1 - 0.0027 / (2 * mean.size)))
    record_claim(float(z.max()), z_family, detail={"mean": mean.round(5).tolist(), "se": se.round(5).tolist(),
                                                   "z_family": z_family})
    assert (z_family + Z_POWER) * se.max() <= 0.02, f"underpowered: SE {se.max():.4g}"
    assert np.all(z <= z_family)


@pytest.mark.claim(id="pto/rotation-invariance", paper=PAPER, provenance="reconstructed", kind="statistical")
def test_rotation_invariance(record_claim, instance_seed):
    """Ridge and GD from 0 are rotation-equivariant: averaged over X ~ N(0, I), their closed-form
    conditional risk at a sparse w* equals that at Q w* (Q Haar).  d = 16, s = 4, n = 16,
    sigma = 0.5, 12000 X, each used at w* and at Q w* (paired); ridge lam in {0.06, 0.3}, GD
    (lr, steps) in {(0.05, 190), (0.2, 20)}.  Asserted: the mean paired difference is within
    Z_ALARM = 4 standard errors of 0, and the test has the power to see a 5% relative difference
    ((4 + 1.645) SE <= 5% of the mean risk; the effect the paper relies on, PtO's sparse advantage,
    is ~40%: 0.85 vs 1.40 in the spec's reference run).  (The spec's rule, overlapping 95% CIs of the two
    unpaired means, ignores the pairing and has far less power; the CI half-widths are recorded.)"""
    seed = instance_seed
    b = sample_regression(12_000, 16, 16, sparsity=4, noise=0.5, seed=seed)
    rotated = np.einsum("bde,be->bd", _random_rotations(np.random.default_rng(seed), 12_000, 16), b.w)
    cases = [("ridge", lambda w, lam=lam: ridge_conditional_risk(b.X, w, 0.5, lam)) for lam in (0.06, 0.3)]
    cases += [("gd", lambda w, lr=lr, t=t: gd_conditional_risk(b.X, w, 0.5, lr, t)) for lr, t in ((0.05, 190), (0.2, 20))]
    for name, risk in cases:
        r0, r1 = risk(b.w), risk(rotated)
        diff, se = mean_se(r0 - r1)
        verdict = se_verdict(diff, se, 0.05 * float(np.mean(r0)))
        detail = {"method": name, "sparse": float(np.mean(r0)), "rotated": float(np.mean(r1)), "paired_diff": diff,
                  **verdict, "unpaired_ci": [_mean_ci(r0)[1], _mean_ci(r1)[1]]}
        record_claim(abs(diff), Z_ALARM * se, detail=detail)
        assert verdict["powered"], detail
        assert verdict["consistent"], detail


@pytest.mark.claim(id="pto/sparse-advantage", paper=PAPER, provenance="reconstructed", kind="statistical")
def test_sparse_advantage(record_claim, instance_seed, recompute):
    """PtO is not rotation-equivariant and exploits sparsity: with its hyperparameters tuned for
    the sparse task (d = 16, s = 4, n = 16, sigma = 0.5), its risk on 1000 tasks is lower at the
    sparse w* than at Q w* on the same X and noise (paired t-test p < 0.01).  Spec reference
    run: 0.85 vs 1.40."""
    seed = instance_seed
    tuned = comparison(SparseComparison(16, 4, 16, 0.5, seed=seed, methods=("pto",)), recompute)["params"]["pto"]
    b = sample_regression(1000, 16, 16, sparsity=4, noise=0.5, seed=seed, first=10_000)
    rotated = np.einsum("bde,be->bd", _random_rotations(np.random.default_rng(seed), 1000, 16), b.w)
    y_rot = b.y + np.einsum("bnd,bd->bn", b.X, rotated - b.w)          # same X and noise
    r_sparse = np.sum((sparse_method_weights("pto", tuned, b.X, b.y, 0.5) - b.w) ** 2, axis=1)
    r_rot = np.sum((sparse_method_weights("pto", tuned, b.X, y_rot, 0.5) - rotated) ** 2, axis=1)
    p = _paired_less(r_sparse, r_rot)
    _, se = mean_se(r_sparse - r_rot)
    # power: the spec's reference gap (1.40 - 0.85 = 0.55) would reach p < 0.01 (z 2.33) with 95% power
    detail = {"sparse": float(r_sparse.mean()), "rotated": float(r_rot.mean()), "paired_se": se}
    record_claim(p, 0.01, detail=detail)
    assert (stats.norm.ppf(0.99) + Z_POWER) * se <= 0.55, f"underpowered: {detail}"
    assert p < 0.01


@pytest.mark.claim(id="pto/risk-ordering", paper=PAPER, provenance="paper", kind="statistical")
@pytest.mark.parametrize("part", ["ordering", "reference-table"])
def test_risk_ordering(record_claim, instance_seed, recompute, part):
    """Sparse noisy regime (sigma = 0.5), the four cells of the spec's table.

    ``ordering``: on 300 fresh tasks tuned PtO < tuned GD and < tuned ridge, and Lasso < PtO
    (paired t-tests, p < 0.01); GD and ridge within 15% of each other.
    ``reference-table``: the reference simulation of docs/sparse_regression.md (§4; our own earlier run, not the
    paper's numbers) tuned every method on the 300 tasks it reports, so our in-sample risks
    on the tuning prompts (the same protocol) must be within 15% of each of its cells, except
    where 15% is inside the noise of comparing two runs: the reference is one run of the same
    protocol, so the relative difference of two runs has standard error sqrt(2) x the relative
    SE of one mean over 300 tasks (measured on the fresh tasks' risks), and a cell is allowed
    max(15%, Z_ALARM sqrt(2) SE).  (At (32, 2, 32) the Lasso's relative SE is ~4.5%, a band of
    ~25%: there a fixed 15% failed on some seeds, e.g. +15.3% at the old seed 0.)"""
    seed = instance_seed
    for (d, s, n), ref in REFERENCE.items():
        table = comparison(SparseComparison(d, s, n, 0.5, seed=seed), recompute)
        if part == "reference-table":
            tuned = table["tune_risk"]
            rel = {m: abs(tuned[m] / r - 1) for m, r in zip(("gd", "ridge", "pto", "lasso"), ref)}
            se = {m: float(np.std(v, ddof=1) / np.mean(v) / math.sqrt(len(v))) for m, v in table["risks"].items()}
            allowed = {m: max(0.15, Z_ALARM * math.sqrt(2) * se[m]) for m in rel}
            detail = {"cell": [d, s, n], "in_sample": {m: round(v, 3) for m, v in tuned.items()},
                      "reference": ref, "relative_se": {m: round(v, 4) for m, v in se.items()},
                      "allowed": {m: round(v, 3) for m, v in allowed.items()}}
            for m in rel:
                record_claim(rel[m], allowed[m], detail=detail)
            assert all(rel[m] <= allowed[m] for m in rel), detail
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
def test_lasso_comparable(record_claim, instance_seed, recompute):
    """d <= n: the risk ratio PtO / Lasso (d = 16, s = 2, sigma = 0.5) over n in {d, 2d, 4d, 8d}
    stays below C log d with C = ratio(n = d) / log d fitted once at n = d, i.e. the ratio does
    not grow with n.  Asserted at n = 2d, 4d, 8d only (n = d is where C is fitted: it cannot fail
    there), each against C log d + Z_ALARM = 4 standard errors of the difference of the two ratios
    (delta method, independent task draws); and the test must have the power to see a ratio 50%
    above C log d ((4 + 1.645) SE <= 0.5 C log d; growth by a factor log d = 2.8 is what "within
    logarithmic factors" allows; 300 tasks per cell gave SE up to 0.17 on ratios ~1.2-1.7, too
    noisy for that, so each cell tunes and evaluates on 1000 tasks)."""
    seed = instance_seed
    d = 16
    ratios = []
    for n in (d, 2 * d, 4 * d, 8 * d):
        risks = comparison(SparseComparison(d, 2, n, 0.5, n_tasks=1000, seed=seed, methods=("pto", "lasso")),
                           recompute)["risks"]
        a, b = np.asarray(risks["pto"]), np.asarray(risks["lasso"])
        ratio = a.mean() / b.mean()
        # delta-method SE of a ratio of paired means
        se = ratio * math.sqrt(np.var(a / a.mean() - b / b.mean(), ddof=1) / a.size)
        ratios.append((n, float(ratio), float(se)))
    C = ratios[0][1] / math.log(d)
    for n, ratio, se in ratios[1:]:
        se_diff = math.hypot(se, ratios[0][2])
        ceiling = C * math.log(d) + Z_ALARM * se_diff
        detail = {"C": C, "n": n, "se_diff": se_diff, "ratios": [(m, round(r, 3), round(e, 3)) for m, r, e in ratios]}
        record_claim(ratio, ceiling, detail=detail)
        assert (Z_ALARM + Z_POWER) * se_diff <= 0.5 * C * math.log(d), f"underpowered: {detail}"
        assert ratio <= ceiling, detail


@pytest.mark.claim(id="pto/low-noise-caveat", paper=PAPER, provenance="reconstructed", kind="statistical")
@pytest.mark.xfail(strict=True, reason="does not hold for our tuned PtO (step c / lambda_max of the preprocessed "
                   "loss, t <= 200): seed 0, excess risk OLS 0.0105 vs PtO 0.0088 at n = 32 and 0.0033 vs 0.0029 "
                   "at n = 64 (GD = OLS); PtO wins, p = 0.95 for 'OLS < PtO'")
def test_low_noise_caveat(record_claim, instance_seed, recompute):
    """At sigma = 0.1 and n >= 2d (d = 16, s = 2, n in {32, 64}) OLS beats the tuned PtO (paired
    t-test over 300 fresh tasks, p < 0.01): the spec expects x_tilde = r_hat * x to be too
    ill-conditioned for 200 GD steps.  Tuned GD is recorded too."""
    seed = instance_seed
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
def test_baseline_risk_formulas(record_claim, instance_seed):
    """For one fixed X (d = 8, n in {6, 12}: under- and overdetermined), sparse w* and sigma = 0.5,
    the ridge and GD conditional-risk closed forms equal the Monte Carlo mean of |w_hat - w*|^2
    over noise draws: within Z_ALARM = 4 standard errors, and the test has the power to see the
    spec's 1% ((4 + 1.645) SE <= 1% of the formula).  1e5 draws, or, where the drawn X makes the
    squared error more variable (seed 7: ridge at n = 6), as many more as that power needs
    (estimated from the first 1e5, at most 2e6)."""
    seed = instance_seed
    rng = np.random.default_rng(seed)
    for n in (6, 12):
        b = sample_regression(1, n, 8, sparsity=3, seed=seed)
        X, w = b.X, b.w

        def squared_errors(estimator, draws):
            Y = np.einsum("bnd,bd->bn", X, w) + 0.5 * rng.standard_normal((draws, n))  # noisy copies of one prompt
            Xs = np.broadcast_to(X, (draws, n, 8))
            w_hat = ridge_weights(Xs, Y, 0.2) if estimator == "ridge" else gd_weights(Xs, Y, 0.1, 30)
            return np.sum((w_hat - w) ** 2, axis=1)

        for name, formula in [("ridge", ridge_conditional_risk(X, w, 0.5, 0.2)),
                              ("gd", gd_conditional_risk(X, w, 0.5, 0.1, 30))]:
            formula = float(formula[0])
            errors = squared_errors(name, 100_000)
            needed = math.ceil(errors.size * ((Z_ALARM + Z_POWER) * mean_se(errors)[1] / (0.01 * formula)) ** 2)
            if needed > errors.size:
                assert needed <= 2_000_000, f"{name}, n = {n}: the 1% power needs {needed} noise draws"
                errors = np.concatenate([errors, squared_errors(name, int(1.1 * needed) - errors.size)])
            mean, se = mean_se(errors)
            verdict = se_verdict(mean - formula, se, 0.01 * formula)
            detail = {"estimator": name, "n": n, "formula": formula, "mc": mean, "draws": errors.size, **verdict}
            record_claim(abs(mean - formula), Z_ALARM * se, detail=detail)
            assert verdict["powered"] and verdict["consistent"], detail


@pytest.mark.claim(id="pto/ols-harness", paper=PAPER, provenance="reconstructed", kind="statistical")
def test_ols_harness(record_claim, instance_seed):
    """OLS on x ~ N(0, I_d), d = 5, n = 20, sigma = 0.5: the Monte Carlo mean of |w_OLS - w*|^2
    over 3e5 draws of X and noise equals sigma^2 d / (n - d - 1) within Z_ALARM = 4 standard
    errors, and the test has the power to see the spec's 1% ((4 + 1.645) SE <= 1% of the formula)."""
    seed = instance_seed
    b = sample_regression(300_000, 20, 5, noise=0.5, seed=seed)
    w_ols = ols_weights(b.X, b.y)
    mean, se = mean_se(np.sum((w_ols - b.w) ** 2, axis=1))
    formula = ols_risk(20, 5, 0.5)
    verdict = se_verdict(mean - formula, se, 0.01 * formula)
    detail = {"formula": formula, "mc": mean, **verdict}
    record_claim(abs(mean - formula), Z_ALARM * se, detail=detail)
    assert verdict["powered"] and verdict["consistent"], detail
