"""Figures for the topic-structure spec (Li, Li, Risteski 2023): analogues at CPU scale.
The runs are those of the trained claims (``mechverify.training.topics.runs``), so a warm cache
serves both."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np

from mechverify.constructions.topics import value_construction
from mechverify.paper_figures.common import mark_gates, new_figure, paper_runs, save, trained_run
from mechverify.paper_figures.registry import figure
from mechverify.theory.dynamics.topics import stage_samples, two_stage_descent
from mechverify.theory.symbolic.topics import block_statistics, minimise_block_loss
from mechverify.theory.tasks.topics import N_SPECIAL, token_topic
from mechverify.training import topics
from mechverify.training.gates import closed_gap, fit_gate, plateau_gate
from mechverify.training.topics import (attention_by_category, column_contrasts, embedding_statistics, heldout_loss,
                                        real_text_statistics)
from mechverify.training.runner import trained


CATEGORIES = ("same_token", "same_topic", "cross_topic", "topicless")   # attention_by_category's keys
CATEGORY_TICKS = ["same\ntoken", "same\ntopic", "cross\ntopic", "topic-\nless"]


def _heatmap(fig, a, M, **labels):
    """``M`` on ``a`` with a colour scale symmetric about 0, a colour bar and no grid."""
    im = a.imshow(M, cmap="RdBu_r", vmin=-np.abs(M).max(), vmax=np.abs(M).max())
    a.set(**labels)
    a.grid(False)
    fig.colorbar(im, ax=a)


def _category_axis(a, title: str):
    """Ticks and labels of a bar chart of the attention :data:`CATEGORIES`."""
    a.set_xticks(np.arange(len(CATEGORIES)), CATEGORY_TICKS)
    a.set(ylabel="average attention per pair", title=title)


def _log_ticks(a, ticks):
    """Label the log x axis of ``a`` at ``ticks`` only (no minor ticks)."""
    a.set_xticks(ticks, [f"{t:g}" for t in ticks])
    a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


@figure("topics/value")
def value(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, _, payload = trained_run(topics, "value_T10_a0.1", quick, recompute, device)
    W = payload["W"].numpy()[:, N_SPECIAL:]
    W = W - W.mean(axis=0, keepdims=True) - W.mean(axis=1, keepdims=True) + W.mean()   # fix both gauges
    D = column_contrasts(payload["W"].numpy(), 10, 10)
    fig, ax = new_figure(2, width=4.2)
    _heatmap(fig, ax[0, 0], W, title="W^V word block, double-centred", xlabel="input word", ylabel="output word")
    ax[0, 1].bar(np.arange(D.size), D, width=1.0, color="tab:blue")
    ax[0, 1].axhline(config.setting.c_star(), color="k", ls="--", label=f"c* = {config.setting.c_star():.2f}")
    ax[0, 1].set(title="column contrast D_j", xlabel="word j", ylabel="D_j")
    ax[0, 1].legend(fontsize=7)
    mark_gates(fig, {"value_T10_a0.1": fit_gate(payload["train_loss"])})
    return save(fig, out_dir, "topics_value")


@figure("topics/embedding")
def embedding(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    configs = {c.d: c for name, c in paper_runs(topics, quick).items() if name.startswith("embedding_")}
    tt = token_topic(10, 10)[N_SPECIAL:]
    fig, ax = new_figure(3, width=4.0)
    rows, gates = {}, {}
    for d, config in configs.items():
        _, payload = trained(config, recompute=recompute, device=device)
        gates[f"embedding d={d}"] = fit_gate(payload["train_loss"])
        rows[d] = embedding_statistics(payload["E"].numpy()[N_SPECIAL:], tt)
        rows[d]["loss"] = float(payload["train_loss"][-1])
        if d == 16:
            E = payload["E"].numpy()[N_SPECIAL:]
            _heatmap(fig, ax[0, 0], E @ E.T, title="E E^T (d = 16)", xlabel="word", ylabel="word")
    ds = sorted(rows)
    ax[0, 1].plot(ds, [rows[d]["contrast"] for d in ds], "o-", label="same - cross inner product")
    ax[0, 1].plot(ds, [rows[d]["same_cos"] for d in ds], "s-", label="same-topic cosine")
    ax[0, 1].axhline(configs[16].setting.c_star(), color="k", ls="--", label="c*")
    ax[0, 2].plot(ds, [rows[d]["loss"] for d in ds], "o-", color="tab:red")
    ax[0, 2].set(ylabel="training loss (nats)", title="loss vs d (rank limit for d < T)")
    for a in (ax[0, 1], ax[0, 2]):
        a.set(xscale="log", xlabel="embedding width d")
        _log_ticks(a, ds)
    ax[0, 1].set(title="contrast vs d")
    ax[0, 1].legend(fontsize=7)
    mark_gates(fig, gates)
    return save(fig, out_dir, "topics_embedding")


@figure("topics/attention")
def attention(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    configs = paper_runs(topics, quick)
    tt = token_topic(10, 10)
    fig, ax = new_figure(2, width=4.4)
    model, payload = trained(configs["attention"], recompute=recompute, device=device)
    S = payload["S"].numpy()
    Sw = S[N_SPECIAL:, N_SPECIAL:] - S[N_SPECIAL:, N_SPECIAL:].mean(axis=1, keepdims=True)
    _heatmap(fig, ax[0, 0], Sw, title="row-centred S (word queries, word keys)", xlabel="key", ylabel="query")
    _, masked = configs["attention"].setting.data("test")
    ablation, payload_abl = trained(configs["ablation"], recompute=recompute, device=device)
    _, masked_abl = configs["ablation"].setting.data("test")
    cases = {"fitted": (model, masked), "ablation": (ablation, masked_abl),
             "uniform": (value_construction(10, 10, 5.0), masked)}
    width = 0.25
    for k, (label, (m, md)) in enumerate(cases.items()):
        # all non-PAD queries for the ablation (its queries are [MASK]), word queries otherwise
        cats = attention_by_category(m, md.inputs[:100], md.key_visible[:100], tt,
                                     word_queries_only=label != "ablation")
        ax[0, 1].bar(np.arange(len(CATEGORIES)) + (k - 1) * width, [cats[n] for n in CATEGORIES], width, label=label)
    _category_axis(ax[0, 1], "attention by category")
    ax[0, 1].legend(fontsize=7)
    mark_gates(fig, {"attention": fit_gate(payload["train_loss"]), "ablation": fit_gate(payload_abl["train_loss"])})
    return save(fig, out_dir, "topics_attention")


@figure("topics/two_stage")
def two_stage(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    configs = {c.sigma: c for name, c in paper_runs(topics, quick).items() if name.startswith("two_stage_")}
    fig, ax = new_figure(4, width=3.4)
    value_model, _ = trained(paper_runs(topics, quick)["value_T10_a0.1"], recompute=recompute, device=device)
    gates = {}
    for sigma, config in configs.items():
        model, p = trained(config, recompute=recompute, device=device)
        # the claim's gate (verify/test_topics_trained.py::test_two_stage): the run left stage 1
        gates[f"sigma={sigma:g}"] = closed_gap(heldout_loss(model, config.setting),
                                              heldout_loss(topics.build_two_stage(config), config.setting),
                                              heldout_loss(value_model, config.setting),
                                              names=("initial", "stage1_optimum"))
        steps = p["log_steps"].numpy()
        ax[0, 0].plot(steps, p["contrast"].numpy(), label=f"sigma = {sigma:g}")
        ax[0, 1].plot(steps, p["gap"].numpy(), label=f"sigma = {sigma:g}")
        ax[0, 2].plot(steps, p["entropy"].numpy(), label=f"sigma = {sigma:g}")
    ax[0, 0].set(xlabel="step", title="W^V contrast (trained)")
    ax[0, 1].set(xlabel="step", title="attention gap (trained)")
    ax[0, 2].set(xlabel="step", title="entropy / log(n_keys)")
    ax[0, 0].legend(fontsize=7)
    samples = stage_samples(n_samples=1000, seed=0)
    for sigma in configs:
        r = two_stage_descent(sigma, samples, steps=600)
        ax[0, 3].plot(r["c"] / r["c"][-1], color="tab:blue", alpha=0.4 + 2 * sigma)
        ax[0, 3].plot(r["beta"] / r["beta"][-1], color="tab:red", alpha=0.4 + 2 * sigma, ls="--")
    ax[0, 3].set(xlabel="step", title="model: c (solid), beta (dashed)", ylabel="fraction of final")
    mark_gates(fig, gates)
    return save(fig, out_dir, "topics_two_stage")


@figure("topics/cstar")
def cstar(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    n_docs = 5000 if quick else 20000
    alphas = (0.05, 0.1, 0.2, 0.5, 1.0)
    Ts = (5, 10, 20, 50)
    fig, ax = new_figure(2, width=4.0)
    theory_a = [minimise_block_loss(block_statistics(10, 10, a, (100, 150), n_docs, 0)) for a in alphas]
    theory_T = [minimise_block_loss(block_statistics(T, 10, 0.1, (100, 150), n_docs, 0)) for T in Ts]
    ax[0, 0].plot(alphas, theory_a, "o-", label="theory c*")
    ax[0, 1].plot(Ts, theory_T, "o-", label="theory c* (v = 10)")
    gates = {}
    for name, config in ((n, c) for n, c in paper_runs(topics, quick).items() if n.startswith("value_")):
        T, a = config.setting.n_topics, config.setting.alpha
        _, payload = trained(config, recompute=recompute, device=device)
        gates[name] = fit_gate(payload["train_loss"])
        D = column_contrasts(payload["W"].numpy(), T, config.setting.words_per_topic).mean()
        if T == 10:
            ax[0, 0].plot([a], [D], "k^", ms=7, label="fitted mean D_j" if a == 0.1 else None)
        if a == 0.1:
            ax[0, 1].plot([T], [D], "k^", ms=7, label="fitted mean D_j" if T == 10 else None)
    ax[0, 0].set(xscale="log", xlabel="alpha", ylabel="c*", title="T = 10")
    ax[0, 1].set(xscale="log", xlabel="T", ylabel="c*", title="alpha = 0.1")
    for a, ticks in ((ax[0, 0], alphas), (ax[0, 1], Ts)):
        _log_ticks(a, ticks)
        a.legend(fontsize=7)
    mark_gates(fig, gates)
    return save(fig, out_dir, "topics_cstar")


@figure("topics/real_text")
def real_text(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, model, payload = trained_run(topics, "real_text", quick, recompute, device)
    st = real_text_statistics(config, model, payload)
    wt = payload["word_topic"].numpy()
    E = model.embedding.detach().numpy()[N_SPECIAL:][wt >= 0]
    t = wt[wt >= 0]
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    C = En @ En.T
    same = (t[:, None] == t[None, :]) & ~np.eye(t.size, dtype=bool)
    cross = t[:, None] != t[None, :]
    fig, ax = new_figure(2, width=4.0)
    bins = np.linspace(-1, 1, 41)
    ax[0, 0].hist(C[cross], bins=bins, density=True, alpha=0.6, label="cross topic")
    ax[0, 0].hist(C[same], bins=bins, density=True, alpha=0.6, label="same topic")
    ax[0, 0].set(xlabel="embedding cosine", ylabel="density", title="pydoc_data: embeddings")
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].bar(np.arange(len(CATEGORIES)), [st["attention"][n] for n in CATEGORIES])
    _category_axis(ax[0, 1], "pydoc_data: attention")
    mark_gates(fig, {"real_text": plateau_gate(payload["loss"])})
    return save(fig, out_dir, "topics_real_text")
