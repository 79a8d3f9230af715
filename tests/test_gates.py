"""Convergence gates (mechverify.training.gates) and the regression recipes' schedule and
curriculum (mechverify.training.sparse_regression)."""

import dataclasses
import math

import numpy as np
import pytest

from mechverify.theory.tasks.regression import sample_regression
from mechverify.training.gates import Gate, at_most, closed_gap, combine, early_stopping_gate, fit_gate, plateau_gate
from mechverify.training.schedules import learning_rate
from mechverify.training.sparse_regression import SparseTrainConfig, active_dimension, curriculum_batch


def test_closed_gap():
    g = closed_gap(1.0, 9.0, 0.0, names=("zero", "ols"))
    assert g.passed is False and g.numbers["closed_fraction"] == pytest.approx(8 / 9)
    assert closed_gap(0.8, 9.0, 0.0).passed                       # 0.911 >= 0.9
    assert closed_gap(-1.0, 9.0, 0.0).passed                      # better than the target passes
    with pytest.raises(ValueError, match="trivial"):
        closed_gap(1.0, 0.0, 1.0)


def test_at_most_paired_and_unpaired():
    rng = np.random.default_rng(0)
    ref = rng.exponential(size=4000)
    assert at_most(ref * 1.001, ref, paired=True).passed is False   # paired: a 0.1 % excess is resolved
    assert at_most(ref * 1.001, ref).passed                        # unpaired: within 2 SE
    assert at_most(ref * 0.9, ref, paired=True).passed
    with pytest.raises(ValueError, match="equal sizes"):
        at_most(ref[:10], ref, paired=True)


def test_combine_and_flat_numbers():
    g = combine({"a": closed_gap(0.0, 1.0, 0.0), "b": closed_gap(0.9, 1.0, 0.0)})
    assert not g.passed and g.numbers["failed_runs"] == ["b"]
    flat = g.as_kwargs()
    assert flat["runs.b.passed"] is False and flat["failed_runs"] == "b" and isinstance(flat["rule"], str)
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    with pytest.raises(ValueError):
        combine({})


def test_fit_plateau_and_early_stopping_gates():
    assert fit_gate([3.0, 2.0, 2.0]).passed and not fit_gate([3.0, 2.5, 2.0]).passed
    assert plateau_gate([5, 4, 3, 2, 2, 2, 2, 2, 2, 2]).passed
    assert not plateau_gate(np.linspace(5, 1, 20)).passed
    torch = pytest.importorskip("torch")
    steps = torch.tensor([0, 10, 20, 30])
    assert early_stopping_gate({"log_steps": steps, "best_step": 20}).passed
    assert not early_stopping_gate({"log_steps": steps, "best_step": 30}).passed
    assert isinstance(fit_gate([1.0, 1.0]), Gate)


def test_learning_rate_schedule():
    c = SparseTrainConfig(steps=100, lr=1e-3, warmup=10, decay="cosine")
    assert learning_rate(c, 5) == pytest.approx(5e-4)
    assert learning_rate(c, 10) == pytest.approx(1e-3)
    assert learning_rate(c, 55) == pytest.approx(0.5e-3)
    assert learning_rate(c, 100) == pytest.approx(0.0, abs=1e-15)
    constant = SparseTrainConfig(steps=100, lr=1e-3)
    assert all(learning_rate(constant, s) == 1e-3 for s in (1, 50, 100))
    with pytest.raises(ValueError, match="warmup"):
        SparseTrainConfig(steps=10, warmup=10)
    with pytest.raises(ValueError, match="decay"):
        SparseTrainConfig(decay="linear")
    with pytest.raises(ValueError, match="curriculum"):
        SparseTrainConfig(steps=10, curriculum=11)


def test_curriculum_dimension_and_batch():
    c = SparseTrainConfig(d=8, s=8, steps=100, curriculum=50)
    dims = [active_dimension(c, s) for s in range(1, 101)]
    assert dims[0] == 2 and dims[-1] == 8 and all(a <= b for a, b in zip(dims, dims[1:]))
    assert active_dimension(dataclasses.replace(c, curriculum=0), 1) == 8
    b = sample_regression(16, 12, 8, noise=0.5, seed=3)
    cb = curriculum_batch(b, 3)
    assert np.all(cb.X[:, :, 3:] == 0) and np.all(cb.x_query[:, 3:] == 0)
    # labels are the same task on the first 3 coordinates, with the same noise
    noise = b.y - np.einsum("bnd,bd->bn", b.X, b.w)
    assert np.allclose(cb.y, np.einsum("bnd,bd->bn", cb.X, cb.w) + noise, atol=1e-12)
    assert curriculum_batch(b, 8) is b
    assert math.isfinite(float(cb.y_query.sum()))
