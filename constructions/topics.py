"""One-layer masked-LM transformer of the topic-structure paper (Li, Li, Risteski 2023) and
its hand-built weights (docs/topics.md §2.3, §3; the constructions are our
reconstruction [reconstructed]).

Notation (paper / spec -> code):

| symbol | code | shape |
|---|---|---|
| vocabulary (PAD, MASK, START, END, words) | ``vocab`` = 4 + T v | |
| token embedding E (one-hot: identity, frozen) | ``TopicMLM.embedding`` | (vocab, d) |
| W^Q, W^K (one head, width d) | ``W_Q``, ``W_K`` | (d, d) |
| W^V and its bias | ``W_V``, ``b_V`` | (d, d), (d,) |
| decoder (identity, or tied to E with bias) | ``decoder`` = "identity" / "tied"; ``b_dec`` | (vocab,) |
| score matrix S = W^Q^T W^K / sqrt(d) on one-hot inputs | :func:`attention_scores` | (vocab, vocab) |
| c* | ``c`` in the builders | |

Forward (no residual, no output projection, no FFN, no LayerNorm, no positions - the clean
model of the spec): x_i = E[token_i]; a_ij = softmax_j(<W_Q x_i, W_K x_j>/sqrt(d)) over the
visible keys j; h_i = sum_j a_ij (W_V x_j + b_V); logits_i = h_i (identity decoder) or
E h_i + b_dec (tied decoder).  ``embedding_layernorm=True`` adds the LayerNorm of the official
code's embedding layer (its trainable gamma, beta; the §2.3 caveat).

:class:`mechverify.constructions.modules.SoftmaxAttention` does not fit this model (it is causal, has a
fused biased QKV map and an output projection, and no key mask), so the attention is written
out here; tensor checks reuse :func:`mechverify.constructions.modules.check_tensor`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mechverify.constructions.modules import check_tensor
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.topics import IGNORE, N_SPECIAL, vocab_size

DECODERS = ("identity", "tied")
SPECIAL_LOGIT = -50.0       # bias of the special-token outputs (never labels): e^-50 ~ 2e-22


class TopicMLM(nn.Module):
    """One-layer, one-head masked-LM transformer (module doc)."""

    def __init__(self, vocab: int, d: int | None = None, *, decoder: str = "identity",
                 embedding_layernorm: bool = False, dtype=torch.float64, device=None):
        super().__init__()
        vocab = check_int("vocab", vocab, minimum=N_SPECIAL + 1)
        one_hot = d is None
        d = vocab if one_hot else check_int("d", d)
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")
        if decoder == "identity" and d != vocab:
            raise ValueError(f"decoder='identity' needs d == vocab = {vocab}; got d = {d}")
        kw = {"dtype": dtype, "device": device}
        self.vocab, self.d, self.decoder, self.one_hot = vocab, d, decoder, one_hot
        if one_hot:
            self.register_buffer("embedding", torch.eye(vocab, **kw))
        else:
            self.embedding = nn.Parameter(torch.zeros(vocab, d, **kw))
        self.ln = nn.LayerNorm(d, eps=1e-12, **kw) if embedding_layernorm else None
        self.W_Q = nn.Parameter(torch.zeros(d, d, **kw))
        self.W_K = nn.Parameter(torch.zeros(d, d, **kw))
        self.W_V = nn.Parameter(torch.zeros(d, d, **kw))
        self.b_V = nn.Parameter(torch.zeros(d, **kw))
        self.b_dec = nn.Parameter(torch.zeros(vocab, **kw))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding[ids]
        return self.ln(x) if self.ln is not None else x

    def forward(self, ids: torch.Tensor, key_visible: torch.Tensor, return_pattern: bool = False):
        """Logits (B, L, vocab) for ids (B, L); keys with ``key_visible`` False are hidden."""
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 2:
            raise TypeError(f"ids must be a 2-D int64 tensor; got {type(ids).__name__}")
        if not isinstance(key_visible, torch.Tensor) or key_visible.dtype != torch.bool \
                or key_visible.shape != ids.shape:
            raise TypeError(f"key_visible must be a bool tensor of shape {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab):
            raise ValueError(f"ids must lie in [0, vocab = {self.vocab})")
        if not key_visible.any(dim=1).all():
            raise ValueError("key_visible must leave at least one key per sequence")
        x = self.embed(ids)
        scores = (x @ self.W_Q.T) @ (x @ self.W_K.T).transpose(1, 2) / math.sqrt(self.d)
        scores = scores.masked_fill(~key_visible[:, None, :], float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        h = pattern @ (x @ self.W_V.T + self.b_V)
        logits = (h if self.decoder == "identity" else h @ self.embedding.T) + self.b_dec
        return (logits, pattern) if return_pattern else logits


def mlm_loss(model: TopicMLM, ids: torch.Tensor, key_visible: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (labels != -100)."""
    logits = model(ids, key_visible)
    return nn.functional.cross_entropy(logits.reshape(-1, model.vocab), labels.reshape(-1), ignore_index=IGNORE)


def attention_scores(model: TopicMLM) -> torch.Tensor:
    """S = W_Q^T W_K / sqrt(d) on one-hot inputs: S[a, b] is the score of query token a on key b."""
    if not model.one_hot or model.ln is not None:
        raise ValueError("attention_scores needs a one-hot model without embedding LayerNorm")
    return model.W_Q.T @ model.W_K / math.sqrt(model.d)


def block_matrix(n_topics: int, words_per_topic: int, c: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """(vocab, vocab): c (I_T (x) J_v) on the word rows/columns, 0 on the specials."""
    T, v = check_int("n_topics", n_topics), check_int("words_per_topic", words_per_topic)
    c = check_real("c", c)
    V = vocab_size(T, v)
    block = torch.kron(torch.eye(T, dtype=dtype, device=device), torch.ones(v, v, dtype=dtype, device=device))
    out = torch.zeros(V, V, dtype=dtype, device=device)
    out[N_SPECIAL:, N_SPECIAL:] = c * block
    return out


def _special_bias(model: TopicMLM) -> None:
    model.b_dec.data.zero_()
    model.b_dec.data[:N_SPECIAL] = SPECIAL_LOGIT


@torch.no_grad()
def value_construction(n_topics: int, words_per_topic: int, c: float, *, dtype=torch.float64,
                       device=None) -> TopicMLM:
    """Uniform attention (W_Q = W_K = 0), W^V = c (I_T (x) J_v), identity decoder, special
    outputs at -50: logit_w = c s_{t(w)} - the block model of mechverify.theory.symbolic.topics."""
    V = vocab_size(n_topics, words_per_topic)
    model = TopicMLM(V, dtype=dtype, device=device)
    model.W_V.data.copy_(block_matrix(n_topics, words_per_topic, c, dtype=dtype, device=device))
    _special_bias(model)
    return model


@torch.no_grad()
def embedding_construction(n_topics: int, words_per_topic: int, c: float, d: int | None = None, *,
                           dtype=torch.float64, device=None) -> TopicMLM:
    """Uniform attention, W^V = I, decoder tied to E, E_w = sqrt(c) q_{t(w)} with orthonormal
    q_t (the first T unit vectors of R^d, d >= T), special embeddings 0 and special outputs at
    -50: E E^T = c (I_T (x) J_v) on words, so the logits equal those of the value construction."""
    T, v = check_int("n_topics", n_topics), check_int("words_per_topic", words_per_topic)
    c = check_real("c", c, nonnegative=True)
    d = T if d is None else check_int("d", d)
    if d < T:
        raise ValueError(f"d must be >= n_topics = {T} for orthonormal topic directions; got {d}")
    V = vocab_size(T, v)
    model = TopicMLM(V, d, decoder="tied", dtype=dtype, device=device)
    E = torch.zeros(V, d, dtype=dtype, device=device)
    E[N_SPECIAL + torch.arange(T * v), torch.arange(T * v) // v] = math.sqrt(c)
    model.embedding.data.copy_(E)
    model.W_V.data.copy_(torch.eye(d, dtype=dtype, device=device))
    _special_bias(model)
    return model


@torch.no_grad()
def set_scores(model: TopicMLM, S: torch.Tensor) -> TopicMLM:
    """Realise the one-hot score matrix S as W_Q = I, W_K = sqrt(d) S, so that
    <W_Q x_a, W_K x_b> / sqrt(d) = S[a, b]."""
    if not model.one_hot:
        raise ValueError("set_scores needs a one-hot model")
    S = check_tensor("S", S, shape=(model.vocab, model.vocab))
    model.W_Q.data.copy_(torch.eye(model.d, dtype=S.dtype, device=S.device))
    model.W_K.data.copy_(math.sqrt(model.d) * S)
    return model


def topic_scores(n_topics: int, words_per_topic: int, beta: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The spec's hand-built score matrix: beta (I_T (x) J_v) between words, 0 elsewhere
    (the [MASK] row is constant)."""
    return block_matrix(n_topics, words_per_topic, check_real("beta", beta), dtype=dtype, device=device)


@torch.no_grad()
def attention_construction(n_topics: int, words_per_topic: int, c: float, beta: float, *,
                           dtype=torch.float64, device=None) -> TopicMLM:
    """The value construction with the topic score matrix beta (I_T (x) J_v) on word pairs."""
    model = value_construction(n_topics, words_per_topic, c, dtype=dtype, device=device)
    return set_scores(model, topic_scores(n_topics, words_per_topic, beta, dtype=dtype, device=device))
