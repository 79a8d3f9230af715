"""Figures for the HMM spec (Hao, Ye, Han, Zhang 2025): analogues at CPU scale."""

from __future__ import annotations

import numpy as np
import torch

from mechverify.constructions.hmm import error_terms, hmm_construction
from mechverify.paper_figures.common import mark_gates, new_figure, save, trained_run
from mechverify.paper_figures.registry import figure
from mechverify.theory.algorithms.hmm import (covariance_spectrum, demo_regression, gd_matrix_iterates, least_squares_matrix,
                                   window_features)
from mechverify.theory.tasks.hmm import random_hmms, sample_prompts
from mechverify.training import hmm
from mechverify.training.gates import hmm_gate
from mechverify.training.hmm import icl_table, independence_scores, probe_table


@figure("hmm/icl")
def icl(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, model, _ = trained_run(hmm, "mixture", quick, recompute, device)
    tab = icl_table(model, config, 1000 if quick else 4000)
    ns = sorted(tab)
    fig, ax = new_figure(3, width=3.6)
    for name, style in (("model", "o-"), ("bayes", "s--"), ("oracle", "^:")):
        ax[0, 0].plot(ns, [tab[n][name]["acc"].mean() for n in ns], style, ms=4, label=name)
        ax[0, 2].plot(ns, [tab[n][name]["logloss"].mean() for n in ns], style, ms=4, label=name)
    ax[0, 0].set(xlabel="demonstrations n", ylabel="accuracy", title="accuracy vs n")
    ax[0, 2].set(xlabel="demonstrations n", ylabel="log-loss (nats)", title="log-loss vs n")
    t = np.arange(config.test_len)
    for n, c in ((ns[0], "C0"), (ns[-1], "C3")):
        ax[0, 1].plot(t, tab[n]["model"]["acc"], "o-", color=c, ms=3, label=f"model n={n}")
        ax[0, 1].plot(t, tab[n]["bayes"]["acc"], "--", color=c, label=f"Bayes n={n}")
    ax[0, 1].set(xlabel="test position t (predicting o_{t+1})", ylabel="accuracy", title="accuracy vs test length")
    for a in ax[0]:
        a.legend(fontsize=7)
    mark_gates(fig, {"mixture": hmm_gate(tab)})
    return save(fig, out_dir, "hmm_icl")


@figure("hmm/independence")
def independence(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, model, _ = trained_run(hmm, "mixture", quick, recompute, device)
    ind = independence_scores(model, config)
    fig, ax = new_figure(1, width=4.0)
    ax[0, 0].plot(np.arange(ind.size), ind, "o-")
    ax[0, 0].set(xlabel="layer (0 = embedding)", ylabel="Indep_l", title="independence of demo order")
    return save(fig, out_dir, "hmm_independence")


@figure("hmm/probes")
def probes(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, model, _ = trained_run(hmm, "mixture", quick, recompute, device)
    pt = probe_table(model, config)
    layers = np.arange(pt["task"].size)
    fig, ax = new_figure(2, width=4.0)
    for key, c in (("state", "C0"), ("true_state", "C1"), ("task", "C2")):
        ax[0, 0].plot(layers, pt[key], "o-", color=c, label=key)
    ax[0, 0].axhline(pt["state_chance"], color="C0", ls=":", lw=0.8)
    ax[0, 0].axhline(pt["task_chance"], color="C2", ls=":", lw=0.8)
    ax[0, 0].set(xlabel="layer", ylabel="probe accuracy", title="(3a) hidden state vs task")
    cmap = __import__("matplotlib").colormaps["viridis"]
    K = pt["back"].shape[0]
    for k in range(K):
        ax[0, 1].plot(layers, pt["back"][k], "o-", ms=3, color=cmap(k / max(K - 1, 1)), label=f"k={k + 1}")
    ax[0, 1].set(xlabel="layer", ylabel="probe accuracy", title="(3b) observation k back")
    for a in ax[0]:
        a.legend(fontsize=6)
    return save(fig, out_dir, "hmm_probes")


@figure("hmm/construction")
def construction(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    hmms = random_hmms(8, 6, 3, 2, seed=0)
    B = 64 if quick else 256
    fig, ax = new_figure(4, width=3.2)
    ns = (4, 16, 64, 256)
    terms = [error_terms(hmms, *_prompt(hmms, B, n), 2, 4, 1.0, 20.0) for n in ns]
    for key in ("total", "window", "statistical", "softmax"):
        ax[0, 0].plot(ns, [max(float(t[key].mean()), 1e-18) for t in terms], "o-", ms=3, label=key)
    ax[0, 0].set(xscale="log", yscale="log", xlabel="demonstrations n", ylabel="TV", title="r = 2, K = 4, beta = 20")
    rs = (1, 2, 3, 4)
    terms = [error_terms(hmms, *_prompt(hmms, B, 64), r, 4, 1.0, 20.0) for r in rs]
    for key in ("total", "window", "statistical"):
        ax[0, 1].plot(rs, [max(float(t[key].mean()), 1e-18) for t in terms], "o-", ms=3, label=key)
    ax[0, 1].set(yscale="log", xlabel="window r", ylabel="TV", title="n = 64")
    task, demos, test = _prompt(hmms, B, 16)
    X, Y = demo_regression(demos, 3, 2)
    lr = 1.0 / float(covariance_spectrum(X)[:, -1].max())
    Xq = window_features(test, 3, 2, lag=0)
    ls = np.einsum("bop,btp->bto", least_squares_matrix(X, Y), Xq)
    Ks = (1, 2, 4, 8, 16, 32)
    errK = []
    for K in Ks:
        with torch.no_grad():
            raw = hmm_construction(3, 2, K, lr, 40.0, 12)(torch.from_numpy(demos), torch.from_numpy(test)).numpy()
        errK.append(np.abs(raw - ls)[:, 1:].sum(-1).mean())
    ax[0, 2].plot(Ks, errK, "o-", ms=3)
    ax[0, 2].set(yscale="log", xlabel="GD layers K", ylabel="mean |W_K x - W_LS x|_1", title="optimisation (raw)")
    gd = np.einsum("bop,btp->bto", gd_matrix_iterates(X, Y, lr, 4)[-1], Xq)
    betas = (2.5, 5.0, 7.5, 10.0, 15.0, 20.0)
    errb = []
    for b in betas:
        with torch.no_grad():
            raw = hmm_construction(3, 2, 4, lr, b, 12)(torch.from_numpy(demos), torch.from_numpy(test)).numpy()
        errb.append(np.abs(raw - gd)[:, 1:].sum(-1).mean())
    ax[0, 3].plot(betas, errb, "o-", ms=3, label="measured")
    ax[0, 3].plot(betas, errb[0] * np.exp(-(np.array(betas) - betas[0])), ":", label="e^{-beta} slope")
    ax[0, 3].set(yscale="log", xlabel="beta", ylabel="mean |raw_beta - raw_exact|_1", title="softmax (raw)")
    for a in (ax[0, 0], ax[0, 1], ax[0, 3]):
        a.legend(fontsize=7)
    return save(fig, out_dir, "hmm_construction")


def _prompt(hmms, B: int, n: int):
    p = sample_prompts(hmms, B, n, 12, 12, seed=n)
    return p.task, p.demos, p.test
