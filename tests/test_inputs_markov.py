"""Bad input to the staged-Markov modules gets a ValueError/TypeError naming the parameter;
plus small unit checks of the minimal model and the ODE."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mechverify.constructions.markov import MinimalMarkovModel, exact_minimal_model, full_markov_model
from mechverify.theory.dynamics.markov import (block_target, euler, fig10_target, initial_state, jacobian, rhs, simulate,
                                        t1_formula)
from mechverify.theory.symbolic.markov import ladder_losses, single_head_optimum, symmetric_reduction_residual
from mechverify.theory.tasks.markov import MarkovTask, lag_matrices, sample_sequences, teacher_cross_entropy, teacher_logits
from mechverify.training.markov import MarkovTrainConfig, model_logits, runs


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(d=1), "d", ValueError),
    (dict(d=5.0), "d", TypeError),
    (dict(sizes=[2, 2]), "sizes", TypeError),
    (dict(sizes=()), "sizes", TypeError),
    (dict(sizes=(2, 0)), "sizes", ValueError),
    (dict(m=0.0), "m", ValueError),
    (dict(m=float("nan")), "m", ValueError),
    (dict(tau=-1.0), "tau", ValueError),
    (dict(L=0), "L", ValueError),
    (dict(teacher_seed=-1), "teacher_seed", ValueError),
    (dict(alpha=(0.7,)), "alpha", ValueError),
    (dict(alpha=[0.7, 0.3]), "alpha", TypeError),
    (dict(alpha=(0.7, -0.3)), "alpha", ValueError),
    (dict(stride=0), "stride", ValueError),
    (dict(reverse=1), "reverse", TypeError),
])
def test_task_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        MarkovTask(**kwargs)


def test_task_functions_reject():
    task = MarkovTask(d=5, L=4)
    with pytest.raises(ValueError, match="k"):
        lag_matrices(task, 4)
    with pytest.raises(ValueError, match="n"):
        sample_sequences(task, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        sample_sequences(task, 2, -1)
    with pytest.raises(ValueError, match="tokens"):
        teacher_logits(task, np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="tokens"):
        teacher_logits(task, np.full((2, 9), 7))
    with pytest.raises(ValueError, match="tokens"):
        teacher_logits(task, np.zeros((2, 9)))
    with pytest.raises(ValueError, match="k"):
        task.block_lags(0)


def test_task_layout():
    """Block lags in importance order: nearest first; reversed; overlapping (stride 1)."""
    t = MarkovTask(d=4, sizes=(2, 2, 2))
    assert [t.block_lags(k).tolist() for k in (1, 2, 3)] == [[1, 2], [3, 4], [5, 6]] and t.w == 6
    r = MarkovTask(d=4, sizes=(2, 2, 2), reverse=True)
    assert [r.block_lags(k).tolist() for k in (1, 2, 3)] == [[5, 6], [3, 4], [1, 2]]
    o = MarkovTask(d=4, sizes=(2, 2, 2), stride=1)
    assert [o.block_lags(k).tolist() for k in (1, 2, 3)] == [[1, 2], [2, 3], [3, 4]] and o.w == 4
    seq = sample_sequences(o, 50, 0)
    assert seq.shape == (50, o.w + o.L) and np.array_equal(seq, sample_sequences(o, 50, 0))
    ce, se = teacher_cross_entropy(o, 200, 0)
    assert 0 < ce < math.log(4) and se > 0


@pytest.mark.parametrize("call, param, exc", [
    (lambda: block_target([1.0, 2.0], [1], 5), "sizes", ValueError),
    (lambda: block_target([1.0], [6], 5), "T", ValueError),
    (lambda: fig10_target(m=-1.0), "m", ValueError),
    (lambda: simulate(np.ones(3), 3), "G", ValueError),
    (lambda: simulate(fig10_target(), 0), "n_heads", ValueError),
    (lambda: simulate(fig10_target(), 3, flow="adam"), "flow", ValueError),
    (lambda: simulate(fig10_target(), 3, eps=-1.0), "eps", ValueError),
    (lambda: simulate(fig10_target(), 3, t_max=0.0), "t_max", ValueError),
    (lambda: simulate(fig10_target(), 3, seed=-2), "seed", ValueError),
    (lambda: simulate(fig10_target(), 3, y0=np.zeros(5)), "y0", ValueError),
    (lambda: euler(fig10_target(), 3, dt=0.0), "dt", ValueError),
    (lambda: t1_formula(1.0, 2, 4), "T", ValueError),
    (lambda: t1_formula(1.0, 1, 10, flow="x"), "flow", ValueError),
    (lambda: ladder_losses(np.array([[1.0, 1.0], [0.0, 1.0]])), "G", ValueError),
    (lambda: ladder_losses(np.ones(3)), "G", ValueError),
    (lambda: single_head_optimum(np.array([[1.0, 1.0], [1.0, 0.0]])), "G", ValueError),
    (lambda: symmetric_reduction_residual(1, 2, 2, flow="x"), "flow", ValueError),
])
def test_dynamics_reject(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


def test_euler_matches_lsoda_stage_times():
    """Fixed-step Euler and LSODA agree on the fig10 stage times to 1% (dt = 0.005)."""
    G = fig10_target()
    a, b = simulate(G, 3, t_max=120.0), euler(G, 3, t_max=120.0)
    assert np.allclose(a.stage_times[:2], b.stage_times[:2], rtol=1e-2)


def test_rhs_keeps_simplex():
    G = fig10_target()
    y = initial_state(G, 3, 1e-3, 0)
    for flow in ("replicator", "logit"):
        d = rhs(y, G, 3, flow)[9:].reshape(3, -1)
        assert np.allclose(d.sum(1), 0.0, atol=1e-15)
        assert jacobian(y, G, 3, flow).shape == (y.size, y.size)


@pytest.mark.parametrize("call, param, exc", [
    (lambda: MinimalMarkovModel(0, 5), "d", ValueError),
    (lambda: MinimalMarkovModel(3, 5, init="normal"), "init", ValueError),
    (lambda: MinimalMarkovModel(3, 5, sigma_q=-1.0), "sigma_q", ValueError),
    (lambda: MinimalMarkovModel(3, 5, max_lag=0), "max_lag", ValueError),
    (lambda: MinimalMarkovModel(3, 5)(torch.zeros(2, 6, dtype=torch.long)), "tokens", ValueError),
    (lambda: MinimalMarkovModel(3, 5)(torch.full((2, 4), 3)), "tokens", ValueError),
    (lambda: MinimalMarkovModel(3, 5)(torch.zeros(2, 4)), "tokens", TypeError),
    (lambda: MinimalMarkovModel(3, 5)(torch.zeros(2, 4, dtype=torch.long), query_from=4), "query_from", ValueError),
    (lambda: exact_minimal_model("task", 1.0), "task", TypeError),
    (lambda: exact_minimal_model(MarkovTask(d=3, L=2), -1.0), "beta", ValueError),
    (lambda: exact_minimal_model(MarkovTask(d=3, L=2), 1.0, n_heads=2), "n_heads", ValueError),
    (lambda: full_markov_model(3, 5, width=0), "width", ValueError),
])
def test_models_reject(call, param, exc):
    with pytest.raises(exc, match=param):
        call()


def test_minimal_model_matches_dense_formula():
    """The gather implementation equals the one-hot formula of the spec, with a lag window."""
    m = MinimalMarkovModel(5, 8, 2, max_lag=3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tok = torch.randint(0, 5, (3, 8), generator=torch.Generator().manual_seed(1))
    out, pattern = m(tok, query_from=2, return_pattern=True)
    z = m.embed(tok)
    scores = torch.einsum("bte,hfe,bjf->bhtj", z[:, 2:], m.W_Q, z) / math.sqrt(m.D)
    t, j = torch.arange(2, 8)[:, None], torch.arange(8)[None, :]
    allowed = (j <= t) & (j > t - 3)
    ref_p = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    ref = torch.einsum("bhtj,hde,bje->btd", ref_p, m.W_V, z)
    assert torch.allclose(out, ref, atol=1e-12) and torch.allclose(pattern, ref_p, atol=1e-12)


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(task="t"), "task", TypeError),
    (dict(arch="rnn"), "arch", ValueError),
    (dict(n_heads=0), "n_heads", ValueError),
    (dict(n_train=0), "n_train", ValueError),
    (dict(context_blocks=4), "context_blocks", ValueError),
    (dict(lr=0.0), "lr", ValueError),
    (dict(weight_decay=-1.0), "weight_decay", ValueError),
    (dict(init="zeros"), "init", ValueError),
    (dict(factor=1.5), "factor", ValueError),
    (dict(dtype="float16"), "dtype", ValueError),
    (dict(baselines=(0,)), "baselines", ValueError),
    (dict(baselines=(1,), context_blocks=1), "baselines", ValueError),
    (dict(baseline_n_train=0), "baseline_n_train", ValueError),
    (dict(seed=-1), "seed", ValueError),
    (dict(arch="full", width=64), "width", ValueError),
])
def test_config_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        MarkovTrainConfig(**kwargs)


def test_runs_and_logits():
    with pytest.raises(ValueError, match="scale"):
        runs("huge")
    c = MarkovTrainConfig(task=MarkovTask(d=4, L=3), arch="full", width=12)
    from mechverify.training.markov import build_model
    tok = torch.from_numpy(sample_sequences(c.task, 2, 0))
    assert model_logits(build_model(c), tok, c.task.w).shape == (2, 3, 4)


@pytest.mark.parametrize("arch", ["minimal", "full"])
def test_training_smoke(tmp_path, monkeypatch, arch):
    """A few steps of each architecture (with a learned baseline for the minimal model) run,
    log every metric, and are served from the cache the second time, bit for bit."""
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path))
    from mechverify.training.markov import trained_markov
    c = MarkovTrainConfig(task=MarkovTask(d=4, L=3), arch=arch, width=12, n_train=16, n_val=8, steps=4,
                          log_every=2, baselines=(1,) if arch == "minimal" else (), baseline_steps=3)
    _, p1 = trained_markov(c, progress=False)
    _, p2 = trained_markov(c, progress=False)
    assert p1["log_steps"].tolist() == [0, 2, 4]
    assert p1["kl_teacher"].shape == (3, 3) and p1["mass"].shape == (3, 3, 3)
    assert p1["kl_base"].shape == (3, len(c.baselines))
    assert torch.equal(p1["val"], p2["val"])


def test_stage_time_rules():
    """Midpoint crossings, KL crossings and block acquisition on hand-made curves."""
    from mechverify.training.markov import acquisition_steps, kl_crossings, loss_stage_times
    steps = np.array([0, 10, 20, 30, 40])
    loss = np.array([3.0, 2.0, 1.0, 0.9, 0.1])
    assert loss_stage_times(steps, loss, [3.0, 1.0, 0.0]).tolist() == [20.0, 40.0]
    kl = np.array([[1.0, 1.1], [0.5, 0.9], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2]])
    assert kl_crossings(steps, kl).tolist() == [20.0]
    mass = np.zeros((5, 2, 2))
    mass[1:, 0, 0] = 0.9
    mass[3:, 1, 1] = 0.6
    assert acquisition_steps(steps, mass).tolist() == [10.0, 30.0]
    assert np.isnan(acquisition_steps(steps, mass * 0.1)).all()


def test_exact_model_leak_formula():
    """Hand-built model at finite β: the mass off I(k) is n_out / (n_out + |I(k)| e^β)."""
    task = MarkovTask(d=5, L=4)
    beta = 3.0
    model = exact_minimal_model(task, beta)
    tok = torch.from_numpy(sample_sequences(task, 2, 0))[:, :-1]
    _, pattern = model(tok, query_from=tok.shape[1] - 1, return_pattern=True)
    n = tok.shape[1]
    for k in range(1, task.h + 1):
        lags = task.block_lags(k)
        off = 1.0 - pattern[:, k - 1, -1, n - lags].sum(-1)
        n_out = n - lags.size
        assert torch.allclose(off, torch.full_like(off, n_out / (n_out + lags.size * math.exp(beta))), atol=1e-12)
