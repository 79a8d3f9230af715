"""The numpy CPU kernel of the linear-attention moment route
(``mechverify.constructions.kernel``): same results as the torch route in every mode, and
the torch fallback when the feature check fails."""

import multiprocessing

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mechverify.constructions import kernel
from mechverify.constructions.gd_icl import gd_transformer
from mechverify.constructions.modules import LinearAttention, LinearTransformer, regression_layout
from mechverify.theory.algorithms.regression import gd_predict
from mechverify.theory.tasks.regression import sample_regression


def _counting(monkeypatch) -> list:
    """Record each call of the kernel (returns the list the calls are appended to)."""
    calls = []
    run = kernel._run
    monkeypatch.setattr(kernel, "_run", lambda *a, **k: calls.append(1) or run(*a, **k))
    return calls


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B", [1, 5, 64])
@pytest.mark.parametrize("block", [2 ** 17, 150])        # one block per chunk; 2 prompts a block
def test_kernel_equals_torch_route(monkeypatch, heads, dtype, threads, B, block):
    """One layer's update and a 3-layer residual stack (final state and every state)."""
    monkeypatch.setattr(kernel, "BLOCK_ELEMENTS", block)
    gen = torch.Generator().manual_seed(B)
    layers = [LinearAttention(6, heads, init_scale=0.4, dtype=dtype, generator=gen) for _ in range(3)]
    stack = LinearTransformer(layers, regression_layout(5), torch.zeros(6, dtype=dtype))
    Z = torch.randn(B, 12, 6, dtype=dtype, generator=gen)
    calls = _counting(monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            fast = [layers[0](Z, 11), stack(Z), *stack(Z, return_all=True)[1]]
            with kernel.disabled():
                slow = [layers[0](Z, 11), stack(Z), *stack(Z, return_all=True)[1]]
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 3, "the no-grad CPU calls must take the kernel (and only them)"
    eps = torch.finfo(dtype).eps
    for f, s in zip(fast, slow, strict=True):
        assert f.dtype == dtype and f.shape == Z.shape
        assert (f - s).abs().max() <= 50 * eps * (1 + s.abs().max())


def test_kernel_gd_stack_matches_numpy_reference():
    """The no-grad forward (kernel) of the 10-layer GD construction = gd_predict."""
    b = sample_regression(64, 40, 20, noise=0.1, seed=3)
    X, y, xq = (torch.from_numpy(a) for a in (b.X, b.y, b.x_query))
    model = gd_transformer(20, 10, 0.25)
    with torch.no_grad():
        pred = model.predict(X, y, xq).numpy()
    ref = gd_predict(b.X, b.y, b.x_query, 0.25, 10)
    assert np.abs(pred - ref).max() <= 1e-12 * (1 + np.abs(ref).max())


def test_fallback_without_the_private_torch_apis_gives_the_same_result(monkeypatch):
    """With the feature check unavailable (a torch without the two private functions), the
    kernel is never used and the forward gives the kernel's result."""
    b = sample_regression(16, 30, 4, noise=0.1, seed=5)
    X, y, xq = (torch.from_numpy(a) for a in (b.X, b.y, b.x_query))
    model = gd_transformer(4, 5, 0.3)
    with torch.no_grad():
        fast = model.predict(X, y, xq)
    calls = _counting(monkeypatch)
    monkeypatch.setattr(kernel, "WATCH_CHECK", None)
    assert not kernel.applies(X)
    with torch.no_grad():
        fallback = model.predict(X, y, xq)
    assert calls == []
    assert (fast - fallback).abs().max() <= 1e-13 * (1 + fast.abs().max())


def test_gradients_transforms_and_dispatch_modes_take_the_torch_route(monkeypatch):
    monkeypatch.setattr(kernel, "_run", lambda *a, **k: pytest.fail("numpy kernel used"))
    layer = LinearAttention(4, 2, init_scale=0.5)
    Z = torch.randn(3, 6, 4, dtype=torch.float64)
    assert layer(Z, 5).grad_fn is not None                       # parameters want gradients
    Zg = Z.clone().requires_grad_()
    assert torch.func.grad(lambda z: layer(z, 5).sum())(Zg).shape == Z.shape
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(Z, 5)
    assert counter.get_total_flops() > 0


def test_use_is_scoped_and_checked():
    Z = torch.zeros(2, 3, 4, dtype=torch.float64)
    assert kernel.applies(Z)
    with kernel.use(False):
        assert not kernel.applies(Z)
        with kernel.use(True):
            assert kernel.applies(Z)
        assert not kernel.applies(Z)
    assert kernel.applies(Z)
    assert not kernel.applies(Z.to(torch.bfloat16))
    with pytest.raises(TypeError, match="enabled"):
        with kernel.use(0):
            pass


def _forward_in_child(queue):
    model = gd_transformer(3, 2, 0.2)
    with torch.no_grad():
        queue.put(model(torch.ones(8, 5, 4, dtype=torch.float64)).sum().item())


def test_kernel_survives_fork():
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
