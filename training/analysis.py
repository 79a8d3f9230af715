"""Comparing a trained in-context regressor with reference algorithms (von Oswald et al.'s
metrics, ported to torch.func): prediction difference, input-sensitivity cosine, and the
loss along the straight line between trained and constructed (merged) weights; and the
ridge probe shared by the layer-probe analyses (HMM, Akyurek)."""

from __future__ import annotations

import numpy as np
import torch

from mechverify.constructions.modules import LinearTransformer
from mechverify.theory.algorithms.regression import gd_predict, gd_weights, gdpp_predict
from mechverify.theory.algorithms.tuning import empirical_risk


def predict_np(model: LinearTransformer, X: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
    dtype = model.readout.dtype
    with torch.no_grad():
        out = model.predict(*(torch.from_numpy(a).to(dtype) for a in (X, y, x_query)))
    return out.double().numpy()


def input_sensitivity(model: LinearTransformer, X: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
    """d y_hat_b / d x_q,b for every prompt b (B, d), by ``torch.func.grad`` of the summed
    predictions (prompts are independent, so the gradient of the sum is per prompt)."""
    dtype = model.readout.dtype
    Xt, yt, xqt = (torch.from_numpy(a).to(dtype) for a in (X, y, x_query))
    grad = torch.func.grad(lambda q: model.predict(Xt, yt, q).sum())(xqt)
    return grad.detach().double().numpy()


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("bd,bd->b", a, b) / np.where(den > 0, den, np.inf)


def gd_sensitivity(X, y, lr: float, steps: int) -> np.ndarray:
    """GD's prediction <w_T, x_q> is linear in x_q: its sensitivity is w_T."""
    return gd_weights(X, y, lr, steps)


def gdpp_sensitivity(X, y, lr: float, gamma: float, steps: int) -> np.ndarray:
    """GD++'s prediction is linear in x_q (each step multiplies x_q by a matrix of the context):
    its sensitivity is the prediction at the unit vectors e_1..e_d."""
    B, _, d = X.shape
    cols = [gdpp_predict(X, y, np.broadcast_to(np.eye(d)[k], (B, d)).copy(), lr, gamma, steps) for k in range(d)]
    return np.stack(cols, axis=1)


def compare(pred_model: np.ndarray, pred_ref: np.ndarray, sens_model: np.ndarray, sens_ref: np.ndarray,
            y_query: np.ndarray) -> dict[str, float]:
    """vO's metrics: RMS prediction difference (absolute and relative to the RMS target), mean
    and minimum sensitivity cosine, RMS sensitivity difference, and both risks."""
    cos = cosine_rows(sens_model, sens_ref)
    return {
        "pred_diff_rms": float(np.sqrt(np.mean((pred_model - pred_ref) ** 2))),
        "pred_diff_rel": float(np.sqrt(np.mean((pred_model - pred_ref) ** 2) / np.mean(y_query ** 2))),
        "sens_cos_mean": float(np.mean(cos)),
        "sens_cos_min": float(np.min(cos)),
        "sens_diff_rms": float(np.sqrt(np.mean(np.sum((sens_model - sens_ref) ** 2, axis=1)))),
        "risk_model": empirical_risk(pred_model, y_query),
        "risk_ref": empirical_risk(pred_ref, y_query),
    }


def compare_with_gd(model: LinearTransformer, batch, lr: float, steps: int) -> dict[str, float]:
    """Metrics of ``model`` against ``steps``-step GD with step ``lr`` on ``batch``."""
    pred_ref = gd_predict(batch.X, batch.y, batch.x_query, lr, steps)
    return compare(predict_np(model, batch.X, batch.y, batch.x_query), pred_ref,
                   input_sensitivity(model, batch.X, batch.y, batch.x_query),
                   gd_sensitivity(batch.X, batch.y, lr, steps), batch.y_query)


def compare_with_gdpp(model: LinearTransformer, batch, lr: float, gamma: float, steps: int) -> dict[str, float]:
    pred_ref = gdpp_predict(batch.X, batch.y, batch.x_query, lr, gamma, steps)
    return compare(predict_np(model, batch.X, batch.y, batch.x_query), pred_ref,
                   input_sensitivity(model, batch.X, batch.y, batch.x_query),
                   gdpp_sensitivity(batch.X, batch.y, lr, gamma, steps), batch.y_query)


def interpolation_risks(trained: LinearTransformer, constructed: LinearTransformer, batch,
                        alphas: np.ndarray) -> np.ndarray:
    """Empirical risk along (1-a) * trained + a * constructed in merged weights (W^KQ, W^PV)
    for one-layer models.  The merged pair has a scale symmetry (c W^KQ, W^PV / c); the
    trained pair is first rescaled so its W^KQ has the constructed one's Frobenius norm."""
    if len(trained.layers) != 1 or len(constructed.layers) != 1:
        raise ValueError("interpolation_risks compares one-layer models")
    dtype = constructed.readout.dtype
    kq_t, pv_t = (m.detach().to(dtype) for m in trained.layers[0].merged())
    kq_c, pv_c = (m.detach() for m in constructed.layers[0].merged())
    # readouts may differ in sign (vO reads -y, ZFB +y): fold the sign into W^PV
    sign = float(torch.dot(trained.readout.to(dtype), constructed.readout).sign()) or 1.0
    c = kq_c.norm() / kq_t.norm()
    kq_t, pv_t = kq_t * c, sign * pv_t / c
    risks = []
    probe = LinearTransformer([type(constructed.layers[0])(constructed.layout.width, 1, dtype=dtype)],
                              constructed.layout, constructed.readout.clone())
    for a in alphas:
        probe.layers[0].set_merged([(1 - a) * kq_t[0] + a * kq_c[0]], [(1 - a) * pv_t[0] + a * pv_c[0]])
        risks.append(empirical_risk(predict_np(probe, batch.X, batch.y, batch.x_query), batch.y_query))
    return np.asarray(risks)


def ridge_probe_predict(train_x: np.ndarray, train_t: np.ndarray, test_x: np.ndarray, ridge: float) -> np.ndarray:
    """A linear probe's predictions on ``test_x``: ridge regression (penalty ``ridge`` per
    sample) of the targets ``train_t`` (B, k) on the features ``train_x`` (B, F), standardised
    on the train split, with an intercept.  No input checks (the callers validate)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-8
    A = np.hstack([(train_x - mu) / sd, np.ones((train_x.shape[0], 1))])
    coef = np.linalg.solve(A.T @ A + ridge * A.shape[0] * np.eye(A.shape[1]), A.T @ train_t)
    return np.hstack([(test_x - mu) / sd, np.ones((test_x.shape[0], 1))]) @ coef
