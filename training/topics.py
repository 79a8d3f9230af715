"""Topic structure (Li, Li, Risteski 2023): cached fits and training runs of the one-layer
masked-LM model (:class:`mechverify.constructions.topics.TopicMLM`) and the statistics the claims read.

Runs (one frozen config -> one cache entry):

``ValueFitConfig``      stage 1: uniform attention, one-hot inputs, identity decoder; W^V and
                        the word biases fitted by L-BFGS.  With uniform attention every masked
                        token of a document sees the same context average h_bar, so the loss is a
                        multinomial logistic regression on (h_bar, label counts) per document -
                        the exact loss of the model, evaluated without the (L x L) attention.
``EmbeddingFitConfig``  uniform attention, W^V = I, decoder tied to a trained embedding E (d);
                        E and the word biases fitted by L-BFGS on the same statistics.
``AttentionFitConfig``  stage 2: W^V frozen at c* (I_T (x) J_v) (``train_value=False``) or trained
                        jointly; the one-hot score matrix S fitted by L-BFGS from 0.  Every masked
                        token attends over the visible tokens of its document: per token the
                        statistics are (query id, visible counts of the document), again exact.
``TwoStageConfig``      the full model (W^Q, W^K, W^V trained) by Adam from the official code's
                        ``zero_init_attn`` (noise sigma * U[0, 1)), on mini-batches of documents;
                        W^V contrast, attention gap and attention entropy logged along the way.
``RealTextConfig``      the real-text panel: windows of the ``pydoc_data`` documentation text
                        (:mod:`mechverify.theory.tasks.text`), topics fitted by scikit-learn's
                        LatentDirichletAllocation, the one-layer MLM (trained embedding, tied
                        decoder) trained by Adam; same-topic vs cross-topic statistics.  It
                        replaces the paper's BERT/Wikipedia measurement (no downloads).

Every fit's quality is read from the model's own forward pass on held-out documents.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mechverify.constructions.topics import (SPECIAL_LOGIT, TopicMLM, attention_scores, block_matrix, mlm_loss,
                                  set_scores)
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.symbolic.topics import optimal_block_contrast
from mechverify.theory.tasks.topics import (IGNORE, MASK, N_SPECIAL, MaskedDocuments, check_doc_len, mask_documents,
                              sample_lda, token_topic, vocab_size)
from mechverify.training.runner import Resume, catalogue, check_scale, cpu_state, optimise, register, step_seed, trained

TEST_SEED = 10**6           # held-out documents come from seeds no training set uses


# ------------------------------------------------------------------------- shared data
@dataclass(frozen=True)
class LDASetting:
    """The data of a run: generator (T, v, alpha, N range), corruption, sizes, seed."""

    n_topics: int = 10
    words_per_topic: int = 10
    alpha: float = 0.1
    doc_len: tuple = (100, 150)
    p_mask: float = 0.15
    p_random: float = 0.1
    p_keep: float = 0.1
    n_train: int = 10000
    n_test: int = 2000
    seed: int = 0

    def __post_init__(self):
        check_int("n_topics", self.n_topics, minimum=2)
        check_int("words_per_topic", self.words_per_topic)
        check_real("alpha", self.alpha, positive=True)
        check_doc_len(self.doc_len)
        check_real("p_mask", self.p_mask, positive=True)
        if self.p_mask > 1:
            raise ValueError(f"p_mask must be in (0, 1]; got {self.p_mask}")
        check_real("p_random", self.p_random, nonnegative=True)
        check_real("p_keep", self.p_keep, nonnegative=True)
        if self.p_random + self.p_keep > 1:
            raise ValueError(f"p_random + p_keep must be <= 1; got {self.p_random} + {self.p_keep}")
        check_int("n_train", self.n_train)
        check_int("n_test", self.n_test)
        check_int("seed", self.seed, minimum=0)

    @property
    def vocab(self) -> int:
        return vocab_size(self.n_topics, self.words_per_topic)

    def data(self, split: str = "train"):
        """(corpus, masked documents) of the split ("train" or "test"), reproducible."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        n, seed = (self.n_train, self.seed) if split == "train" else (self.n_test, self.seed + TEST_SEED)
        corpus = sample_lda(n, self.n_topics, self.words_per_topic, self.alpha, self.doc_len, seed)
        masked = mask_documents(corpus.tokens, corpus.vocab_size, self.p_mask, self.p_random, self.p_keep,
                                seed=seed + 1)
        return corpus, masked

    def c_star(self) -> float:
        """The block optimum of this setting (theory, 20k documents, seed 0, memoised; the corruption
        there is the default 15 % selection - the value optimum does not depend on p_random, p_keep)."""
        return _c_star(self.n_topics, self.words_per_topic, self.alpha, tuple(self.doc_len))


@functools.cache
def _c_star(n_topics: int, words_per_topic: int, alpha: float, doc_len: tuple) -> float:
    return optimal_block_contrast(n_topics, words_per_topic, alpha, doc_len)


def _check_setting(setting) -> None:
    if not isinstance(setting, LDASetting):
        raise TypeError(f"setting must be an LDASetting; got {type(setting).__name__}")


def context_statistics(corpus, masked: MaskedDocuments, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Per document: visible key counts (n_docs, vocab) and label counts (n_docs, vocab)."""
    n = corpus.tokens.shape[0]
    rows = np.repeat(np.arange(n), corpus.tokens.shape[1]).reshape(corpus.tokens.shape)
    visible = np.zeros((n, vocab))
    np.add.at(visible, (rows[masked.key_visible], corpus.tokens[masked.key_visible]), 1.0)
    labels = np.zeros((n, vocab))
    np.add.at(labels, (rows[masked.selected], corpus.tokens[masked.selected]), 1.0)
    return visible, labels


def _lbfgs(params, loss_fn, iters: int, desc: str, progress: bool, chunk: int = 25) -> list[float]:
    """Full-batch L-BFGS (strong Wolfe) for ``iters`` iterations in chunks, with a progress bar;
    returns the loss after each chunk."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=chunk, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    losses = []
    bar = tqdm(range(0, iters, chunk), desc=desc, disable=None if progress else True, leave=False)
    for _ in bar:
        opt.step(closure)
        with torch.no_grad():
            losses.append(float(loss_fn()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if len(losses) > 1 and abs(losses[-2] - losses[-1]) < 1e-10:
            break
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"{desc}: L-BFGS diverged (loss {losses[-1]})")
    return losses


def _word_logits_loss(word_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over word-label counts (n, T v); word logits (n, T v), special outputs fixed at -50."""
    n = word_logits.shape[0]
    special = torch.full((n, N_SPECIAL), SPECIAL_LOGIT, dtype=word_logits.dtype)
    logp = torch.log_softmax(torch.cat([special, word_logits], dim=1), dim=1)
    return -(labels * logp[:, N_SPECIAL:]).sum() / labels.sum()


@torch.no_grad()
def heldout_loss(model: TopicMLM, setting: LDASetting, batch: int = 250) -> float:
    """Mean masked-token cross-entropy of ``model`` (its own forward) on the test documents."""
    corpus, masked = setting.data("test")
    total, count = 0.0, 0
    for i in range(0, corpus.tokens.shape[0], batch):
        ids = torch.from_numpy(masked.inputs[i:i + batch])
        vis = torch.from_numpy(masked.key_visible[i:i + batch])
        lab = torch.from_numpy(masked.labels[i:i + batch])
        k = int((lab != IGNORE).sum())
        total += float(mlm_loss(model, ids, vis, lab)) * k
        count += k
    return total / count


# ------------------------------------------------------------------------- stage 1: W^V
@dataclass(frozen=True)
class ValueFitConfig:
    """W^V fit under frozen uniform attention (module doc)."""

    setting: LDASetting = LDASetting()
    iters: int = 300                  # L-BFGS iterations (at most)

    def __post_init__(self):
        _check_setting(self.setting)
        check_int("iters", self.iters)


def fit_value(config: ValueFitConfig, progress: bool = True) -> dict:
    s = config.setting
    V = s.vocab
    visible, labels = context_statistics(*s.data("train"), V)
    hbar = torch.from_numpy(visible / visible.sum(axis=1, keepdims=True))
    labels = torch.from_numpy(labels[:, N_SPECIAL:])
    W = torch.zeros(V - N_SPECIAL, V, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(V - N_SPECIAL, dtype=torch.float64, requires_grad=True)
    losses = _lbfgs([W, b], lambda: _word_logits_loss(hbar @ W.T + b, labels), config.iters,
                    "fit W^V (uniform attention)", progress)
    return {"W": W.detach(), "b": b.detach(), "train_loss": torch.tensor(losses)}


def value_model(config: ValueFitConfig, payload: dict) -> TopicMLM:
    """The fitted stage-1 model as a :class:`TopicMLM` (uniform attention)."""
    model = TopicMLM(config.setting.vocab)
    with torch.no_grad():
        model.W_V[N_SPECIAL:] = payload["W"]
        model.b_dec[N_SPECIAL:] = payload["b"]
        model.b_dec[:N_SPECIAL] = SPECIAL_LOGIT
    return model


register(ValueFitConfig, train=fit_value, load=value_model, cpu_only=True)
trained_value = trained              # the runner's trained(config): eval mode, grads off


def column_contrasts(W, n_topics: int, words_per_topic: int) -> np.ndarray:
    """D_j = mean_{i in t(j)} W_ij - mean_{i not in t(j)} W_ij over word rows i, word columns j
    (gauge invariant: column shifts cancel)."""
    W = np.asarray(W, dtype=np.float64)
    T, v = n_topics, words_per_topic
    Ww = W[-T * v:, -T * v:] if W.shape[0] != T * v else W[:, N_SPECIAL:]
    same = np.kron(np.eye(T), np.ones((v, v))).astype(bool)
    return np.array([Ww[same[:, j], j].mean() - Ww[~same[:, j], j].mean() for j in range(T * v)])


def diagonal_vs_same_topic(W, n_topics: int, words_per_topic: int) -> tuple[float, float]:
    """(mean diagonal, mean same-topic off-diagonal) of the column-centred word block of W."""
    W = np.asarray(W, dtype=np.float64)
    T, v = n_topics, words_per_topic
    Ww = W[-T * v:, -T * v:] if W.shape[0] != T * v else W[:, N_SPECIAL:]
    Wc = Ww - Ww.mean(axis=0, keepdims=True)
    same = np.kron(np.eye(T), np.ones((v, v))).astype(bool)
    eye = np.eye(T * v, dtype=bool)
    return float(Wc[eye].mean()), float(Wc[same & ~eye].mean())


# ------------------------------------------------------------------------- embeddings
@dataclass(frozen=True)
class EmbeddingFitConfig:
    """E fit (tied decoder, W^V = I, uniform attention) with embedding width ``d``."""

    setting: LDASetting = LDASetting()
    d: int = 16
    init_scale: float = 0.1           # E from N(0, init_scale^2)
    iters: int = 400

    def __post_init__(self):
        _check_setting(self.setting)
        check_int("d", self.d)
        check_real("init_scale", self.init_scale, positive=True)
        check_int("iters", self.iters)


def fit_embedding(config: EmbeddingFitConfig, progress: bool = True) -> dict:
    s = config.setting
    visible, labels = context_statistics(*s.data("train"), s.vocab)
    hbar = torch.from_numpy(visible / visible.sum(axis=1, keepdims=True))
    labels = torch.from_numpy(labels[:, N_SPECIAL:])
    gen = torch.Generator().manual_seed(s.seed)
    E = (config.init_scale * torch.randn(s.vocab, config.d, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(s.vocab - N_SPECIAL, dtype=torch.float64, requires_grad=True)
    losses = _lbfgs([E, b], lambda: _word_logits_loss((hbar @ E) @ E[N_SPECIAL:].T + b, labels), config.iters,
                    f"fit E (d = {config.d})", progress)
    return {"E": E.detach(), "b": b.detach(), "train_loss": torch.tensor(losses)}


def embedding_model(config: EmbeddingFitConfig, payload: dict) -> TopicMLM:
    model = TopicMLM(config.setting.vocab, config.d, decoder="tied")
    with torch.no_grad():
        model.embedding.copy_(payload["E"])
        model.W_V.copy_(torch.eye(config.d, dtype=torch.float64))
        model.b_dec[N_SPECIAL:] = payload["b"]
        model.b_dec[:N_SPECIAL] = SPECIAL_LOGIT
    return model


register(EmbeddingFitConfig, train=fit_embedding, load=embedding_model, cpu_only=True)
trained_embedding = trained


def embedding_statistics(E, word_topic) -> dict:
    """Same-topic vs cross-topic statistics of word embeddings ``E`` (n_words, d) with topics
    ``word_topic`` (-1 = no topic, left out): mean inner products (off-diagonal), mean cosines,
    the contrast of the double-centred Gram matrix, and the fraction of words whose worst
    same-topic partner is closer (inner product) than their best cross-topic word."""
    E = np.asarray(E, dtype=np.float64)
    word_topic = np.asarray(word_topic)
    keep = word_topic >= 0
    E, t = E[keep], word_topic[keep]
    G = E @ E.T
    norms = np.linalg.norm(E, axis=1)
    C = G / np.maximum(np.outer(norms, norms), 1e-300)
    same = t[:, None] == t[None, :]
    off = ~np.eye(len(t), dtype=bool)
    Gc = G - G.mean(axis=0, keepdims=True) - G.mean(axis=1, keepdims=True) + G.mean()
    worst_same = np.where(same & off, G, np.inf).min(axis=1)
    best_cross = np.where(~same, G, -np.inf).max(axis=1)
    has_pair = (same & off).any(axis=1) & (~same).any(axis=1)
    return {"same_inner": float(G[same & off].mean()), "cross_inner": float(G[~same].mean()),
            "contrast": float(G[same & off].mean() - G[~same].mean()),
            "centred_contrast": float(Gc[same & off].mean() - Gc[~same].mean()),
            "diag_inner": float(np.diag(G).mean()),
            "same_cos": float(C[same & off].mean()), "cross_cos": float(C[~same].mean()),
            "separated_fraction": float(np.mean((worst_same > best_cross)[has_pair]))}


# ------------------------------------------------------------------------- stage 2: attention
@dataclass(frozen=True)
class AttentionFitConfig:
    """S fit from 0 with W^V frozen at c_value (I_T (x) J_v) (``train_value=False``; c_value
    None = the theory's c*) or W^V and the word biases fitted jointly (``train_value=True``)."""

    setting: LDASetting = LDASetting(n_train=6000)
    train_value: bool = False
    c_value: float | None = None
    iters: int = 300

    def __post_init__(self):
        _check_setting(self.setting)
        if not isinstance(self.train_value, bool):
            raise TypeError(f"train_value must be a bool; got {type(self.train_value).__name__}")
        if self.c_value is not None:
            check_real("c_value", self.c_value)
            if self.train_value:
                raise ValueError("c_value is only used with train_value=False")
        check_int("iters", self.iters)


def masked_token_groups(corpus, masked: MaskedDocuments, vocab: int):
    """The masked tokens grouped by (document, query id): tokens of one group see the same
    attention distribution.  Returns per group the query id, the document's visible key
    counts (n_groups, vocab) and the label counts over words (n_groups, T v) - an exact
    reduction of the masked-token loss."""
    visible, _ = context_statistics(corpus, masked, vocab)
    doc, pos = np.nonzero(masked.selected)
    query, label = masked.inputs[doc, pos], corpus.tokens[doc, pos]
    groups, inverse = np.unique(doc * vocab + query, return_inverse=True)
    labels = np.zeros((groups.size, vocab - N_SPECIAL))
    np.add.at(labels, (inverse, label - N_SPECIAL), 1.0)
    return groups % vocab, visible[groups // vocab], labels


def fit_attention(config: AttentionFitConfig, progress: bool = True) -> dict:
    s = config.setting
    V, T, v = s.vocab, s.n_topics, s.words_per_topic
    query, counts, labels = masked_token_groups(*s.data("train"), V)
    query, labels = torch.from_numpy(query), torch.from_numpy(labels)
    log_counts = torch.log(torch.from_numpy(counts))                     # -inf at absent tokens
    S = torch.zeros(V, V, dtype=torch.float64, requires_grad=True)
    c = s.c_star() if config.c_value is None else config.c_value
    W = torch.zeros(V - N_SPECIAL, V, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(V - N_SPECIAL, dtype=torch.float64, requires_grad=True)
    # frozen W^V = c (I_T (x) J_v): word logits are c * (attention mass of the word's topic),
    # so only the T topic masses are needed (special outputs at -50 add < 1e-20 to the loss)
    topic_of = torch.from_numpy(token_topic(T, v))
    to_topic = torch.zeros(V, T, dtype=torch.float64)
    to_topic[topic_of >= 0, topic_of[topic_of >= 0]] = 1.0
    label_topics = labels.reshape(-1, T, v).sum(dim=2)

    def loss_fn():
        a = torch.softmax(log_counts + S[query], dim=1)                  # attention mass per key token
        if config.train_value:
            return _word_logits_loss(a @ W.T + b, labels)
        z = c * (a @ to_topic)
        return -(label_topics * (z - torch.logsumexp(z, dim=1, keepdim=True))).sum() / labels.sum() + math.log(v)

    params = [S, W, b] if config.train_value else [S]
    losses = _lbfgs(params, loss_fn, config.iters, "fit S" + (" and W^V" if config.train_value else ""), progress)
    W_out = W.detach() if config.train_value else block_matrix(T, v, c)[N_SPECIAL:]
    b_out = b.detach() if config.train_value else torch.zeros(V - N_SPECIAL, dtype=torch.float64)
    return {"S": S.detach(), "W": W_out, "b": b_out, "c_value": float(c), "train_loss": torch.tensor(losses)}


def attention_model(config: AttentionFitConfig, payload: dict) -> TopicMLM:
    model = TopicMLM(config.setting.vocab)
    with torch.no_grad():
        model.W_V[N_SPECIAL:] = payload["W"]
        model.b_dec[N_SPECIAL:] = payload["b"]
        model.b_dec[:N_SPECIAL] = SPECIAL_LOGIT
    return set_scores(model, payload["S"])


register(AttentionFitConfig, train=fit_attention, load=attention_model, cpu_only=True)
trained_attention = trained


def score_categories(S, n_topics: int, words_per_topic: int) -> dict:
    """Row-centred scores of word queries (centred over word keys): means of same token, same
    topic (other tokens), cross topic; per-query gaps (same topic - cross topic); and the
    [MASK] row: sd of its topic means and mean within-topic sd."""
    S = np.asarray(S, dtype=np.float64)
    T, v = n_topics, words_per_topic
    Sw = S[N_SPECIAL:, N_SPECIAL:]
    Sc = Sw - Sw.mean(axis=1, keepdims=True)
    same = np.kron(np.eye(T), np.ones((v, v))).astype(bool)
    eye = np.eye(T * v, dtype=bool)
    gaps = np.array([Sc[i, same[i] & ~eye[i]].mean() - Sc[i, ~same[i]].mean() for i in range(T * v)])
    mask_row = S[MASK, N_SPECIAL:].reshape(T, v)
    return {"same_token": float(Sc[eye].mean()), "same_topic": float(Sc[same & ~eye].mean()),
            "cross_topic": float(Sc[~same].mean()), "gap": float(gaps.mean()), "median_gap": float(np.median(gaps)),
            "mask_topic_sd": float(mask_row.mean(axis=1).std()), "mask_within_sd": float(mask_row.std(axis=1).mean())}


@torch.no_grad()
def attention_by_category(model: TopicMLM, inputs, key_visible, topic_of_token, word_queries_only: bool = True,
                          batch: int = 100) -> dict:
    """The official code's binning: average attention weight over (query, key) pairs that are
    the same token, same topic (other token), cross topic, or involve a topic-less key (special
    or no topic).  Queries: positions whose input is a word with a topic (all non-PAD positions
    when ``word_queries_only`` is False).  Returns the four averages and the pair counts."""
    inputs = np.asarray(inputs)
    key_visible = np.asarray(key_visible)
    topic_of_token = np.asarray(topic_of_token)
    sums, counts = np.zeros(4), np.zeros(4)
    for i in range(0, inputs.shape[0], batch):
        ids, vis = inputs[i:i + batch], key_visible[i:i + batch]
        _, pattern = model(torch.from_numpy(ids), torch.from_numpy(vis), return_pattern=True)
        A = pattern.numpy()
        tq = topic_of_token[ids]
        q_ok = (tq >= 0) if word_queries_only else (ids != 0)
        pair = q_ok[:, :, None] & vis[:, None, :]
        tk = tq[:, None, :]
        same_tok = ids[:, :, None] == ids[:, None, :]
        same_top = (tq[:, :, None] == tk) & (tk >= 0) & ~same_tok
        cross = (tq[:, :, None] != tk) & (tk >= 0) & (tq[:, :, None] >= 0)
        other = pair & ~(same_tok | same_top | cross)
        for k, sel in enumerate((pair & same_tok, pair & same_top, pair & cross, other)):
            sums[k] += A[sel].sum()
            counts[k] += sel.sum()
    avg = sums / np.maximum(counts, 1)
    return {"same_token": float(avg[0]), "same_topic": float(avg[1]), "cross_topic": float(avg[2]),
            "topicless": float(avg[3]), "counts": counts.astype(int).tolist()}


@torch.no_grad()
def label_topic_gap(model: TopicMLM, setting: LDASetting) -> float:
    """At the masked test positions: mean row-centred score (centred over the visible word
    keys) of keys sharing the label's topic minus that of keys of other topics - the topic
    signal the attention actually uses, whatever the query token."""
    corpus, masked = setting.data("test")
    S = attention_scores(model).numpy()
    tt = token_topic(setting.n_topics, setting.words_per_topic)
    gaps = []
    for d_, p in zip(*np.nonzero(masked.selected)):
        keys = corpus.tokens[d_][masked.key_visible[d_] & (corpus.tokens[d_] >= N_SPECIAL)]
        if keys.size == 0:
            continue
        row = S[masked.inputs[d_, p], keys]
        row = row - row.mean()
        same = tt[keys] == corpus.topics[d_, p]
        if same.any() and (~same).any():
            gaps.append(row[same].mean() - row[~same].mean())
    return float(np.mean(gaps))


# ------------------------------------------------------------------------- two-stage training
@dataclass(frozen=True)
class TwoStageConfig:
    """Joint Adam training of W^Q, W^K, W^V (and b_V) from noise sigma * U[0, 1)."""

    setting: LDASetting = LDASetting(n_train=5000, n_test=200)
    sigma: float = 1e-2
    epochs: int = 5
    batch: int = 40
    lr: float = 0.01
    log_every: int = 5
    n_eval: int = 40                  # test documents for the logged attention entropy

    def __post_init__(self):
        _check_setting(self.setting)
        check_real("sigma", self.sigma, positive=True)
        for name in ("epochs", "batch", "log_every", "n_eval"):
            check_int(name, getattr(self, name))
        check_real("lr", self.lr, positive=True)
        if self.n_eval > self.setting.n_test:
            raise ValueError(f"n_eval must be <= setting.n_test = {self.setting.n_test}; got {self.n_eval}")


def build_two_stage(config: TwoStageConfig) -> TopicMLM:
    s = config.setting
    model = TopicMLM(s.vocab, dtype=torch.float32)
    gen = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        for p in (model.W_Q, model.W_K, model.W_V):
            p.copy_(config.sigma * torch.rand(p.shape, generator=gen))
    model.b_dec.requires_grad_(False)            # identity decoder, zero bias (frozen)
    return model


@torch.no_grad()
def attention_entropy_ratio(model: TopicMLM, ids, vis, selected) -> float:
    """Mean over masked positions of entropy(attention) / log(visible keys)."""
    _, pattern = model(ids, vis, return_pattern=True)
    P = pattern[selected]
    H = -(P * torch.log(P.clamp_min(1e-30))).sum(dim=1)
    n_keys = vis.sum(dim=1, keepdim=True).expand_as(selected)[selected].to(H.dtype)
    return float((H / torch.log(n_keys)).mean())


def train_two_stage(config: TwoStageConfig, progress: bool = True, device: str | torch.device = "cpu") -> dict:
    s = config.setting
    device = torch.device(device)
    model = build_two_stage(config).to(device)
    corpus, masked = s.data("train")
    inputs, vis, labels = (torch.from_numpy(a).to(device) for a in (masked.inputs, masked.key_visible, masked.labels))
    _, test = s.data("test")
    e_ids, e_vis, e_sel = (torch.from_numpy(a[:config.n_eval]).to(device)
                           for a in (test.inputs, test.key_visible, test.selected))
    n = inputs.shape[0]
    per_epoch = math.ceil(n / config.batch)
    orders = [torch.from_numpy(np.random.default_rng(step_seed(s.seed, e)).permutation(n)).to(device)
              for e in range(config.epochs)]
    params = [model.W_Q, model.W_K, model.W_V, model.b_V]
    opt = torch.optim.Adam(params, lr=config.lr)
    T, v = s.n_topics, s.words_per_topic
    log = {"contrast": [], "gap": [], "entropy": []}

    def record():
        log["contrast"].append(float(column_contrasts(model.W_V.detach().cpu().numpy(), T, v).mean()))
        log["gap"].append(score_categories(attention_scores(model).detach().cpu().numpy(), T, v)["gap"])
        log["entropy"].append(attention_entropy_ratio(model, e_ids, e_vis, e_sel))

    def step_loss(step):
        e, k = divmod(step - 1, per_epoch)
        idx = orders[e][k * config.batch:(k + 1) * config.batch]
        return mlm_loss(model, inputs[idx], vis[idx], labels[idx])

    record()
    log_steps, losses = optimise(opt, step_loss, steps=config.epochs * per_epoch, log_every=config.log_every,
                                 desc=f"two-stage sigma={config.sigma:g}", progress=progress, lr=config.lr,
                                 on_log=record, resume=Resume(config, model, device, logs=log))
    return {"state": cpu_state(model), "log_steps": torch.tensor([0] + log_steps),
            "loss": torch.tensor([float("nan")] + losses),
            **{k: torch.tensor(val) for k, val in log.items()}}


register(TwoStageConfig, train=train_two_stage, build=build_two_stage)
trained_two_stage = trained


# ------------------------------------------------------------------------- real text
@dataclass(frozen=True)
class RealTextConfig:
    """The real-text panel: ``pydoc_data`` windows, sklearn LDA topics, one-layer MLM."""

    vocab_words: int = 400            # most frequent non-stop words kept (length >= 3)
    window: int = 32                  # words per document (consecutive in-vocabulary words)
    n_topics: int = 10                # LDA topics
    topic_confidence: float = 0.5     # a word gets a topic when p(topic | word) >= this
    d: int = 32                       # embedding width
    epochs: int = 30
    batch: int = 32
    lr: float = 0.01
    init_scale: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("vocab_words", "window", "n_topics", "d", "epochs", "batch"):
            check_int(name, getattr(self, name))
        if self.window < 4:
            raise ValueError(f"window must be >= 4; got {self.window}")
        c = check_real("topic_confidence", self.topic_confidence, positive=True)
        if c > 1:
            raise ValueError(f"topic_confidence must be in (0, 1]; got {c}")
        check_real("lr", self.lr, positive=True)
        check_real("init_scale", self.init_scale, positive=True)
        check_int("seed", self.seed, minimum=0)


def real_text_corpus(config: RealTextConfig) -> dict:
    """Windows of the pydoc_data text as token arrays (START, words, END), the word list, the
    train/test split (every 7th window is held out), LDA word topics (-1 = topic-less)."""
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from mechverify.theory.tasks.text import build_vocabulary, pydoc_documents, words

    docs = [[w for w in words(t) if len(w) >= 3 and w not in ENGLISH_STOP_WORDS] for t in pydoc_documents("topic")]
    vocab = build_vocabulary(docs, max_size=config.vocab_words)
    windows = []
    for doc in docs:
        ids = vocab.encode(doc)
        ids = ids[ids != vocab.unk]
        windows += [ids[i:i + config.window] for i in range(0, len(ids) - config.window // 2, config.window)]
    W = len(vocab.tokens)
    tokens = np.zeros((len(windows), config.window + 2), dtype=np.int64)
    counts = np.zeros((len(windows), W))
    for k, ids in enumerate(windows):
        tokens[k, 0], tokens[k, 1:len(ids) + 1], tokens[k, len(ids) + 1] = 2, ids + N_SPECIAL, 3
        np.add.at(counts[k], ids, 1.0)
    lda = LatentDirichletAllocation(n_components=config.n_topics, learning_method="batch", max_iter=50,
                                    random_state=config.seed)
    lda.fit(counts)
    post = lda.components_ / lda.components_.sum(axis=0, keepdims=True)          # p(topic | word), flat prior
    word_topic = np.where(post.max(axis=0) >= config.topic_confidence, post.argmax(axis=0), -1)
    test = np.arange(len(windows)) % 7 == 6
    return {"tokens": tokens, "words": vocab.tokens, "word_topic": word_topic, "test": test}


def train_real_text(config: RealTextConfig, progress: bool = True, device: str | torch.device = "cpu") -> dict:
    data = real_text_corpus(config)
    tokens, test = data["tokens"], data["test"]
    V = N_SPECIAL + len(data["words"])
    device = torch.device(device)
    model = TopicMLM(V, config.d, decoder="tied", dtype=torch.float32)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for p in (model.embedding, model.W_Q, model.W_K, model.W_V):
            p.copy_(config.init_scale * torch.randn(p.shape, generator=gen))
    model.to(device)
    train = tokens[~test]
    n = train.shape[0]
    per_epoch = math.ceil(n / config.batch)
    # dynamic masking: a fresh corruption of each batch (the corpus is small)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step_loss(step):
        e, k = divmod(step - 1, per_epoch)
        order = np.random.default_rng(step_seed(config.seed, e)).permutation(n)
        batch = train[order[k * config.batch:(k + 1) * config.batch]]
        m = mask_documents(batch, V, seed=step_seed(config.seed + 1, step))
        ids, vis, lab = (torch.from_numpy(a).to(device) for a in (m.inputs, m.key_visible, m.labels))
        return mlm_loss(model, ids, vis, lab)

    log_steps, losses = optimise(opt, step_loss, steps=config.epochs * per_epoch, log_every=per_epoch,
                                 desc="real text MLM", progress=progress, lr=config.lr,
                                 resume=Resume(config, model, device))
    return {"state": cpu_state(model), "log_steps": torch.tensor(log_steps), "loss": torch.tensor(losses),
            "word_topic": torch.from_numpy(data["word_topic"]), "words": list(data["words"])}


def real_text_model(config: RealTextConfig, payload: dict) -> TopicMLM:
    """The trained real-text model (its vocabulary size comes from the payload)."""
    model = TopicMLM(N_SPECIAL + len(payload["words"]), config.d, decoder="tied", dtype=torch.float32)
    model.load_state_dict(payload["state"])
    return model


register(RealTextConfig, train=train_real_text, load=real_text_model)
trained_real_text = trained


def real_text_statistics(config: RealTextConfig, model: TopicMLM, payload: dict) -> dict:
    """Same-topic vs cross-topic embedding and attention statistics on the held-out windows."""
    data = real_text_corpus(config)
    word_topic = payload["word_topic"].numpy()
    emb = embedding_statistics(model.embedding.detach().numpy()[N_SPECIAL:], word_topic)
    topic_of_token = np.concatenate([np.full(N_SPECIAL, -1), word_topic])
    held = data["tokens"][data["test"]]
    m = mask_documents(held, model.vocab, seed=config.seed + 7)
    # attention as the model is used at test time: no key hidden, uncorrupted input
    attn = attention_by_category(model, held, held != 0, topic_of_token)
    attn_masked = attention_by_category(model, m.inputs, m.key_visible, topic_of_token)
    return {"embedding": emb, "attention": attn, "attention_masked_input": attn_masked,
            "n_topic_words": int((word_topic >= 0).sum()), "n_words": int(word_topic.size),
            "n_test_windows": int(held.shape[0])}


# ------------------------------------------------------------------------- run catalogue
@catalogue
def runs(scale: str = "quick") -> dict:
    """The topic runs by name.  ``quick``: CPU minutes; ``paper``: larger data, more
    iterations and epochs.

    ``value_T<T>_a<alpha>``  stage-1 W^V fits (uniform attention) for T topics, Dirichlet alpha
    ``embedding_d<d>``       embedding fits of width d
    ``attention``            stage-2 S fit with W^V frozen at c*; ``ablation``: no random/keep
                             corruption, W^V trained jointly
    ``two_stage_<sigma>``    the full model by Adam from three init scales
    ``real_text``            the real-text panel"""
    big = check_scale(scale) == "paper"
    base = LDASetting(n_train=30000 if big else 10000, n_test=5000 if big else 2000)
    att = dataclasses.replace(base, n_train=20000 if big else 6000)
    two = dataclasses.replace(base, n_train=10000 if big else 5000, n_test=200)
    value_settings = ((10, 0.1), (10, 0.5), (5, 0.1)) + (((10, 1.0), (20, 0.1)) if big else ())
    return {
        **{f"value_T{T}_a{a:g}": ValueFitConfig(dataclasses.replace(base, n_topics=T, alpha=a),
                                                iters=600 if big else 200) for T, a in value_settings},
        **{f"embedding_d{d}": EmbeddingFitConfig(base, d=d, iters=800 if big else 300) for d in (2, 4, 8, 16)},
        "attention": AttentionFitConfig(att, iters=600 if big else 300),
        "ablation": AttentionFitConfig(dataclasses.replace(att, p_random=0.0, p_keep=0.0), train_value=True,
                                       iters=600 if big else 300),
        **{f"two_stage_{sig:g}": TwoStageConfig(two, sigma=sig, epochs=20 if big else 5, n_eval=20)
           for sig in (1e-3, 1e-2, 1e-1)},
        "real_text": RealTextConfig(epochs=60 if big else 30),
    }
