"""Figures for the meta-learning / token-norm spec (Wu & Varshney 2024).

The paper's figures (pre-trained LLMs, real-world data) are open items (docs/meta_learning.md §9); these are
CPU-scale analogues of our **reconstruction** (residual stream as inner GD on the logit-lens
loss), on small pre-LN GPTs trained on a Zipf-Markov corpus and on ``pydoc_data`` text.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from tqdm.auto import tqdm

from mechverify.paper_figures.common import mark_gates, new_figure, paper_runs, save
from mechverify.paper_figures.registry import figure
from mechverify.training.gates import metanorm_gate
from mechverify.training import meta_learning
from mechverify.training.meta_learning import (frequency_stats, heldout_tokens, inner_analysis, inner_gd_reference, norm_growth_stats, per_layer_ci, position_stats, random_init_model, token_frequency)
from mechverify.training.runner import trained

N_HELDOUT = 64
COLORS = {"trained": "C0", "random init": "C3", "shuffled targets": "C2", "inner-GD unroll": "C1"}


@cache
def _measured(quick: bool, recompute: bool, device: str) -> dict:
    """run name -> (config, trained, control, analysis trained, analysis control, analysis shuffled)."""
    out = {}
    for config in tqdm(paper_runs(meta_learning, quick).values(),
                       desc="meta_learning runs", disable=None, leave=False):
        model, _ = trained(config, recompute=recompute, device=device)
        control = random_init_model(config)
        tokens = heldout_tokens(config, N_HELDOUT)
        shuffled = np.random.default_rng(0).permutation(tokens[:, 1:])
        out[f"{config.corpus}/{config.final_norm}"] = (config, model, control, inner_analysis(model, tokens, config.vocab),
                                   inner_analysis(control, tokens, config.vocab),
                                   inner_analysis(model, tokens, config.vocab, targets=shuffled))
    return out


@figure("meta_learning/alignment")
def alignment(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    runs = _measured(quick, recompute, device)
    fig, ax = new_figure(len(runs), nrows=2, width=3.3, height=2.8)
    for j, (name, (config, _, _, trained, control, shuffled)) in enumerate(runs.items()):
        for k, (label, a) in enumerate((("trained", trained), ("random init", control),
                                        ("shuffled targets", shuffled))):
            m, h = per_layer_ci(a["cos"])
            layers = np.arange(m.size) + 0.1 * (k - 1)
            ax[0, j].errorbar(layers, m, yerr=h, fmt="o", ms=4, capsize=3, color=COLORS[label], label=label)
            if label == "shuffled targets":
                continue
            seq = a["loss"].mean(axis=2)
            se = seq.std(axis=1, ddof=1) / np.sqrt(seq.shape[1])
            ax[1, j].errorbar(np.arange(seq.shape[0]), seq.mean(axis=1), yerr=2 * se, fmt="o-", ms=4, capsize=3,
                              color=COLORS[label], label=label)
        ax[0, j].axhline(0, color="k", lw=0.7)
        ax[0, j].set(xlabel="layer l (update Delta^(l))", ylabel="cos(Delta, -grad l)", title=name,
                     xticks=range(config.n_layers))
        ax[1, j].set(xlabel="layer l (0 = embedding)", ylabel="logit-lens loss (nats)",
                     xticks=range(config.n_layers + 1))
        ax[0, j].legend(fontsize=6)
        ax[1, j].legend(fontsize=6)
    mark_gates(fig, {name: metanorm_gate(config, trained["model_loss"], heldout_tokens(config, N_HELDOUT))
                     for name, (config, _, _, trained, _, _) in runs.items()})
    return save(fig, out_dir, "meta_learning_alignment")


@figure("meta_learning/norms")
def norms(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    runs = _measured(quick, recompute, device)
    fig, ax = new_figure(len(runs), nrows=3, width=3.3, height=2.7)
    for j, (name, (config, model, control, trained, ctrl, _)) in enumerate(runs.items()):
        layers = np.arange(config.n_layers + 1)
        stats = norm_growth_stats(trained)
        lrs = np.clip(trained["eta"].mean(axis=(1, 2)), 0, None)
        unroll = inner_gd_reference(model, heldout_tokens(config, N_HELDOUT), config.vocab, lrs)
        a = ax[0, j]
        a.plot(layers, stats["mean_norm"], "o-", color=COLORS["trained"], label="trained")
        a.plot(layers, stats["bound_norm"], "s--", color=COLORS["trained"], alpha=0.6, label="§5 bound (fitted eta)")
        a.plot(layers, unroll["norm"].mean(axis=(1, 2)), "^:", color=COLORS["inner-GD unroll"], label="inner-GD unroll")
        a.plot(layers, norm_growth_stats(ctrl)["mean_norm"], "o-", color=COLORS["random init"], label="random init")
        a.set(xlabel="layer l", ylabel="mean |h^(l)|", title=name, xticks=layers, yscale="log")
        a.legend(fontsize=6)
        a = ax[1, j]
        for label, an in (("trained", trained), ("random init", ctrl)):
            ps = position_stats(an)
            a.plot(np.arange(len(ps["per_position"])), ps["per_position"], ".-", ms=3, color=COLORS[label],
                   label=f"{label} (rho = {ps['rho']:.2f})")
        a.set(xlabel="position t", ylabel="mean |h_t^(L)|")
        a.legend(fontsize=6)
        a = ax[2, j]
        freq = token_frequency(config)
        for label, m in (("trained", model), ("random init", control)):
            fs = frequency_stats(m, freq)
            ok = np.isfinite(freq) & (freq > 0)
            a.scatter(freq[ok], np.asarray(fs["unembed_norm"])[ok], s=8, color=COLORS[label],
                      label=f"{label} (rho = {fs['rho_unembed']:.2f})")
        a.set(xscale="log", xlabel="token frequency", ylabel="|u_v|")
        a.legend(fontsize=6)
    return save(fig, out_dir, "meta_learning_norms")
