"""The README's nnsight recipe: a construction is a plain ``nn.Module``, so nnsight traces it
with no export code.  Activation patching on the GD construction, checked against the same
intervention done by hand.  Skipped when nnsight (optional extra ``[interp]``) is absent."""

import pytest
import torch

from mechverify.constructions.gd_icl import gd_transformer
from mechverify.theory.tasks.regression import sample_regression
from verify.instances import to_torch

nnsight = pytest.importorskip("nnsight", reason="optional extra [interp] not installed")


def _prompts(seed):
    b = sample_regression(6, 10, 3, seed=seed)
    return to_torch(b.X, b.y, b.x_query)


def test_trace_reads_layer_updates():
    model = gd_transformer(3, 3, 0.2)
    Z = model.embed(*_prompts(0))
    traced = nnsight.NNsight(model)
    with traced.trace(Z):
        first = traced.layers[0].output.save()
        out = traced.output.save()
    # the trace runs with autograd on, so compare with the same (torch) route, bit for bit
    assert torch.equal(first, model.layers[0](Z, 10))
    assert torch.equal(out, model(Z))


def test_activation_patching_matches_hand_intervention():
    """Patch layer 0's update of a clean run with the update from a corrupted prompt."""
    model = gd_transformer(3, 2, 0.2)
    clean, corrupt = model.embed(*_prompts(0)), model.embed(*_prompts(1))
    traced = nnsight.NNsight(model)
    with traced.trace(corrupt):
        donor = traced.layers[0].output.save()
    with traced.trace(clean):
        traced.layers[0].output[:] = donor
        patched = traced.output.save()
    with torch.no_grad():
        Z1 = clean + model.layers[0](corrupt, 10)
        by_hand = Z1 + model.layers[1](Z1, 10)
        assert torch.allclose(patched, by_hand, rtol=0, atol=1e-12)
        assert not torch.allclose(patched, model(clean))          # the patch changed something
