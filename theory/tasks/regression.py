"""In-context linear-regression prompts (Garg et al. conventions, numpy only).

A prompt is n labelled pairs (x_i, y_i) and a query (x_q, y_q) from one task w:
``y = <w, x> + noise * eps``.  Batched over a leading axis B.

x distributions
    ``"gaussian"``: x ~ N(0, cov) (cov = I when not given);
    ``"uniform"``: x ~ U(-x_range/2, x_range/2)^d (the von Oswald code's convention).
w priors
    ``"isotropic"``: w ~ N(0, I_d);
    ``"inverse_cov"``: w ~ N(0, cov^{-1}) (Ahn et al.'s data code);
    with ``sparsity=s``: w ~ N(0, I_d) then all but s uniformly chosen coordinates zeroed.

Every prompt b of a batch drawn with seed ``seed`` is reproducible on its own with
``sample_regression(1, ..., seed=seed, first=b)``: prompts are drawn in chunks of
``CHUNK`` from independent child streams of one SeedSequence, so a prompt depends only on
(seed, its index), as in ``dtsip/in-context-learning``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechverify.theory.checks import check_int, check_real, check_spd

X_DISTS = ("gaussian", "uniform")
W_PRIORS = ("isotropic", "inverse_cov")
CHUNK = 256


def _standard_normals(seed: int, first: int, count: int, size: int) -> np.ndarray:
    """Rows ``first .. first+count-1`` of an endless (row, size) standard-normal stream."""
    c0, c1 = first // CHUNK, (first + count - 1) // CHUNK + 1
    children = np.random.SeedSequence(seed).spawn(c1)[c0:]
    block = np.concatenate([np.random.default_rng(c).standard_normal((CHUNK, size)) for c in children])
    start = first - c0 * CHUNK
    return block[start:start + count]


@dataclass(frozen=True)
class RegressionBatch:
    """B prompts: X (B,n,d), y (B,n), x_query (B,d), y_query (B,), w (B,d)."""

    X: np.ndarray
    y: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    w: np.ndarray


def sample_regression(
    n_prompts: int,
    n: int,
    d: int,
    *,
    cov=None,
    sparsity: int | None = None,
    noise: float = 0.0,
    x_dist: str = "gaussian",
    x_range: float = 1.0,
    w_prior: str = "isotropic",
    seed: int = 0,
    first: int = 0,
) -> RegressionBatch:
    """Draw prompts ``first .. first+n_prompts-1`` of the stream defined by ``seed``."""
    n_prompts = check_int("n_prompts", n_prompts)
    n = check_int("n", n)
    d = check_int("d", d)
    seed = check_int("seed", seed, minimum=0)
    first = check_int("first", first, minimum=0)
    noise = check_real("noise", noise, nonnegative=True)
    x_range = check_real("x_range", x_range, positive=True)
    if x_dist not in X_DISTS:
        raise ValueError(f"x_dist must be one of {X_DISTS}; got {x_dist!r}")
    if w_prior not in W_PRIORS:
        raise ValueError(f"w_prior must be one of {W_PRIORS}; got {w_prior!r}")
    if sparsity is not None:
        sparsity = check_int("sparsity", sparsity)
        if sparsity > d:
            raise ValueError(f"sparsity must be <= d = {d}; got {sparsity}")
    if cov is not None:
        cov = check_spd("cov", cov, d)
        if x_dist != "gaussian":
            raise ValueError("cov is only used with x_dist='gaussian'")
    if w_prior == "inverse_cov" and cov is None:
        raise ValueError("w_prior='inverse_cov' needs cov")
    if w_prior == "inverse_cov" and sparsity is not None:
        raise ValueError("sparsity is only defined for w_prior='isotropic'")

    raw = _standard_normals(seed, first, n_prompts, (n + 1) * d + d + (n + 1) + d)
    pos = 0
    z_x = raw[:, pos:pos + (n + 1) * d].reshape(n_prompts, n + 1, d); pos += (n + 1) * d
    z_w = raw[:, pos:pos + d]; pos += d
    z_eps = raw[:, pos:pos + n + 1]; pos += n + 1
    z_support = raw[:, pos:pos + d]

    if x_dist == "gaussian":
        xs = z_x if cov is None else z_x @ np.linalg.cholesky(cov).T
    else:
        # Map normals to uniforms through the normal CDF (keeps one stream per prompt).
        from scipy.special import ndtr

        xs = (ndtr(z_x) - 0.5) * x_range
    if w_prior == "isotropic":
        w = z_w.copy()
    else:
        # w ~ N(0, cov^{-1}): w = L^{-T} z with cov = L L^T.
        L = np.linalg.cholesky(cov)
        w = np.linalg.solve(L.T, z_w.T).T
    if sparsity is not None and sparsity < d:
        # The s coordinates with the largest support scores stay: a uniform random subset.
        keep = np.argsort(-z_support, axis=1)[:, :sparsity]
        mask = np.zeros_like(w, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        w = np.where(mask, w, 0.0)
    ys = np.einsum("bnd,bd->bn", xs, w) + noise * z_eps
    return RegressionBatch(X=xs[:, :n], y=ys[:, :n], x_query=xs[:, n], y_query=ys[:, n], w=w)
