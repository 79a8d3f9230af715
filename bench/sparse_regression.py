"""Sparse regression benchmarks: the PtO construction against the numpy reference, and our
batched coordinate-descent Lasso against scikit-learn's ``Lasso`` (one fit per prompt).

Lasso tolerances: ours stops a prompt once an exact solve on its support passes the
optimality (KKT) conditions, or else when no coordinate moved by ``tol`` in a sweep;
scikit-learn stops when its duality gap is below ``tol * |y|^2``.  Both are run at the same
numerical ``tol``, and the agreement (largest coordinate difference, objective gap) is
printed next to the time ratio; the two sides are timed in interleaved rounds of the same run
(best wall-clock round, and beside it the ratio of the best process CPU times, steadier when
other processes load the cores).
"""

from __future__ import annotations

import numpy as np
import torch

from bench import table, time_rounds
from mechverify.constructions.sparse_regression import pto_transformer
from mechverify.theory.algorithms.regression import lasso_weights, pto_predict
from mechverify.theory.tasks.regression import sample_regression


def _objective(X, y, w, lam):
    return 0.5 * np.mean((np.einsum("bnd,bd->bn", X, w) - y) ** 2, axis=1) + lam * np.abs(w).sum(axis=1)


def run(quick: bool, emit) -> dict:
    from sklearn.linear_model import Lasso

    reps = 3 if quick else 10
    record = {"pto": {}, "lasso": {}}
    rows = []
    for d, n, T in ((16, 32, 10), (32, 128, 20)):
        b = sample_regression(1024, n, d, sparsity=2, noise=0.5, seed=0)
        model = pto_transformer(d, T, 0.05)
        X, y, xq = (torch.from_numpy(a) for a in (b.X, b.y, b.x_query))
        with torch.no_grad():
            t = time_rounds({"construction": lambda: model.predict(X, y, xq),
                             "numpy": lambda: pto_predict(b.X, b.y, b.x_query, 0.05, T)}, reps=reps)
            err = float(np.abs(model.predict(X, y, xq).numpy() - pto_predict(b.X, b.y, b.x_query, 0.05, T)).max())
        ratio = t["numpy"].best / t["construction"].best
        record["pto"][f"d{d}_n{n}_T{T}"] = {"construction_s": t["construction"].best, "numpy_s": t["numpy"].best,
                                            "numpy_over_construction": ratio, "max_abs_diff": err}
        rows.append([f"d={d} n={n} T={T}", f"{t['construction'].best * 1e3:.2f}", f"{t['numpy'].best * 1e3:.2f}",
                     f"{ratio:.2f}", f"{err:.1e}"])
    emit("\nPtO: pto_transformer(...).predict vs theory pto_predict (B = 1024, float64)")
    emit(table(["setting", "construction ms", "numpy ms", "numpy/construction", "max |diff|"], rows))

    rows = []
    for d, n, lam in ((32, 16, 0.1), (32, 64, 0.05)):
        B = 100 if quick else 300
        b = sample_regression(B, n, d, sparsity=2, noise=0.5, seed=1)
        tol = 1e-8
        ours = lambda: lasso_weights(b.X, b.y, lam, tol=tol)
        def theirs():
            return np.stack([Lasso(alpha=lam, fit_intercept=False, tol=tol, max_iter=100_000).fit(b.X[i], b.y[i]).coef_
                             for i in range(B)])
        t = time_rounds({"ours": ours, "sklearn": theirs}, reps=max(1, reps // 3))
        w1, w2 = ours(), theirs()
        gap = float(np.max(np.abs(_objective(b.X, b.y, w1, lam) - _objective(b.X, b.y, w2, lam))))
        ratio = t["sklearn"].best / t["ours"].best
        ratio_cpu = t["sklearn"].best_cpu / t["ours"].best_cpu
        record["lasso"][f"d{d}_n{n}"] = {"ours_s": t["ours"].best, "sklearn_s": t["sklearn"].best,
                                         "sklearn_over_ours": ratio, "sklearn_over_ours_cpu": ratio_cpu,
                                         "max_coef_diff": float(np.abs(w1 - w2).max()),
                                         "max_objective_diff": gap, "prompts": B, "lam": lam, "tol": tol}
        rows.append([f"d={d} n={n} lam={lam} B={B}", f"{t['ours'].best:.3f}", f"{t['sklearn'].best:.3f}",
                     f"{ratio:.2f}", f"{ratio_cpu:.2f}", f"{np.abs(w1 - w2).max():.1e}", f"{gap:.1e}"])
    emit("\nLasso: our batched coordinate descent + active-set solve vs scikit-learn Lasso, tol = 1e-8")
    emit(table(["problems", "ours s", "sklearn s", "sklearn/ours", "(CPU time)", "max |coef diff|",
                "max |obj diff|"], rows))
    return record
