"""LDA documents with disjoint topics and the masked-LM corruption of the topic-structure
paper (Li, Li, Risteski 2023; docs/topics.md §2).

Generator: T topics, v words per topic (topic t owns words t*v .. t*v + v - 1, uniformly);
per document N ~ Uniform{lo, ..., hi}, theta ~ Dirichlet(alpha * 1_T), per token
z ~ Cat(theta), w ~ Uniform(words of z).  Token ids: PAD = 0, MASK = 1, START = 2, END = 3,
word w -> 4 + w; a document is START, its N words, END, right-padded with PAD.

Corruption (:func:`mask_documents`): every word position is selected with probability
``p_mask`` (a document with no selected position is redrawn until it has one); a selected
position becomes [MASK] with probability 1 - p_random - p_keep, a uniformly random token of the
*whole* vocabulary (specials included) with probability p_random, and keeps its token with
probability p_keep.  Labels are the original tokens at selected positions (-100 elsewhere).
Selected positions are hidden as keys: ``key_visible`` is False there (and at PAD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechverify.theory.checks import check_int, check_real

PAD, MASK, START, END = 0, 1, 2, 3
N_SPECIAL = 4
IGNORE = -100


def vocab_size(n_topics: int, words_per_topic: int) -> int:
    """Number of token ids: 4 specials + T * v words."""
    return N_SPECIAL + check_int("n_topics", n_topics) * check_int("words_per_topic", words_per_topic)


def token_topic(n_topics: int, words_per_topic: int) -> np.ndarray:
    """Topic of every token id (-1 for the special tokens)."""
    V = vocab_size(n_topics, words_per_topic)
    topic = np.full(V, -1, dtype=np.int64)
    topic[N_SPECIAL:] = np.arange(V - N_SPECIAL) // words_per_topic
    return topic


def check_doc_len(doc_len) -> tuple[int, int]:
    """A pair (lo, hi) of integers with 1 <= lo <= hi."""
    if not isinstance(doc_len, (tuple, list)) or len(doc_len) != 2:
        raise TypeError(f"doc_len must be a pair (lo, hi) of integers; got {doc_len!r}")
    lo, hi = check_int("doc_len[0]", doc_len[0]), check_int("doc_len[1]", doc_len[1])
    if hi < lo:
        raise ValueError(f"doc_len must have lo <= hi; got {doc_len!r}")
    return lo, hi


@dataclass(frozen=True)
class LDACorpus:
    """Documents as a padded id array ``tokens`` (n_docs, hi + 2), the topic of every
    position ``topics`` (-1 at specials and PAD), the document topic mixtures ``theta``
    (n_docs, T) and the word counts ``lengths`` (N, without START/END)."""

    tokens: np.ndarray
    topics: np.ndarray
    theta: np.ndarray
    lengths: np.ndarray
    n_topics: int
    words_per_topic: int

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.n_topics, self.words_per_topic)


def sample_lda(n_docs: int, n_topics: int = 10, words_per_topic: int = 10, alpha: float = 0.1,
               doc_len=(100, 150), seed: int = 0) -> LDACorpus:
    """``n_docs`` LDA documents (see the module doc), reproducible from ``seed``."""
    n_docs = check_int("n_docs", n_docs)
    T, v = check_int("n_topics", n_topics), check_int("words_per_topic", words_per_topic)
    alpha = check_real("alpha", alpha, positive=True)
    lo, hi = check_doc_len(doc_len)
    seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, size=n_docs)
    theta = rng.dirichlet(np.full(T, alpha), size=n_docs)
    # theta can underflow to exact zeros for tiny alpha; the inverse-CDF draw below is
    # still exact because a zero-width interval is never hit.
    cdf = np.cumsum(theta, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((n_docs, hi))
    z = np.stack([np.searchsorted(cdf[i], u[i], side="right") for i in range(n_docs)]).astype(np.int64)
    z = np.minimum(z, T - 1)
    w = N_SPECIAL + z * v + rng.integers(0, v, size=(n_docs, hi))
    L = hi + 2
    tokens = np.full((n_docs, L), PAD, dtype=np.int64)
    topics = np.full((n_docs, L), -1, dtype=np.int64)
    pos = np.arange(hi)[None, :]
    inside = pos < lengths[:, None]
    tokens[:, 0] = START
    tokens[:, 1:hi + 1] = np.where(inside, w, PAD)
    topics[:, 1:hi + 1] = np.where(inside, z, -1)
    tokens[np.arange(n_docs), lengths + 1] = END
    return LDACorpus(tokens, topics, theta, lengths, T, v)


@dataclass(frozen=True)
class MaskedDocuments:
    """One static MLM corruption: ``inputs`` (ids seen by the model), ``labels`` (original id
    at selected positions, -100 elsewhere), ``key_visible`` (False at selected positions and
    PAD), ``selected`` (the masked positions)."""

    inputs: np.ndarray
    labels: np.ndarray
    key_visible: np.ndarray
    selected: np.ndarray


def mask_documents(tokens, vocab: int, p_mask: float = 0.15, p_random: float = 0.1, p_keep: float = 0.1,
                   seed: int = 0) -> MaskedDocuments:
    """The MLM corruption of the module doc, applied once (static masking)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be a 2-D integer array; got {tokens.dtype} of shape {tokens.shape}")
    vocab = check_int("vocab", vocab, minimum=N_SPECIAL + 1)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"tokens must lie in [0, vocab = {vocab}); got range [{tokens.min()}, {tokens.max()}]")
    p_mask = check_real("p_mask", p_mask, positive=True)
    p_random = check_real("p_random", p_random, nonnegative=True)
    p_keep = check_real("p_keep", p_keep, nonnegative=True)
    if p_mask > 1:
        raise ValueError(f"p_mask must be in (0, 1]; got {p_mask}")
    if p_random + p_keep > 1:
        raise ValueError(f"p_random + p_keep must be <= 1; got {p_random} + {p_keep}")
    eligible = tokens >= N_SPECIAL
    if not eligible.any(axis=1).all():
        raise ValueError("tokens: every document needs at least one word position to mask")
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    selected = (rng.random(tokens.shape) < p_mask) & eligible
    empty = ~selected.any(axis=1)
    while empty.any():                       # redraw documents with no selected position
        idx = np.flatnonzero(empty)
        selected[idx] = (rng.random((idx.size, tokens.shape[1])) < p_mask) & eligible[idx]
        empty[idx] = ~selected[idx].any(axis=1)
    kind = rng.random(tokens.shape)
    random_ids = rng.integers(0, vocab, size=tokens.shape)
    inputs = tokens.copy()
    to_mask = selected & (kind < 1.0 - p_random - p_keep)
    to_random = selected & (kind >= 1.0 - p_random - p_keep) & (kind < 1.0 - p_keep)
    inputs[to_mask] = MASK
    inputs[to_random] = random_ids[to_random]
    labels = np.where(selected, tokens, IGNORE)
    key_visible = (tokens != PAD) & ~selected
    return MaskedDocuments(inputs, labels, key_visible, selected)
