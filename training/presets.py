"""Named training runs shared by the trained claims and the figures (one config -> one
cache entry, so a claim and a figure about the same run train it once).

``scale="quick"`` is the CPU setting used by ``make test`` (all GD-ICL runs together
about a minute on 2 cores); ``scale="paper"`` is the paper's setting (vO: 10k Adam steps).
"""

from __future__ import annotations

import numpy as np

from mechverify.training.loop import LSATrainConfig

SCALES = ("quick", "paper")

# ZFB setting (spec gd_icl.md §6.2): d = 5, diagonal covariance spread 1..4, N = 20.
ZFB_D, ZFB_N = 5, 20
ZFB_LAMBDA = tuple(float(v) for v in np.linspace(1.0, 4.0, ZFB_D))
# SGD-tracks-ODE: a narrower spread (1..2) keeps all rates lambda_k lambda_l m_l within 10x
# of each other, so one small step size resolves every entry's decay.
TRACK_LAMBDA = tuple(float(v) for v in np.linspace(1.0, 2.0, ZFB_D))


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    return scale


def vo_config(n_layers: int = 1, scale: str = "quick", seed: int = 0) -> LSATrainConfig:
    """von Oswald et al.'s setup: d = N = 10, x ~ U(-1/2, 1/2) (the code's input_range=1.0),
    w ~ N(0, I), Adam 1e-3, batch 512, init scale 0.002 / L."""
    steps = {"quick": 3000 if n_layers == 1 else 5000, "paper": 10000}[_check_scale(scale)]
    return LSATrainConfig(d=10, n=10, n_layers=n_layers, steps=steps, batch=512, lr=1e-3,
                          optimizer="adam", parametrization="full", init_scale=0.002 / n_layers,
                          x_dist="uniform", x_range=1.0, seed=seed)


def zfb_config(scale: str = "quick", seed: int = 0) -> LSATrainConfig:
    """Zhang-Frei-Bartlett: SGD on (u, W11) from a small balanced init."""
    steps, batch = {"quick": (600, 1024), "paper": (2000, 4096)}[_check_scale(scale)]
    return LSATrainConfig(d=ZFB_D, n=ZFB_N, steps=steps, batch=batch, lr=0.02, optimizer="sgd",
                          parametrization="zfb", init_scale=0.1, x_dist="gaussian", cov_diag=ZFB_LAMBDA,
                          dtype="float64", log_every=25, seed=seed)


def zfb_track_configs(scale: str = "quick") -> list[LSATrainConfig]:
    """Small-step SGD directly on G from G(0) = 0.3 off the diagonal, 0 on it; several seeds."""
    n_seeds, batch = {"quick": (6, 512), "paper": (16, 2048)}[_check_scale(scale)]
    d = ZFB_D
    G0 = tuple(tuple(0.0 if k == l else 0.3 for l in range(d)) for k in range(d))
    return [LSATrainConfig(d=d, n=ZFB_N, steps=700, batch=batch, lr=0.002, optimizer="sgd",
                           parametrization="merged", init_G=G0, x_dist="gaussian", cov_diag=TRACK_LAMBDA,
                           dtype="float64", log_every=10, seed=s) for s in range(n_seeds)]
