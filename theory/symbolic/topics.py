"""The block optimum of the value matrix on LDA data (docs/topics.md §4;
derivations and numbers are our reconstruction, not the paper's statements).

Model (clean, stage 1): uniform attention over the visible keys of a document, one-hot inputs,
identity decoder.  Every masked token of a document sees the same context average h_bar, with
topic masses s_t = (visible words of topic t) / (visible keys, START and END included).  With
W^V = a on same-topic word pairs and b elsewhere (special outputs at -inf) the logit of word w is
c * s_{t(w)} + const, c = a - b, so the loss per masked token is

    L(c) = E[ sum_t m_t (-c s_t + LSE(c s)) ] / E[sum_t m_t] + log v,       (m_t: masked words of topic t)
    L'(c) = E[ -sum_t m_t s_t + M <s, softmax(c s)> ] / E[M],  M = sum_t m_t.

N -> infinity: s = theta, m proportional to theta, and L'(c) = 0 reads
E <theta, softmax(c theta)> = E |theta|^2 = (1 + alpha) / (1 + T alpha)   (the stationarity identity).

* :func:`dirichlet_moments` - sympy: the generic Dirichlet moment formula specialised to
  E theta_t^2, E theta_s theta_t, E |theta|^2 and their closed forms;
* :func:`block_statistics` / :func:`block_loss` / :func:`block_loss_derivative` - the
  finite-length objective on sampled documents with the code-exact masking;
* :func:`optimal_block_contrast` - c* (finite lengths: 1-D minimisation; ``doc_len=None``: the
  root of the stationarity identity, :func:`limit_block_contrast`);
* :func:`limit_block_contrast` - the N -> infinity root with its error: a pilot root on 2^16
  draws, then one Newton step on 2^22 draws with the control variates sum_t theta_t^k, k = 2..6
  (their means are exact Dirichlet moments), which cut the variance 100-1000 fold;
* :func:`equal_weight_loss` - sympy: the equal-weight tau-topic loss, whose derivative is
  negative for every c (c* diverges);
* :func:`bayes_loss` - the posterior-predictive (Bayes) loss on the same masked tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax
from tqdm.auto import tqdm

from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.topics import check_doc_len, mask_documents, sample_lda


# ---------------------------------------------------------------- Dirichlet moments (sympy)
def dirichlet_moment(alpha_vec, powers):
    """E prod_i theta_i^{k_i} for theta ~ Dirichlet(alpha_vec): Gamma(A)/Gamma(A + K) *
    prod_i Gamma(alpha_i + k_i)/Gamma(alpha_i), simplified."""
    A, K = sum(alpha_vec), sum(powers)
    expr = sp.gamma(A) / sp.gamma(A + K)
    for a, k in zip(alpha_vec, powers):
        expr *= sp.gamma(a + k) / sp.gamma(a)
    return sp.simplify(sp.gammasimp(expr))


def dirichlet_moments(T=None, alpha=None) -> dict:
    """Symbolic moments of Dirichlet(alpha * 1_T) (symbols when T or alpha is None):
    ``second`` = E theta_t^2, ``cross`` = E theta_s theta_t (s != t), ``norm2`` = E|theta|^2 =
    T * second, ``pair_same_topic`` = P(two tokens share a topic) = norm2 (with their closed
    forms under ``*_closed``)."""
    T = sp.Symbol("T", positive=True, integer=True) if T is None else sp.Integer(check_int("T", T))
    alpha = sp.Symbol("alpha", positive=True) if alpha is None else sp.nsimplify(alpha)
    # Aggregation: (theta_t, theta_s, rest) ~ Dirichlet(alpha, alpha, (T - 2) alpha).
    agg = (alpha, alpha, (T - 2) * alpha)
    second = dirichlet_moment(agg, (2, 0, 0))
    cross = dirichlet_moment(agg, (1, 1, 0))
    norm2 = sp.simplify(T * second)
    return {"second": second, "cross": cross, "norm2": norm2, "pair_same_topic": norm2,
            "second_closed": (alpha + 1) / (T * (T * alpha + 1)),
            "cross_closed": alpha / (T * (T * alpha + 1)),
            "norm2_closed": (1 + alpha) / (1 + T * alpha)}


def pair_same_topic_probability(n_topics: int, alpha: float) -> float:
    """(1 + alpha) / (1 + T alpha): P(two tokens of one document share a topic)."""
    T, alpha = check_int("n_topics", n_topics), check_real("alpha", alpha, positive=True)
    return (1 + alpha) / (1 + T * alpha)


# ---------------------------------------------------------------- finite-length objective
@dataclass(frozen=True)
class BlockStatistics:
    """Per document: topic masses ``s`` (n_docs, T) of the visible context, masked-word
    counts per topic ``m`` (n_docs, T), and the block size ``v``."""

    s: np.ndarray
    m: np.ndarray
    words_per_topic: int


def block_statistics(n_topics: int, words_per_topic: int, alpha: float, doc_len, n_docs: int = 20000,
                     seed: int = 0, p_mask: float = 0.15, p_random: float = 0.1,
                     p_keep: float = 0.1) -> BlockStatistics:
    """Sample ``n_docs`` documents and one corruption (seeds ``seed`` and ``seed + 1``) and
    reduce them to the sufficient statistics of the block objective."""
    corpus = sample_lda(n_docs, n_topics, words_per_topic, alpha, doc_len, seed)
    masked = mask_documents(corpus.tokens, corpus.vocab_size, p_mask, p_random, p_keep, seed=seed + 1)
    return statistics_from(corpus.topics, masked.selected, masked.key_visible, n_topics, words_per_topic)


def statistics_from(topics, selected, key_visible, n_topics: int, words_per_topic: int) -> BlockStatistics:
    """Block statistics from per-position topics (-1 = special/PAD), selected and visible masks."""
    T = n_topics
    onehot = topics[:, :, None] == np.arange(T)[None, None, :]
    n_keys = key_visible.sum(axis=1)
    s = (onehot & key_visible[:, :, None]).sum(axis=1) / n_keys[:, None]
    m = (onehot & selected[:, :, None]).sum(axis=1).astype(np.float64)
    return BlockStatistics(s.astype(np.float64), m, words_per_topic)


def block_loss(c: float, stats: BlockStatistics) -> float:
    """L(c) per masked token (module doc)."""
    lse = logsumexp(c * stats.s, axis=1)
    total = np.sum(stats.m * (-c * stats.s + lse[:, None]))
    return float(total / stats.m.sum() + np.log(stats.words_per_topic))


def block_loss_derivative(c: float, stats: BlockStatistics) -> float:
    """L'(c) per masked token (module doc)."""
    M = stats.m.sum(axis=1)
    inner = np.sum(stats.s * softmax(c * stats.s, axis=1), axis=1)
    return float((-np.sum(stats.m * stats.s) + np.sum(M * inner)) / M.sum())


def minimise_block_loss(stats: BlockStatistics, bracket=(0.0, 60.0)) -> float:
    """argmin_c L(c) by bounded Brent minimisation (xatol 1e-9)."""
    res = minimize_scalar(lambda c: block_loss(c, stats), bounds=bracket, method="bounded",
                          options={"xatol": 1e-9})
    return float(res.x)


# ---------------------------------------------------------------- N -> infinity
def theta_samples(n_topics: int, alpha: float, n_docs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(n_topics, alpha), size=n_docs)


def stationarity_residual(c, theta: np.ndarray, target: float) -> float:
    """E_theta <theta, softmax(c theta)> - target on the draws ``theta`` (mpmath-friendly)."""
    c = float(c)
    return float(np.mean(np.sum(theta * softmax(c * theta, axis=1), axis=1)) - target)


def limit_loss(c: float, theta: np.ndarray, words_per_topic: int) -> float:
    """N -> infinity loss per masked token: E[-c |theta|^2 + LSE(c theta)] + log v."""
    return float(np.mean(-c * np.sum(theta ** 2, axis=1) + logsumexp(c * theta, axis=1))
                 + np.log(words_per_topic))


def optimal_block_contrast(n_topics: int, words_per_topic: int, alpha: float, doc_len, n_docs: int | None = None,
                           seed: int = 0) -> float:
    """The optimal block contrast c* = a - b of the value matrix under uniform attention.

    ``doc_len=(lo, hi)``: minimiser of the finite-length objective on ``n_docs`` documents
    (default 20 000) with the code-exact masking.  ``doc_len=None``: N -> infinity, the root of
    E <theta, softmax(c theta)> = (1 + alpha)/(1 + T alpha) by :func:`limit_block_contrast` on
    ``n_docs`` draws of theta (default 2^24: error <= ~1e-4, see there).
    """
    T, v = check_int("n_topics", n_topics), check_int("words_per_topic", words_per_topic)
    if T < 2:
        raise ValueError(f"n_topics must be >= 2 (one topic has no contrast); got {T}")
    alpha = check_real("alpha", alpha, positive=True)
    seed = check_int("seed", seed, minimum=0)
    if doc_len is not None:
        check_doc_len(doc_len)
        n_docs = 20_000 if n_docs is None else check_int("n_docs", n_docs)
        return minimise_block_loss(block_statistics(T, v, alpha, doc_len, n_docs, seed))
    n_docs = 2 ** 24 if n_docs is None else check_int("n_docs", n_docs)
    return limit_block_contrast(T, alpha, n_docs, seed)[0]


def _root_bracketed(theta: np.ndarray, target: float) -> float:
    """The root of the sample stationarity residual (increasing in c: its derivative is E Var > 0)."""
    lo, hi = 0.0, 1.0
    while stationarity_residual(hi, theta, target) < 0:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise ValueError("no finite c* (the stationarity identity has no root below 1e4)")
    return float(mpmath.findroot(lambda c: stationarity_residual(c, theta, target), (lo, hi),
                                 solver="anderson", tol=1e-24))


def _power_sum_means(T: int, alpha: float, powers) -> np.ndarray:
    """E sum_t theta_t^k = T (alpha)_k / (T alpha)_k for theta ~ Dirichlet(alpha 1_T) (rising factorials)."""
    out = []
    for k in powers:
        num = np.prod([alpha + j for j in range(k)])
        den = np.prod([T * alpha + j for j in range(k)])
        out.append(T * num / den)
    return np.array(out)


CV_POWERS = (2, 3, 4, 5, 6)


def limit_block_contrast(n_topics: int, alpha: float, n_draws: int = 2 ** 22, seed: int = 0,
                         chunk: int = 2 ** 18, progress: bool = False) -> tuple[float, float]:
    """(c*, error) of the N -> infinity root of r(c) = E <theta, softmax(c theta)> - E|theta|^2,
    theta ~ Dirichlet(alpha 1_T).

    1. pilot: the root c0 of the sample residual on min(n_draws, 2^16) draws (mpmath);
    2. on ``n_draws`` fresh draws (chunks of ``chunk``), at c0: g = <theta, softmax(c0 theta)>,
       its c-derivatives g' = Var_softmax(theta) and g'', and the control variates
       x_k = sum_t theta_t^k, k = 2..6, whose means T (alpha)_k / (T alpha)_k are exact;
       r_hat = mean(g) - beta . (mean(x) - E x) - E|theta|^2 with beta the least-squares fit of
       g on x (cuts the variance 100-1000 fold at T = 8..100);
    3. one Newton step c = c0 - r_hat / mean(g').  error = 2 SE + Newton remainder, with
       SE = sd(g - beta . x) / sqrt(n) / mean(g') (delta method) and remainder
       |mean(g'')| / (2 mean(g')) (c - c0)^2 (the second-order Taylor term the step ignores).
    """
    T = check_int("n_topics", n_topics, minimum=2)
    alpha = check_real("alpha", alpha, positive=True)
    n_draws, chunk = check_int("n_draws", n_draws, minimum=16), check_int("chunk", chunk)
    seed = check_int("seed", seed, minimum=0)
    target = pair_same_topic_probability(T, alpha)
    mu_x = _power_sum_means(T, alpha, CV_POWERS)
    pilot_rng, main_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    c0 = _root_bracketed(pilot_rng.dirichlet(np.full(T, alpha), size=min(n_draws, 2 ** 16)), target)
    p = len(CV_POWERS)
    Z = np.zeros((p + 1, p + 1))            # second moments of (g, x - E x)
    first = np.zeros(p + 1)
    d1 = d2 = 0.0
    done = 0
    with tqdm(total=n_draws, disable=not progress, desc=f"c* limit T={T} alpha={alpha}") as bar:
        while done < n_draws:
            k = min(chunk, n_draws - done)
            theta = main_rng.dirichlet(np.full(T, alpha), size=k)
            sm = softmax(c0 * theta, axis=1)
            m1, m2, m3 = (np.sum(sm * theta ** j, axis=1) for j in (1, 2, 3))
            cols = np.column_stack([m1] + [np.sum(theta ** j, axis=1) - mu for j, mu in zip(CV_POWERS, mu_x)])
            Z += cols.T @ cols
            first += cols.sum(axis=0)
            d1 += float(np.sum(m2 - m1 ** 2))
            d2 += float(np.sum(m3 - 3 * m2 * m1 + 2 * m1 ** 3))
            done += k
            bar.update(k)
    n = float(n_draws)
    mean = first / n
    cov = Z / n - np.outer(mean, mean)
    beta = np.linalg.solve(cov[1:, 1:], cov[1:, 0])
    var_cv = cov[0, 0] - 2 * beta @ cov[1:, 0] + beta @ cov[1:, 1:] @ beta
    r_hat = mean[0] - beta @ mean[1:] - target
    d1, d2 = d1 / n, d2 / n
    c = c0 - r_hat / d1
    se = float(np.sqrt(max(var_cv, 0.0) / (n - p - 1)) / d1)
    remainder = abs(d2) / (2 * d1) * (c - c0) ** 2
    return float(c), float(2 * se + remainder)


# ---------------------------------------------------------------- equal weights: c diverges
def equal_weight_loss() -> dict:
    """Sympy: every document has tau equally weighted topics (theta = 1/tau on them), N -> inf.
    ``loss`` is built from the definition E[-c <theta, theta> + LSE(c theta)] + log v,
    ``closed`` = log v + log(tau + (T - tau) e^{-c/tau}), ``derivative`` = d loss / dc written
    with k = T - tau > 0, and ``limit`` = lim_{c -> inf} loss."""
    c = sp.Symbol("c", real=True)
    tau, k, v = sp.symbols("tau k v", positive=True)
    T = tau + k
    loss = -c / tau + sp.log(tau * sp.exp(c / tau) + (T - tau)) + sp.log(v)
    closed = sp.log(v) + sp.log(tau + (T - tau) * sp.exp(-c / tau))
    derivative = sp.simplify(sp.diff(closed, c))
    return {"c": c, "tau": tau, "k": k, "v": v, "loss": loss, "closed": closed, "derivative": derivative,
            "limit": sp.limit(closed, c, sp.oo)}


def equal_weight_gradient_descent(n_topics: int, tau: int, words_per_topic: int, lr: float = 1.0,
                                  steps: int = 200, c0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on c for the equal-weight loss (numpy): (c_t, L(c_t)), t = 0..steps."""
    T, tau = check_int("n_topics", n_topics, minimum=2), check_int("tau", tau)
    if tau >= T:
        raise ValueError(f"tau must be < n_topics = {T}; got {tau}")
    v = check_int("words_per_topic", words_per_topic)
    lr, steps = check_real("lr", lr, positive=True), check_int("steps", steps)
    c = check_real("c0", c0)
    cs, losses = [c], []
    for _ in range(steps + 1):
        e = np.exp(-c / tau)
        losses.append(np.log(v) + np.log(tau + (T - tau) * e))
        grad = -((T - tau) / tau) * e / (tau + (T - tau) * e)
        c = c - lr * grad
        cs.append(c)
    return np.array(cs[:-1]), np.array(losses)


# ---------------------------------------------------------------- Bayes reference
def bayes_loss(topics, selected, key_visible, n_topics: int, words_per_topic: int, alpha: float) -> float:
    """Mean over masked tokens of -log of the posterior predictive (alpha + n_t)/(T alpha + n)/v,
    n_t = visible words of the masked token's topic, n = visible words."""
    T = check_int("n_topics", n_topics)
    alpha = check_real("alpha", alpha, positive=True)
    onehot = topics[:, :, None] == np.arange(T)[None, None, :]
    counts = (onehot & key_visible[:, :, None]).sum(axis=1)            # (n_docs, T)
    n = counts.sum(axis=1)
    doc, pos = np.nonzero(selected)
    t = topics[doc, pos]
    if np.any(t < 0):
        raise ValueError("selected must only mark word positions")
    p = (alpha + counts[doc, t]) / (T * alpha + n[doc]) / words_per_topic
    return float(-np.mean(np.log(p)))
