"""LinearAttention and the construction stacks: shapes, layouts, both attention forms, dtypes."""

import multiprocessing

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mechverify.constructions import modules
from mechverify.constructions.gd_icl import gd_transformer, gdpp_transformer
from mechverify.constructions.modules import LinearAttention, regression_layout
from mechverify.theory.algorithms.regression import gd_predict, gdpp_predict
from mechverify.theory.tasks.regression import sample_regression


def _batch(n=7, d=3, B=4, seed=0):
    b = sample_regression(B, n, d, noise=0.1, seed=seed)
    return b, tuple(torch.from_numpy(a) for a in (b.X, b.y, b.x_query))


def test_layout_names_coordinates():
    layout = regression_layout(3, extra=(("xt", 3),))
    assert layout.width == 7
    assert layout.slice("x") == slice(0, 3) and layout.index("y") == 3 and layout.slice("xt") == slice(4, 7)
    assert layout.describe() == "x=[0:3], y=[3:4], xt=[4:7]"
    with pytest.raises(KeyError):
        layout.slice("z")


@pytest.mark.parametrize("heads, activation", [(1, None), (3, None), (2, "relu")])
def test_attention_shapes_and_score_form(heads, activation):
    torch.manual_seed(0)
    layer = LinearAttention(5, heads, d_head=4, d_value=3, activation=activation, init_scale=0.3)
    Z = torch.randn(2, 9, 5, dtype=torch.float64)
    out = layer(Z, n_context=8)
    assert out.shape == Z.shape
    assert torch.allclose(out, layer(Z, 8, scores_form=True), atol=1e-13, rtol=0)


def test_query_is_never_a_key():
    """Changing the query token changes no context token's update (keys/values = context only)."""
    torch.manual_seed(1)
    layer = LinearAttention(4, 2, init_scale=0.5)
    Z = torch.randn(3, 6, 4, dtype=torch.float64)
    Z2 = Z.clone()
    Z2[:, -1] += 1.0
    assert torch.equal(layer(Z, 5)[:, :-1], layer(Z2, 5)[:, :-1])


def test_merged_roundtrip():
    layer = LinearAttention(3, 2)
    kq = [torch.randn(3, 3, dtype=torch.float64) for _ in range(2)]
    pv = [torch.randn(3, 3, dtype=torch.float64) for _ in range(2)]
    layer.set_merged(kq, pv)
    got_kq, got_pv = layer.merged()
    assert torch.equal(got_kq, torch.stack(kq)) and torch.equal(got_pv, torch.stack(pv))


def test_gdpp_construction_matches_reference():
    b, (X, y, xq) = _batch()
    model = gdpp_transformer(3, 3, 0.4, 0.3)
    ref = gdpp_predict(b.X, b.y, b.x_query, 0.4, 0.3, 3)
    assert np.abs(model.predict(X, y, xq).detach().numpy() - ref).max() <= 1e-12 * (1 + np.abs(ref).max())


def test_return_all_states():
    _, (X, y, xq) = _batch()
    model = gd_transformer(3, 4, 0.2)
    Z, states = model(model.embed(X, y, xq), return_all=True)
    assert len(states) == 5 and torch.equal(states[-1], Z)


def test_float32_construction_within_float32_tolerance():
    b, (X, y, xq) = _batch(n=20, d=4)
    model = gd_transformer(4, 3, 0.3, dtype=torch.float32)
    ref = gd_predict(b.X, b.y, b.x_query, 0.3, 3)
    pred = model.predict(X.float(), y.float(), xq.float()).detach().numpy()
    eps32 = np.finfo(np.float32).eps
    # three layers, each a sum over n = 20 tokens of O(scale^2) terms
    assert np.abs(pred - ref).max() <= 3 * 20 * eps32 * (1 + np.abs(b.y).max()) ** 2


# --- the numpy CPU kernel of the moment route ----------------------------------------------

def _both_routes(layer, Z, n, monkeypatch):
    """The layer's update by the numpy kernel (no grad) and by the torch route."""
    calls = []
    kernel = modules._moment_update_cpu
    monkeypatch.setattr(modules, "_moment_update_cpu", lambda *a: calls.append(1) or kernel(*a))
    with torch.no_grad():
        fast = layer(Z, n)
    monkeypatch.setattr(modules, "NUMPY_KERNEL", False)
    with torch.no_grad():
        slow = layer(Z, n)
    monkeypatch.setattr(modules, "NUMPY_KERNEL", True)
    assert calls == [1], "the no-grad CPU call must take the numpy kernel"
    return fast, slow


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B", [1, 5, 64])
@pytest.mark.parametrize("block", [2 ** 17, 150])        # one block per chunk; 2 prompts a block
def test_numpy_kernel_equals_torch_route(monkeypatch, heads, dtype, threads, B, block):
    monkeypatch.setattr(modules, "KERNEL_BLOCK_ELEMENTS", block)
    torch.manual_seed(B)
    layer = LinearAttention(6, heads, init_scale=0.4, dtype=dtype)
    Z = torch.randn(B, 12, 6, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast, slow = _both_routes(layer, Z, 11, monkeypatch)
    finally:
        torch.set_num_threads(before)
    assert fast.dtype == dtype and fast.shape == Z.shape
    eps = torch.finfo(dtype).eps
    assert (fast - slow).abs().max() <= 50 * eps * (1 + slow.abs().max())


def test_numpy_kernel_gd_stack_matches_numpy_reference():
    """The no-grad forward (numpy kernel) of the 10-layer GD construction = gd_predict."""
    b, (X, y, xq) = _batch(n=40, d=20, B=64, seed=3)
    model = gd_transformer(20, 10, 0.25)
    with torch.no_grad():
        pred = model.predict(X, y, xq).numpy()
    ref = gd_predict(b.X, b.y, b.x_query, 0.25, 10)
    assert np.abs(pred - ref).max() <= 1e-12 * (1 + np.abs(ref).max())


def test_gradients_and_flop_counter_take_the_torch_route(monkeypatch):
    monkeypatch.setattr(modules, "_moment_update_cpu", lambda *a: pytest.fail("numpy kernel used"))
    layer = LinearAttention(4, 2, init_scale=0.5)
    Z = torch.randn(3, 6, 4, dtype=torch.float64)
    assert layer(Z, 5).grad_fn is not None                       # parameters want gradients
    Zg = Z.clone().requires_grad_()
    assert torch.func.grad(lambda z: layer(z, 5).sum())(Zg).shape == Z.shape
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(Z, 5)
    assert counter.get_total_flops() > 0


def _forward_in_child(queue):
    model = gd_transformer(3, 2, 0.2)
    with torch.no_grad():
        queue.put(model(torch.ones(8, 5, 4, dtype=torch.float64)).sum().item())


def test_numpy_kernel_survives_fork():
    """A forked worker (the training pool) rebuilds the kernel's thread pool instead of
    waiting on the parent's threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            expected = gd_transformer(3, 2, 0.2)(torch.ones(8, 5, 4, dtype=torch.float64)).sum().item()
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_forward_in_child, args=(queue,))
        child.start()
        try:
            got = queue.get(timeout=30)
        finally:
            child.kill()
            child.join()
    finally:
        torch.set_num_threads(before)
    assert got == expected
