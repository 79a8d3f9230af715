"""Public hypothesis strategies for random instances of the package's tasks.

Each strategy draws small integers (dimensions, lengths, a seed), which shrink to readable
counterexamples, and builds the instance with the package's own seeded sampler
(``mechverify.theory.tasks.*``), so a failing example is reproducible from what hypothesis prints.

* :func:`regression_prompts`: in-context linear-regression prompts, dense or sparse;
* :func:`hmms`: hidden Markov models, with stationary, uniform or random (non-stationary) initial laws;
* :func:`markov_teachers`: high-order sparse-block Markov teachers;
* :func:`lda_corpora`: LDA topic-model corpora.

numpy only (no torch).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mechverify.theory.tasks.hmm import HMM, random_hmm
from mechverify.theory.tasks.markov import MarkovTask
from mechverify.theory.tasks.regression import RegressionBatch, sample_regression
from mechverify.theory.tasks.topics import LDACorpus, sample_lda

__all__ = ["HMM_INITIALS", "hmms", "lda_corpora", "markov_teachers", "regression_prompts", "seeds"]

seeds = st.integers(min_value=0, max_value=2**32 - 1)
HMM_INITIALS = ("stationary", "uniform", "random")


def _bound(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def regression_prompts(*, max_d: int = 8, max_n: int = 32, max_prompts: int = 4, sparse: bool = False,
                       noises=(0.0, 0.1, 0.5)) -> st.SearchStrategy[RegressionBatch]:
    """Batches of Gaussian regression prompts ``y = <w, x> + noise``, w ~ N(0, I): d in 1..max_d,
    n in 1..max_n context pairs, 1..max_prompts prompts, noise from ``noises``.  ``sparse=True``
    draws a support size s in 1..d (w has s non-zero coordinates)."""
    max_d, max_n, max_prompts = _bound("max_d", max_d), _bound("max_n", max_n), _bound("max_prompts", max_prompts)
    if not isinstance(sparse, bool):
        raise TypeError("sparse must be a bool")
    noises = tuple(noises)
    if not noises or any(not np.isfinite(s) or s < 0 for s in noises):
        raise ValueError(f"noises must be a non-empty collection of finite values >= 0; got {noises}")

    @st.composite
    def draw(draw_):
        d = draw_(st.integers(1, max_d))
        sparsity = draw_(st.integers(1, d)) if sparse else None
        return sample_regression(draw_(st.integers(1, max_prompts)), draw_(st.integers(1, max_n)), d,
                                 sparsity=sparsity, noise=draw_(st.sampled_from(noises)), seed=draw_(seeds))
    return draw()


def hmms(*, max_states: int = 5, max_obs: int = 6, low_rank: bool = False,
         initials=HMM_INITIALS) -> st.SearchStrategy[HMM]:
    """Random HMMs: S in 1..max_states hidden states, O in 1..max_obs observations, Dirichlet
    transition (rank r in 1..S with ``low_rank=True``) and emission rows.  The initial law is drawn
    from ``initials``: ``"stationary"`` (the chain starts in equilibrium), ``"uniform"``, or
    ``"random"`` (a Dirichlet draw, in general not stationary: the state marginals change with
    time, the case a reference that assumes stationarity gets wrong)."""
    max_states, max_obs = _bound("max_states", max_states), _bound("max_obs", max_obs)
    initials = tuple(initials)
    if not initials or any(i not in HMM_INITIALS for i in initials):
        raise ValueError(f"initials must be a non-empty subset of {HMM_INITIALS}; got {initials}")

    @st.composite
    def draw(draw_):
        S, O = draw_(st.integers(1, max_states)), draw_(st.integers(1, max_obs))
        rank = draw_(st.integers(1, S)) if low_rank else None
        initial, seed = draw_(st.sampled_from(initials)), draw_(seeds)
        hmm = random_hmm(S, O, rank, seed=seed, initial="uniform" if initial == "uniform" else "stationary")
        if initial == "random":
            pi = np.random.default_rng([seed, 1]).dirichlet(np.ones(S))
            hmm = HMM(hmm.transition, hmm.emission, pi, hmm.factors)
        return hmm
    return draw()


def markov_teachers(*, max_d: int = 6, max_blocks: int = 3, max_block_size: int = 3,
                    max_L: int = 12) -> st.SearchStrategy[MarkovTask]:
    """High-order sparse-block Markov teachers: vocabulary d in 2..max_d, 1..max_blocks blocks of
    1..max_block_size lags, importance ratio m, temperature tau, nearest or farthest block most
    important, contiguous or overlapping blocks, within-block weights alpha (blocks of equal
    size), Frobenius-orthogonal A*_k (only where they exist: not for d = 2 with 3+ blocks)."""
    max_d = _bound("max_d", max_d, minimum=2)
    max_blocks, max_block_size, max_L = (_bound("max_blocks", max_blocks), _bound("max_block_size", max_block_size),
                                         _bound("max_L", max_L))

    @st.composite
    def draw(draw_):
        d = draw_(st.integers(2, max_d))
        sizes = tuple(draw_(st.lists(st.integers(1, max_block_size), min_size=1, max_size=max_blocks)))
        equal = len(set(sizes)) == 1
        alpha = (tuple(draw_(st.lists(st.floats(0.1, 1.0), min_size=sizes[0], max_size=sizes[0])))
                 if equal and draw_(st.booleans()) else None)
        stride = draw_(st.integers(1, min(sizes))) if equal and draw_(st.booleans()) else None
        orthogonal = draw_(st.booleans()) if (d >= 3 or len(sizes) <= 2) else False
        return MarkovTask(d=d, sizes=sizes, m=draw_(st.floats(1.0, 3.0)), tau=draw_(st.sampled_from((0.1, 0.5, 1.0))),
                          alpha=alpha, reverse=draw_(st.booleans()), stride=stride, orthogonal=orthogonal,
                          L=draw_(st.integers(1, max_L)), teacher_seed=draw_(seeds))
    return draw()


def lda_corpora(*, max_docs: int = 8, max_topics: int = 5, max_words_per_topic: int = 5,
                max_doc_len: int = 20) -> st.SearchStrategy[LDACorpus]:
    """LDA corpora: 1..max_docs documents, T in 1..max_topics topics of 1..max_words_per_topic
    words each, Dirichlet concentration alpha in {0.1, 0.5, 1, 5}, document lengths in a drawn
    range lo..hi <= max_doc_len."""
    max_docs, max_topics = _bound("max_docs", max_docs), _bound("max_topics", max_topics)
    max_wpt, max_doc_len = _bound("max_words_per_topic", max_words_per_topic), _bound("max_doc_len", max_doc_len)

    @st.composite
    def draw(draw_):
        lo = draw_(st.integers(1, max_doc_len))
        hi = draw_(st.integers(lo, max_doc_len))
        return sample_lda(draw_(st.integers(1, max_docs)), draw_(st.integers(1, max_topics)),
                          draw_(st.integers(1, max_wpt)), alpha=draw_(st.sampled_from((0.1, 0.5, 1.0, 5.0))),
                          doc_len=(lo, hi), seed=draw_(seeds))
    return draw()
