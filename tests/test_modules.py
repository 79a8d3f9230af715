"""LinearAttention and the construction stacks: shapes, layouts, both attention forms, dtypes."""

import numpy as np
import pytest
import torch

from mechverify.constructions.gd_icl import gd_transformer, gdpp_transformer
from mechverify.constructions.modules import GPT, LinearAttention, SoftmaxAttention, regression_layout
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


# --- softmax attention and the GPT ---------------------------------------------------------

def _explicit_attention(layer: SoftmaxAttention, x: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention written out with a T x T mask (the form before SDPA)."""
    B, T, D = x.shape
    q, k, v = layer.qkv(x).view(B, T, 3, layer.n_heads, layer.d_head).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) / layer.d_head ** 0.5
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return layer.out((pattern @ v).transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("T", [1, 7, 33, 65])
def test_sdpa_attention_equals_explicit_mask(T):
    """The fused scaled_dot_product_attention path = the explicit-mask attention (float64),
    also the pattern path, and their gradients."""
    torch.manual_seed(T)
    layer = SoftmaxAttention(16, 4, dtype=torch.float64)
    x = torch.randn(3, T, 16, dtype=torch.float64, requires_grad=True)
    fast = layer(x)
    ref = _explicit_attention(layer, x)
    assert (fast - ref).abs().max() <= 1e-12
    with_pattern, pattern = layer(x, return_pattern=True)
    assert (with_pattern - ref).abs().max() <= 1e-12 and pattern.shape == (3, 4, T, T)
    g_fast = torch.autograd.grad(fast.square().sum(), (x, layer.qkv.weight))
    g_ref = torch.autograd.grad(ref.square().sum(), (x, layer.qkv.weight))
    assert all((a - b).abs().max() <= 1e-12 for a, b in zip(g_fast, g_ref))


def test_gpt_generator_gives_the_global_seed_values():
    """GPT(generator=Generator().manual_seed(s)) = torch.manual_seed(s) then GPT(): the runs
    seeded the old way keep their initial weights; the global RNG is left alone."""
    kw = dict(d_in=5, d_model=16, n_layers=2, n_heads=4, max_len=12, d_out=3)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    seeded = GPT(**kw)
    a = GPT(**kw, generator=torch.Generator().manual_seed(3))
    b = GPT(**kw, generator=torch.Generator().manual_seed(3))
    c = GPT(**kw, generator=torch.Generator().manual_seed(4))
    sa, sb, sc, ss = a.state_dict(), b.state_dict(), c.state_dict(), seeded.state_dict()
    assert all(torch.equal(sa[k], sb[k]) and torch.equal(sa[k], ss[k]) for k in sa)
    assert not torch.equal(sa["read_in.weight"], sc["read_in.weight"])
    torch.manual_seed(3)
    GPT(**kw, generator=torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), before), "a GPT with a generator must not draw from the global RNG"
    with pytest.raises(TypeError, match="generator"):
        GPT(**kw, generator=3)
