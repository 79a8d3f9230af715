"""Figures for the sparse-regression spec (Chen, Zhao, Zou 2024): analogues at CPU scale."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np
from tqdm.auto import tqdm

from mechverify.paper_figures.common import mark_gates, new_figure, paper_runs, save
from mechverify.paper_figures.registry import figure
from mechverify.training.gates import sparse_gate
from mechverify.theory.algorithms.tuning import SparseComparison
from mechverify.theory.tasks.regression import sample_regression
from mechverify.training import sparse_regression
from mechverify.training.sparse_regression import (comparison, eval_prompts, excess_risks, head_importance, probe_risks, pruned)
from mechverify.training.runner import trained


@figure("sparse_regression/algorithms")
def algorithms(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    d, lengths = 16, (8, 16, 32, 64, 128)
    tasks = 300 if quick else 2000
    means, ses = {}, {}
    for n in tqdm(lengths, desc="sparse_regression/algorithms", disable=None, leave=False):
        risks = comparison(SparseComparison(d, 2, n, 0.5, n_tasks=tasks), recompute)["risks"]
        for m, v in risks.items():
            means.setdefault(m, []).append(np.mean(v))
            ses.setdefault(m, []).append(np.std(v, ddof=1) / np.sqrt(len(v)))
    fig, ax = new_figure(1, width=4.5)
    a = ax[0, 0]
    for m in means:
        a.errorbar(lengths, means[m], yerr=2 * np.array(ses[m]), fmt="o-", ms=3, capsize=2, label=m)
    a.set(xscale="log", yscale="log", xlabel="in-context examples n", ylabel="excess risk",
          title=f"d = {d}, s = 2, sigma = 0.5")
    a.set_xticks(lengths, [str(n) for n in lengths])
    a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    a.legend(fontsize=7)
    return save(fig, out_dir, "sparse_regression_algorithms")


@figure("sparse_regression/heads")
def heads(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    configs = {c.n_heads: c for c in paper_runs(sparse_regression, quick).values()}
    runs = {h: trained(c, recompute=recompute, device=device)[0] for h, c in configs.items()}
    config = configs[4]
    lengths = (4, 8, 16) if config.arch == "softmax" else (4, 8, 16, 32, 64)
    fig, ax = new_figure(4, width=3.6)
    for h, model in tqdm(runs.items(), desc="sparse_regression/heads", disable=None, leave=False):
        risks = [excess_risks(model, sample_regression(2048, n, config.d, sparsity=config.s, noise=config.noise,
                                                       seed=10**6 + n), config.noise).mean() for n in lengths]
        ax[0, 0].plot(lengths, risks, "o-", ms=3, label=f"h = {h}")
    ax[0, 0].set(xscale="log", yscale="log", xlabel="n", ylabel="excess risk", title="(b) heads vs n")
    ax[0, 0].set_xticks(lengths, [str(n) for n in lengths])
    ax[0, 0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax[0, 0].legend(fontsize=7)
    model, batch = runs[4], eval_prompts(config)
    importance = head_importance(model, batch, config.noise)
    im = ax[0, 1].imshow(importance, cmap="viridis", aspect="auto")
    ax[0, 1].set(xlabel="head", ylabel="layer", title="(c) masking importance",
                 xticks=range(importance.shape[1]), yticks=range(importance.shape[0]),
                 yticklabels=[str(l + 1) for l in range(importance.shape[0])])
    fig.colorbar(im, ax=ax[0, 1])
    bars = [excess_risks(m, batch, config.noise).mean() for m in
            (model, pruned(model, importance, True), pruned(model, importance, False))]
    ax[0, 2].bar(["full", "all L1 +\ntop-1", "top-1\neverywhere"], bars)
    ax[0, 2].set(ylabel="excess risk", title="(d) pruning")
    test = eval_prompts(config, part=1)
    for h, m in runs.items():
        ax[0, 3].plot(range(config.n_layers + 1), probe_risks(m, batch, test, config.noise), "o-", ms=3, label=f"h = {h}")
    ax[0, 3].set(xlabel="layer (0 = embedding)", ylabel="probe excess risk", title="layer-wise probes")
    ax[0, 3].legend(fontsize=7)
    mark_gates(fig, {f"h = {h}": sparse_gate(m, configs[h]) for h, m in runs.items()})
    return save(fig, out_dir, "sparse_regression_heads")
