"""Bad input for the topic-structure modules: ValueError/TypeError naming the parameter."""

import numpy as np
import pytest
import torch

from mechverify.constructions.topics import (TopicMLM, attention_scores, block_matrix, embedding_construction, set_scores,
                                  value_construction)
from mechverify.theory.dynamics.topics import stage_samples, two_stage_descent
from mechverify.theory.symbolic.topics import equal_weight_gradient_descent, optimal_block_contrast
from mechverify.theory.tasks.topics import mask_documents, sample_lda
from mechverify.training.topics import (AttentionFitConfig, EmbeddingFitConfig, LDASetting, RealTextConfig, TwoStageConfig,
                             ValueFitConfig, runs)


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(n_docs=0), "n_docs", ValueError),
    (dict(n_docs=2.0), "n_docs", TypeError),
    (dict(n_docs=2, n_topics=0), "n_topics", ValueError),
    (dict(n_docs=2, words_per_topic=0), "words_per_topic", ValueError),
    (dict(n_docs=2, alpha=0.0), "alpha", ValueError),
    (dict(n_docs=2, alpha=float("inf")), "alpha", ValueError),
    (dict(n_docs=2, doc_len=(5, 3)), "doc_len", ValueError),
    (dict(n_docs=2, doc_len=5), "doc_len", TypeError),
    (dict(n_docs=2, doc_len=(0, 3)), "doc_len", ValueError),
    (dict(n_docs=2, seed=-1), "seed", ValueError),
])
def test_sample_lda_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        sample_lda(**kwargs)


TOKENS = sample_lda(3, 2, 2, 0.5, (4, 6), seed=0).tokens


@pytest.mark.parametrize("kwargs, param, exc", [
    (dict(tokens=TOKENS.astype(float), vocab=8), "tokens", TypeError),
    (dict(tokens=TOKENS, vocab=7), "tokens", ValueError),
    (dict(tokens=TOKENS, vocab=4), "vocab", ValueError),
    (dict(tokens=TOKENS, vocab=8, p_mask=0.0), "p_mask", ValueError),
    (dict(tokens=TOKENS, vocab=8, p_mask=1.5), "p_mask", ValueError),
    (dict(tokens=TOKENS, vocab=8, p_random=-0.1), "p_random", ValueError),
    (dict(tokens=TOKENS, vocab=8, p_random=0.6, p_keep=0.6), "p_random", ValueError),
    (dict(tokens=np.array([[2, 3, 0]]), vocab=8), "tokens", ValueError),
    (dict(tokens=TOKENS, vocab=8, seed=-3), "seed", ValueError),
])
def test_mask_documents_rejects(kwargs, param, exc):
    with pytest.raises(exc, match=param):
        mask_documents(**kwargs)


@pytest.mark.parametrize("args, kwargs, param, exc", [
    ((1, 10, 0.1, None), {}, "n_topics", ValueError),
    ((10, 0, 0.1, None), {}, "words_per_topic", ValueError),
    ((10, 10, -0.1, None), {}, "alpha", ValueError),
    ((10, 10, 0.1, (3, 2)), {}, "doc_len", ValueError),
    ((10, 10, 0.1, "long"), {}, "doc_len", TypeError),
    ((10, 10, 0.1, None), {"n_docs": 0}, "n_docs", ValueError),
    ((10, 10, 0.1, None), {"seed": -1}, "seed", ValueError),
])
def test_optimal_block_contrast_rejects(args, kwargs, param, exc):
    with pytest.raises(exc, match=param):
        optimal_block_contrast(*args, **kwargs)


@pytest.mark.parametrize("kwargs, param", [
    (dict(n_topics=5, tau=5, words_per_topic=2), "tau"),
    (dict(n_topics=5, tau=2, words_per_topic=2, lr=0.0), "lr"),
    (dict(n_topics=1, tau=1, words_per_topic=2), "n_topics"),
])
def test_equal_weight_rejects(kwargs, param):
    with pytest.raises(ValueError, match=param):
        equal_weight_gradient_descent(**kwargs)


def test_dynamics_rejects():
    with pytest.raises(ValueError, match="p_random"):
        stage_samples(p_random=0.7, p_keep=0.5)
    with pytest.raises(ValueError, match="sigma"):
        two_stage_descent(-1.0, stage_samples(n_samples=10))


def test_constructions_reject():
    with pytest.raises(ValueError, match="decoder"):
        TopicMLM(8, decoder="linear")
    with pytest.raises(ValueError, match="decoder"):
        TopicMLM(8, 4, decoder="identity")
    with pytest.raises(ValueError, match="vocab"):
        TopicMLM(4)
    with pytest.raises(ValueError, match="d must be >= n_topics"):
        embedding_construction(3, 2, 1.0, d=2)
    with pytest.raises(ValueError, match="c"):
        block_matrix(2, 2, float("nan"))
    with pytest.raises(ValueError, match="S"):
        set_scores(value_construction(2, 2, 1.0), torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="one-hot"):
        attention_scores(TopicMLM(8, 4, decoder="tied"))
    model = value_construction(2, 2, 1.0)
    ids = torch.tensor([[2, 4, 3]])
    with pytest.raises(TypeError, match="ids"):
        model(ids.float(), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_visible"):
        model(ids, torch.ones(1, 3))
    with pytest.raises(ValueError, match="ids"):
        model(ids + 10, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_visible"):
        model(ids, torch.zeros(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("make, param, exc", [
    (lambda: LDASetting(n_topics=1), "n_topics", ValueError),
    (lambda: LDASetting(doc_len=(9, 3)), "doc_len", ValueError),
    (lambda: LDASetting(p_keep=0.6, p_random=0.6), "p_random", ValueError),
    (lambda: LDASetting(n_train=0), "n_train", ValueError),
    (lambda: ValueFitConfig(setting="default"), "setting", TypeError),
    (lambda: ValueFitConfig(iters=0), "iters", ValueError),
    (lambda: EmbeddingFitConfig(d=0), "d", ValueError),
    (lambda: EmbeddingFitConfig(init_scale=0.0), "init_scale", ValueError),
    (lambda: AttentionFitConfig(train_value=1), "train_value", TypeError),
    (lambda: AttentionFitConfig(train_value=True, c_value=5.0), "c_value", ValueError),
    (lambda: TwoStageConfig(sigma=0.0), "sigma", ValueError),
    (lambda: TwoStageConfig(n_eval=10**6), "n_eval", ValueError),
    (lambda: TwoStageConfig(lr=-1.0), "lr", ValueError),
    (lambda: RealTextConfig(window=2), "window", ValueError),
    (lambda: RealTextConfig(topic_confidence=1.5), "topic_confidence", ValueError),
    (lambda: runs("huge"), "scale", ValueError),
])
def test_configs_reject(make, param, exc):
    with pytest.raises(exc, match=param):
        make()


def test_setting_split_rejects():
    with pytest.raises(ValueError, match="split"):
        LDASetting(n_train=2, n_test=2).data("dev")


def test_lda_determinism_and_masking():
    """Same seed, same documents; masked positions are hidden keys and carry the labels; the
    80/10/10 split holds on 10k documents to 3 standard errors."""
    a, b = sample_lda(50, seed=4), sample_lda(50, seed=4)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.theta, b.theta)
    corpus = sample_lda(10_000, seed=1)
    m = mask_documents(corpus.tokens, corpus.vocab_size, seed=2)
    assert m.selected.any(axis=1).all()
    assert not (m.key_visible & m.selected).any()
    assert np.array_equal(m.labels[m.selected], corpus.tokens[m.selected])
    words = corpus.tokens >= 4
    rate = m.selected.sum() / words.sum()
    assert abs(rate - 0.15) < 3 * np.sqrt(0.15 * 0.85 / words.sum()) + 1e-3
    n = m.selected.sum()
    masked = (m.inputs[m.selected] == 1).mean()
    assert abs(masked - (0.8 + 0.1 / 104)) < 3 * np.sqrt(0.16 / n)
