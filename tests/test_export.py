"""Export of the softmax GPT to TransformerLens (optional extra ``[export]``): parity of the
outputs and of the per-layer residual stream.  Skipped when the extra is absent."""

import pytest
import torch

from mechverify.constructions.modules import GPT, LinearTransformer
from mechverify.training.sparse_regression import SparseTrainConfig, build_model

tl = pytest.importorskip("transformer_lens", reason="optional extra [export] not installed")
from mechverify.constructions.export import parity_error, to_transformer_lens  # noqa: E402


def _random_gpt(dtype, seed=0, **kw):
    torch.manual_seed(seed)
    gpt = GPT(**{"d_in": 5, "d_model": 16, "n_layers": 2, "n_heads": 4, "max_len": 12, "d_out": 3, **kw}, dtype=dtype)
    with torch.no_grad():                   # LayerNorm starts at (1, 0): move it so the map is exercised
        for name, p in gpt.named_parameters():
            if "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
    return gpt


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [dict(), dict(n_layers=3, n_heads=2, d_model=8), dict(n_heads=1),
                                   dict(n_layers=1)])
def test_parity(dtype, tol, shape):
    gpt = _random_gpt(dtype, **shape)
    tokens = torch.randn(4, 12, 5, dtype=dtype)
    err = parity_error(gpt, to_transformer_lens(gpt), tokens)
    assert err <= tol, err


def test_residual_stream_matches_hooks():
    gpt = _random_gpt(torch.float64)
    model = to_transformer_lens(gpt)
    tokens = torch.randn(2, 9, 5, dtype=torch.float64)
    with torch.no_grad():
        _, hidden = gpt(tokens, return_hidden=True)
        _, cache = model.run_with_cache(gpt.embed(tokens), start_at_layer=0)
    for l in range(len(gpt.blocks)):
        assert torch.allclose(cache[f"blocks.{l}.hook_resid_post"], hidden[l + 1], atol=1e-12, rtol=0)


def test_trained_sparse_gpt_exports():
    """The softmax model of the sparse-regression experiments (interleaved x/y tokens)."""
    config = SparseTrainConfig(arch="softmax", d=4, s=1, n=6, n_layers=2, n_heads=2, width=8, steps=1, batch=8)
    gpt = build_model(config).double()
    tokens = torch.randn(3, 2 * config.n + 1, gpt.read_in.in_features, dtype=torch.float64)
    assert parity_error(gpt, to_transformer_lens(gpt), tokens) <= 1e-12


def test_rejects_linear_attention():
    with pytest.raises(TypeError, match="gpt"):
        to_transformer_lens(LinearTransformer.__new__(LinearTransformer))
