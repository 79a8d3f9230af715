"""Tuned baselines: the step sizes (and GD++'s gamma) that minimise the empirical risk of a
reference algorithm on a fixed sample of prompts from the task distribution."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from theory.algorithms.regression import gd_predict, gdpp_predict
from theory.checks import check_int, check_real, check_regression_batch


def empirical_risk(pred: np.ndarray, y_query: np.ndarray) -> float:
    """0.5 * mean squared error (the training loss's convention)."""
    return 0.5 * float(np.mean((pred - y_query) ** 2))


def tune_gd_lr(X, y, x_query, y_query, steps: int, lr_max: float) -> tuple[float, float]:
    """argmin over lr in (0, lr_max] of the empirical risk of ``steps``-step GD from 0;
    returns (lr*, risk).  Bounded Brent search on a log scale."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    steps = check_int("steps", steps)
    lr_max = check_real("lr_max", lr_max, positive=True)

    def risk(log_lr):
        return empirical_risk(gd_predict(X, y, x_query, float(np.exp(log_lr)), steps), y_query)

    res = minimize_scalar(risk, bounds=(np.log(lr_max) - 12.0, np.log(lr_max)), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x)), float(res.fun)


def tune_gdpp(X, y, x_query, y_query, steps: int, lr0: float, gamma0: float = 0.0) -> tuple[float, float, float]:
    """argmin over (lr, gamma) of the empirical risk of ``steps``-step GD++ (Nelder-Mead from
    (lr0, gamma0)); returns (lr*, gamma*, risk)."""
    X, y, x_query = check_regression_batch(X, y, x_query)
    steps = check_int("steps", steps)
    lr0 = check_real("lr0", lr0, positive=True)
    gamma0 = check_real("gamma0", gamma0)

    def risk(p):
        pred = gdpp_predict(X, y, x_query, float(p[0]), float(p[1]), steps)
        return empirical_risk(pred, y_query) if np.all(np.isfinite(pred)) else np.inf

    res = minimize(risk, x0=[lr0, gamma0], method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 2000})
    return float(res.x[0]), float(res.x[1]), float(res.fun)
