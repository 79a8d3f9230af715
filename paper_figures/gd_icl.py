"""Figures for the GD-ICL spec (von Oswald et al. 2023; Zhang-Frei-Bartlett 2024; Akyürek et al. 2023 analogue)."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from mechverify.constructions.gd_icl import gd_transformer
from mechverify.paper_figures.common import mark_gates, new_figure, run_scale, save, trained_run
from mechverify.paper_figures.registry import figure
from mechverify.theory.algorithms.tuning import tune_gd_lr
from mechverify.theory.symbolic.lsa_optimum import zfb_gamma, zfb_risk
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training import gd_icl
from mechverify.training.aky import compare_references, layer_probes
from mechverify.training.gates import aky_gate, lsa_gate
from mechverify.training.analysis import compare_with_gd, interpolation_risks, predict_np
from mechverify.training.gd_icl import model_at

TUNE_SEED, EVAL_SEED = 10**6, 10**6 + 1


@figure("gd_icl/training")
def training_vs_gd(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, model, payload = trained_run(gd_icl, "vo_1", quick, recompute, device)
    tune = config.sample(8192, TUNE_SEED)
    lr, gd_risk = tune_gd_lr(tune.X, tune.y, tune.x_query, tune.y_query, 1, lr_max=50.0)
    ev = config.sample(2048, EVAL_SEED)
    steps = payload["log_steps"].numpy()
    picks = np.unique(np.linspace(0, len(steps) - 1, 30).round().astype(int))
    cos, rel = [], []
    for i in tqdm(picks, desc="gd_icl/training: along training", disable=None, leave=False):
        m = compare_with_gd(model_at(config, payload, int(i)), ev, lr, 1)
        cos.append(m["sens_cos_mean"]); rel.append(m["pred_diff_rel"])
    alphas = np.linspace(0.0, 1.0, 21)
    risks = interpolation_risks(model, gd_transformer(config.d, 1, lr), ev, alphas)

    fig, ax = new_figure(3)
    ax[0, 0].plot(steps, payload["loss"].numpy(), label="trained LSA")
    ax[0, 0].axhline(gd_risk, color="k", ls="--", label=f"GD, eta*={lr:.2f}")
    ax[0, 0].set(xlabel="training step", ylabel="loss 0.5 E(y_hat - y)^2", yscale="log", title="loss")
    ax[0, 0].legend()
    ax[0, 1].plot(steps[picks], cos, "o-", ms=3, label="sensitivity cosine")
    ax[0, 1].plot(steps[picks], rel, "s-", ms=3, label="relative prediction diff")
    ax[0, 1].set(xlabel="training step", title="alignment with GD(eta*)", ylim=(-0.05, 1.05))
    ax[0, 1].legend()
    ax[0, 2].plot(alphas, risks, "o-", ms=3)
    ax[0, 2].set(xlabel="alpha (0 = trained, 1 = constructed GD)", ylabel="risk", title="interpolation")
    mark_gates(fig, {"vo_1": lsa_gate(model, ev, lr, 1)})
    return save(fig, out_dir, "gd_icl_training")


@figure("gd_icl/risk_vs_length")
def risk_vs_length(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, model, _ = trained_run(gd_icl, "zfb", quick, recompute, device)
    lam = np.asarray(config.cov_diag)
    G = np.linalg.inv(zfb_gamma(lam, config.n))
    lengths = np.array([2, 5, 10, 20, 40, 80, 160])
    n_mc = 20000 if quick else 200000
    closed, mc, mc_se, trained_risk = [], [], [], []
    for M in tqdm(lengths, desc="gd_icl/risk_vs_length", disable=None, leave=False):
        b = sample_regression(n_mc, int(M), config.d, cov=np.diag(lam), seed=int(M))
        h = np.einsum("bn,bnd->bd", b.y, b.X) / M
        err = (np.einsum("bd,de,be->b", b.x_query, G, h) - b.y_query) ** 2
        closed.append(zfb_risk(G, lam, int(M)))
        mc.append(err.mean()); mc_se.append(err.std(ddof=1) / np.sqrt(n_mc))
        trained_risk.append(np.mean((predict_np(model, b.X, b.y, b.x_query) - b.y_query) ** 2))
    fig, ax = new_figure(1, width=4.5)
    a = ax[0, 0]
    a.plot(lengths, closed, "-", label="closed form R(M), G = Gamma^-1")
    a.errorbar(lengths, mc, yerr=2 * np.array(mc_se), fmt="o", ms=3, label="Monte Carlo (+/- 2 SE)")
    a.plot(lengths, trained_risk, "s", ms=4, mfc="none", label="trained LSA (SGD, ZFB init)")
    a.axhline(zfb_risk(G, lam, float("inf")), color="k", ls=":", label="M -> inf floor")
    a.axvline(config.n, color="grey", lw=0.8)
    a.set(xscale="log", yscale="log", xlabel="test prompt length M", ylabel="risk E(y_hat - y)^2")
    a.legend(fontsize=7)
    return save(fig, out_dir, "gd_icl_risk_vs_length")


@figure("gd_icl/aky")
def aky_references_and_probes(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    runs = {"big, sigma=0": ("big", False), "big, sigma=0.5": ("big", True), "small, sigma=0": ("small", False)}
    names = ("ols", "ridge", "gd", "averaging", "zero")
    fig, ax = new_figure(2, width=4.5)
    width = 0.8 / len(runs)
    gates = {}
    for i, (label, (size, noisy)) in enumerate(tqdm(runs.items(), desc="gd_icl/aky", disable=None, leave=False)):
        config, model, _ = trained_run(gd_icl, f"aky_{size}" + ("_noisy" if noisy else ""), quick, recompute, device)
        compared = compare_references(model, config)
        spd = compared["spd"]
        gates[label] = aky_gate(compared["risk"], "gd" if size == "small" else ("ridge" if noisy else "ols"))
        if label == "big, sigma=0":
            probes = layer_probes(model, config, position="last_y")
        ax[0, 0].bar(np.arange(len(names)) + (i - 1) * width, [spd.get(k, np.nan) for k in names], width,
                     label=label)
    ax[0, 0].set(xticks=np.arange(len(names)), xticklabels=names, yscale="log",
                 ylabel="mean (y_hat_model - y_hat_ref)^2", title=f"prediction difference ({run_scale(quick)} scale)")
    ax[0, 0].legend(fontsize=7)
    for key, r2 in probes.items():
        ax[0, 1].plot(np.arange(r2.size), r2, "o-", ms=3, label={"xty": "X^T y / n", "w_ols": "w_OLS"}[key])
    ax[0, 1].axhline(0.9, color="k", ls=":", lw=0.8)
    ax[0, 1].set(xlabel="layer (0 = embedding)", ylabel="probe R^2 (held out)", ylim=(-0.1, 1.0),
                 xticks=np.arange(next(iter(probes.values())).size),
                 title="probes at the last label token y_n")
    ax[0, 1].legend(fontsize=7)
    mark_gates(fig, gates)
    return save(fig, out_dir, "gd_icl_aky")
