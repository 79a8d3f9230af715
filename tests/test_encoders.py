"""Task encoders (``mechverify.constructions.encoders``): each format's encode/readout round
trip on a small batch, and that the hand-built and the trained models of a task go through
the same encoder."""

import numpy as np
import pytest
import torch

from mechverify.constructions.encoders import (HMMWithSeparators, InterleavedRegression, MarkovSequences, MaskedLM,
                                               StackedRegression)
from mechverify.constructions.gd_icl import gd_transformer
from mechverify.constructions.hmm import hmm_construction
from mechverify.constructions.sparse_regression import pto_layout, pto_transformer
from mechverify.theory.tasks.hmm import random_hmms, sample_prompts
from mechverify.theory.tasks.regression import sample_regression
from mechverify.theory.tasks.topics import mask_documents
from mechverify.training import hmm as thmm
from mechverify.training import sparse_regression as tsparse


def _regression(B=3, n=4, d=2, seed=0):
    return sample_regression(B, n, d, noise=0.1, seed=seed)


def test_stacked_regression_round_trip():
    b = _regression()
    enc = StackedRegression(pto_layout(2))
    Z = enc.encode(b)
    assert Z.shape == (3, 5, 5) and Z.dtype == torch.float64
    assert np.array_equal(Z[:, :4, :2].numpy(), b.X) and np.array_equal(Z[:, :4, 2].numpy(), b.y)
    assert np.array_equal(Z[:, 4, :2].numpy(), b.x_query)
    assert not Z[:, 4, 2:].any() and not Z[:, :, 3:].any()          # query's y and the extra field are 0
    outputs = torch.arange(15.0).reshape(3, 5)
    assert torch.equal(enc.readout(outputs), outputs[:, -1])
    assert torch.equal(enc.prefix_readout(outputs), outputs[:, -1:])
    tensors = tuple(torch.from_numpy(a) for a in (b.X, b.y, b.x_query))
    assert torch.equal(enc.encode(tensors), Z)
    with pytest.raises(ValueError, match="X"):
        enc.encode(_regression(d=3))
    with pytest.raises(TypeError, match="X"):
        enc.encode((b.X, *tensors[1:]))                              # a tuple must hold tensors


def test_interleaved_regression_round_trip():
    b = _regression()
    enc = InterleavedRegression(2)
    tokens = enc.encode(b)
    assert tokens.shape == (3, 9, 3)
    assert np.array_equal(tokens[:, 0:8:2, :2].numpy(), b.X) and not tokens[:, 0:9:2, 2].any()
    assert np.array_equal(tokens[:, 1:8:2, 2].numpy(), b.y) and not tokens[:, 1:8:2, :2].any()
    assert np.array_equal(tokens[:, 8, :2].numpy(), b.x_query)
    out = torch.arange(27.0).reshape(3, 9, 1)
    assert torch.equal(enc.readout(out), out[:, -1, 0])
    assert torch.equal(enc.prefix_readout(out), out[:, [0, 2, 4, 6, 8], 0])    # the x-tokens
    with pytest.raises(ValueError, match="output"):
        enc.readout(out[:, :8])


def test_regression_hand_built_and_trained_use_the_same_encoder():
    """The PtO construction and the trained linear model read the same stacked tokens; the
    trained softmax model reads the interleaved ones; each predicts through its encoder."""
    b = _regression(d=8, n=16)
    hand = pto_transformer(8, 2, 0.3)
    linear = tsparse.build_model(tsparse.SparseTrainConfig(arch="linear"))
    softmax = tsparse.build_model(tsparse.SparseTrainConfig(arch="softmax", width=16, n_heads=2))
    assert type(hand.encoder) is type(linear.encoder) is StackedRegression
    assert hand.encoder.layout == linear.encoder.layout
    assert isinstance(softmax.encoder, InterleavedRegression)
    X, y, xq = (torch.from_numpy(a).float() for a in (b.X, b.y, b.x_query))
    with torch.no_grad():
        for model in (linear, softmax):
            expected = model.encoder.readout(model.outputs(model.encoder.encode((X, y, xq))))
            assert torch.equal(tsparse.predict(model, X, y, xq), expected)
        assert torch.equal(linear.predict(X, y, xq), tsparse.predict(linear, X, y, xq))
    assert torch.equal(tsparse.interleave(X, y, xq), InterleavedRegression(8).encode((X, y, xq)))
    assert isinstance(gd_transformer(3, 1, 0.1).encoder, StackedRegression)


def test_hmm_round_trip_and_trained_format():
    hmms = random_hmms(3, 4, 5, None, seed=0)
    p = sample_prompts(hmms, 4, 2, 6, 7, seed=1)
    enc = HMMWithSeparators(5, 7)
    t = enc.encode(p)
    assert t.ids.shape == (4, 2 * 7 + 8) and (t.ids[:, [0, 7, 14]] == 5).all()       # separators
    demos, test = enc.sequences(t)
    assert np.array_equal(demos, p.demos) and np.array_equal(test, p.test)
    # every token's target is the next observation of its sequence; the readout rows predict o_1..o_T
    assert np.array_equal(t.targets[:, 14:21], p.test) and (t.targets[:, 21] == -1).all()
    logits = torch.randn(4, t.ids.shape[1], 5)
    assert torch.equal(enc.readout(logits), logits[:, 14:21])
    assert np.array_equal(t.targets[:, t.is_test], p.test)
    tokens, targets, is_test = thmm.prompt_tokens(p, 5)                           # the trained model's input
    assert torch.equal(tokens, enc.one_hot(t)) and np.array_equal(targets, t.targets)
    assert np.array_equal(is_test, t.is_test)
    with pytest.raises(ValueError, match="test"):
        HMMWithSeparators(5, 6).encode(p)


def test_hmm_construction_reads_out_through_the_trained_models_encoder():
    """The construction scored on the encoder's tokens and read out by the encoder gives its
    own predictions on the test rows o_2..o_T, and the uniform law at SEP_test."""
    hmms = random_hmms(2, 3, 3, None, seed=2)
    p = sample_prompts(hmms, 3, 2, 5, 6, seed=3)
    enc = HMMWithSeparators(3, 6)
    model = hmm_construction(3, 1, 2, 0.5, 20.0, 6)
    with torch.no_grad():
        law = model.law(enc.readout(model.token_scores(enc.encode(p), enc)))
        direct = model.predict(torch.from_numpy(p.demos), torch.from_numpy(p.test))
    assert law.shape == (3, 6, 3)
    assert torch.equal(law[:, 1:], direct[:, :-1])
    assert torch.equal(law[:, 0], torch.full((3, 3), 1 / 3, dtype=law.dtype))


def test_markov_round_trip():
    enc = MarkovSequences(d=3, w=2)
    tokens = torch.tensor([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
    inputs = enc.encode(tokens)
    assert torch.equal(inputs, tokens[:, :-1]) and enc.one_hot(inputs).shape == (2, 4, 3)
    out = torch.arange(24.0).reshape(2, 4, 3)
    got, targets = enc.readout(out), enc.targets(tokens)
    assert got.shape[:2] == targets.shape == (2, 3)
    assert torch.equal(got, out[:, 1:])                 # input position w (1-based) predicts s_{w+1}
    with pytest.raises(ValueError, match="tokens"):
        enc.encode(torch.tensor([[0, 3, 1]]))


def test_masked_lm_round_trip():
    docs = np.array([[2, 3, 4, 5, 6, 2], [6, 5, 4, 3, 2, 2]])
    masked = mask_documents(docs, vocab=7, p_mask=0.5, seed=0)
    enc = MaskedLM(7)
    t = enc.encode(masked)
    assert torch.equal(t.ids, torch.from_numpy(masked.inputs))
    assert torch.equal(t.selected, torch.from_numpy(masked.selected))
    assert torch.equal(t.labels, torch.from_numpy(docs[masked.selected]))       # the original ids
    logits = torch.randn(2, 6, 7)
    assert torch.equal(enc.readout(logits, t), logits[torch.from_numpy(masked.selected)])
    with pytest.raises(ValueError, match="output"):
        enc.readout(logits[:, :5], t)
