"""The sparse-regression training and analysis pipeline runs on both architectures (tiny runs)."""

import dataclasses

import numpy as np
import pytest
import torch

from mechverify.training.sparse_regression import (SparseTrainConfig, build_model, eval_prompts, excess_risks, head_importance,
                             importance_entropy, interleave, probe_risks, pruned, train_sparse, with_heads)

TINY = SparseTrainConfig(d=3, s=1, n=4, n_layers=2, n_heads=2, width=8, steps=3, batch=8, log_every=1)


@pytest.mark.parametrize("arch", ["linear", "softmax"])
def test_pipeline_runs(arch):
    config = dataclasses.replace(TINY, arch=arch)
    payload = train_sparse(config, progress=False)
    assert payload["loss"].shape == (3,) and torch.isfinite(payload["loss"]).all()
    model = build_model(config)
    model.load_state_dict(payload["state"])
    batch = eval_prompts(config, n_prompts=64)
    importance = head_importance(model, batch, config.noise)
    assert importance.shape == (2, 2) and np.all(np.isfinite(importance))
    assert importance_entropy(importance).shape == (2,)
    full = excess_risks(model, batch, config.noise)
    assert full.shape == (64,)
    # masking every head of every layer leaves only the residual path: a different prediction
    silenced = with_heads(model, {0: [], 1: []})
    assert not np.allclose(excess_risks(silenced, batch, config.noise), full)
    assert excess_risks(pruned(model, importance, True), batch, config.noise).shape == (64,)
    probes = probe_risks(model, batch, eval_prompts(config, n_prompts=64, part=1), config.noise)
    assert probes.shape == (3,) and np.all(np.isfinite(probes))


def test_interleave_layout():
    X = torch.arange(6.0).reshape(1, 2, 3)
    tokens = interleave(X, torch.tensor([[10.0, 20.0]]), torch.tensor([[7.0, 8.0, 9.0]]))
    assert tokens.shape == (1, 5, 4)
    assert tokens[0, 0].tolist() == [0, 1, 2, 0] and tokens[0, 1].tolist() == [0, 0, 0, 10]
    assert tokens[0, 4].tolist() == [7, 8, 9, 0]
