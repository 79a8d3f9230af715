"""Figures for the staged-Markov spec (Yüksel, Alvarez Lucendo, Flammarion 2026): analogues
at CPU scale (``--quick``: the reduced setting of docs/markov.md §6.2)."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from mechverify.paper_figures.common import mark_gates, new_figure, paper_runs, save, trained_run
from mechverify.paper_figures.registry import figure
from mechverify.training.gates import markov_gate
from mechverify.theory.dynamics.markov import fig10_target, simulate
from mechverify.theory.tasks.markov import log_softmax, sample_sequences, teacher_logits
from mechverify.training import markov
from mechverify.training.markov import (VAL_SEED, acquisition_steps, baseline_payloads, loss_stage_times, plateau_ce_levels)
from mechverify.training.runner import trained

COLORS = ("C0", "C1", "C2", "C3")          # colour = block
HEAD_LS = ("-", "--", ":")                 # line style = head


def _bayes_ce(config) -> float:
    """The teacher's CE on the run's validation set (exact entropies)."""
    seq = sample_sequences(config.task, config.n_val, VAL_SEED)
    logp = log_softmax(teacher_logits(config.task, seq))
    return float(-(np.exp(logp) * logp).sum(-1).mean())


def _shade(ax, stage_times, end):
    bounds = [0.0] + [t for t in stage_times if np.isfinite(t)] + [end]
    for i in range(len(bounds) - 1):
        ax.axvspan(bounds[i], bounds[i + 1], color=COLORS[i % 4], alpha=0.07, lw=0)


@figure("markov/ode")
def ode(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    G = fig10_target()
    fig, ax = new_figure(3, 2, width=3.8, height=2.8)
    for row, (flow, t_max) in enumerate((("replicator", 500.0), ("logit", 4000.0))):
        res = simulate(G, 3, flow, 1e-6, t_max, 0, n_eval=1500)
        for h in range(3):
            for k in range(3):
                ax[row, 0].plot(res.t, res.S[:, h, k], color=COLORS[k], ls=HEAD_LS[h], lw=1)
                ax[row, 1].plot(res.t, res.V[:, h, k], color=COLORS[k], ls=HEAD_LS[h], lw=1)
        ax[row, 0].set(xscale="log", xlabel="t", ylabel="s_h(position k)", title=f"{flow}: attention "
                       "(colour = block, line = head)")
        ax[row, 1].set(xscale="log", xlabel="t", ylabel="v_{h,k}", title=f"{flow}: values")
        ax[row, 2].plot(res.t, res.loss, "k", lw=1.2)
        for k, level in enumerate(res.levels):
            ax[row, 2].axhline(level, color=COLORS[k % 4], lw=0.8, ls="--")
        for t in res.stage_times:
            ax[row, 2].axvline(t, color="0.5", lw=0.6)
        ax[row, 2].set(xscale="log", yscale="symlog", xlabel="t", ylabel="loss",
                       title=f"{flow}: stages at " + ", ".join(f"{t:.3g}" for t in res.stage_times))
    return save(fig, out_dir, "markov_ode")


@figure("markov/minimal")
def minimal(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, _, payload = trained_run(markov, "main", quick, recompute, device)
    levels = plateau_ce_levels(config, baseline_payloads(config, recompute=recompute, device=device))
    steps = payload["log_steps"].numpy()
    t = loss_stage_times(steps, payload["val"].numpy(), levels)
    fig, ax = new_figure(4, width=3.6)
    for k in range(config.task.h):
        ax[0, 0].plot(steps, payload["kl_teacher"][:, k], color=COLORS[k], label=f"KL(A*_1:{k + 1} || q)")
        ax[0, 0].plot(steps, payload["kl_base"][:, k], color=COLORS[k], ls="--", label=f"KL(q || {k + 1}-block)")
    ax[0, 0].set(yscale="log", xlabel="step", title="KL to truncated teachers / baselines")
    ax[0, 0].legend(fontsize=6)
    ax[0, 1].plot(steps, payload["val"], "k")
    for level in levels:
        ax[0, 1].axhline(level, color="0.6", lw=0.6, ls="--")
    ax[0, 1].set(xlabel="step", ylabel="validation CE", title="loss and stages")
    mass, align = payload["mass"].numpy(), payload["align"].numpy()
    for h in range(config.n_heads):
        for k in range(config.task.h):
            ax[0, 2].plot(steps, mass[:, h, k], color=COLORS[k], ls=HEAD_LS[h % 3], lw=1)
            ax[0, 3].plot(steps, align[:, h, k], color=COLORS[k], ls=HEAD_LS[h % 3], lw=1)
    ax[0, 2].set(xlabel="step", ylabel="mass on I(k)", title="block mass (colour = block, line = head)")
    ax[0, 3].set(xlabel="step", ylabel="<W_V^h, A*_k>/|A*_k|", title="value alignment")
    for a in ax[0]:
        _shade(a, t, steps[-1])
    mark_gates(fig, {"main": markov_gate(payload, levels, config.task.h)})
    return save(fig, out_dir, "markov_minimal")


def _sweep_configs(quick: bool):
    """Init-scale and m sweeps (legend label -> config): the claims' timing runs plus a Xavier-init
    run and m = 1.0."""
    runs = paper_runs(markov, quick)
    inits = {"xavier": runs["figure_xavier"],
             **{f"σ_Q={runs[n].sigma_q:g}": runs[n] for n in sorted(
                 (n for n in runs if n.startswith("sigma_")), key=lambda n: -runs[n].sigma_q)}}
    ms = {1.0: runs["figure_ratio_1"],
          **{runs[n].task.m: runs[n] for n in sorted((n for n in runs if n.startswith("m_")),
                                                     key=lambda n: runs[n].task.m)}}
    return inits, {f"m = {m:g}": c for m, c in ms.items()}


@figure("markov/ablations")
def ablations(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    inits, ms = _sweep_configs(quick)
    fig, ax = new_figure(2, width=4.2)
    for a, (title, sweep) in zip(ax[0], (("init scale", inits), ("importance ratio", ms))):
        for i, (label, c) in enumerate(tqdm(list(sweep.items()), desc=f"markov/ablations: {title}", disable=None,
                                            leave=False)):
            _, p = trained(c, recompute=recompute, device=device)
            a.plot(p["log_steps"], p["val"].numpy() - _bayes_ce(c), color=COLORS[i % 4], label=label)
        a.set(yscale="log", xlabel="step", ylabel="excess CE", title=title)
        a.legend(fontsize=7)
    return save(fig, out_dir, "markov_ablations")


@figure("markov/data-size")
def data_size(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    runs = paper_runs(markov, quick)
    names = sorted((n for n in runs if n.startswith("data_")), key=lambda n: int(n.split("_")[1])) + ["online"]
    best, cls = [], []
    for name in names:
        c = runs[name]
        _, p = trained(c, recompute=recompute, device=device)
        i = int(np.nonzero(p["log_steps"].numpy() == p["best_step"])[0][0])
        best.append(float(p["val"][i]) - _bayes_ce(c))
        cls.append(int(np.argmin(p["kl_base"][i].numpy())) + 1)
    labels = [n.split("_")[1] if n != "online" else "online" for n in names]
    fig, ax = new_figure(2, width=3.8)
    ax[0, 0].plot(labels, best, "o-")
    ax[0, 0].set(yscale="log", xlabel="training sequences", ylabel="best excess CE", title="early-stopped loss")
    ax[0, 1].bar(labels, cls)
    ax[0, 1].set(xlabel="training sequences", ylabel="closest k-block baseline", yticks=[1, 2, 3],
                 title="class at the best-validation step")
    return save(fig, out_dir, "markov_data_size")


@figure("markov/stage-times")
def stage_times(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    G = fig10_target()
    ode_times = {flow: np.median([simulate(G, 3, flow, 1e-6, t_max, s, n_eval=50).stage_times for s in range(5)],
                                 axis=0)
                 for flow, t_max in (("replicator", 500.0), ("logit", 4000.0))}
    runs = paper_runs(markov, quick)
    acquired = {}
    for name in ("main", "data_2000"):
        _, p = trained(runs[name], recompute=recompute, device=device)
        acquired[name] = acquisition_steps(p["log_steps"].numpy(), p["mass"].numpy())
    fig, ax = new_figure(2, width=4.0)
    x = np.arange(3)
    for i, (flow, t) in enumerate(ode_times.items()):
        ax[0, 0].bar(x + 0.4 * i, t, 0.4, label=flow)
    ax[0, 0].set(yscale="log", xticks=x + 0.2, xticklabels=["t1", "t2", "t3"], ylabel="ODE time", title="reduced ODE")
    ax[0, 0].legend(fontsize=7)
    for i, (name, t) in enumerate(acquired.items()):
        ax[0, 1].bar(x + 0.4 * i, t, 0.4, label=name)
    ax[0, 1].set(xticks=x + 0.2, xticklabels=["block 1", "block 2", "block 3"], ylabel="Adam step",
                 title="trained minimal model")
    ax[0, 1].legend(fontsize=7)
    return save(fig, out_dir, "markov_stage_times")


@figure("markov/full")
def full(out_dir, quick: bool = True, recompute: bool = False, device: str = "cpu"):
    config, _, payload = trained_run(markov, "figure_full", quick, recompute, device)
    steps = payload["log_steps"].numpy()
    fig, ax = new_figure(2, width=4.0)
    for k in range(config.task.h):
        ax[0, 0].plot(steps, payload["kl_teacher"][:, k], color=COLORS[k], label=f"KL(A*_1:{k + 1} || q)")
        ax[0, 1].plot(steps, payload["mass"][:, :, k].sum(1), color=COLORS[k], label=f"block {k + 1}")
    ax[0, 0].set(yscale="log", xlabel="step", title="KL to truncated teachers")
    ax[0, 1].set(xlabel="step", ylabel="mass on I(k), summed over heads", title="attention per block")
    for a in ax[0]:
        a.legend(fontsize=7)
    return save(fig, out_dir, "markov_full")
