"""A two-parameter-family model of the two training stages (value first, attention second)
of the topic-structure paper; the mechanism is the paper's claim [paper], this model of it is
our reconstruction [reconstructed].

State: the value contrast c (W^V = c (I_T (x) J_v)) and a query/key pair (q, k) whose product
beta = q k is the extra attention score a query word gives to keys of its own topic.  Data:
N -> infinity documents, theta ~ Dirichlet(alpha 1_T); a masked token of topic y ~ Cat(theta)
is queried by [MASK] (probability 1 - p_random - p_keep; no topic information), by its own
token (p_keep) or by a random word (p_random; its topic is uniform).  A query of topic r
reweights the context topic masses theta to

    s_u = theta_u e^{beta [u = r]} / sum_u' theta_u' e^{beta [u' = r]},

and the loss is E[-c s_y + LSE(c s)] + log v.  Gradient descent (step ``lr``) on (c, q, k):

    c <- c - lr dL/dc,   q <- q - lr k dL/dbeta,   k <- k - lr q dL/dbeta.

At c = 0 every logit is equal whatever the attention, so dL/dbeta = 0: attention cannot move
before the value contrast has grown (stage 1), and its own gradient is further damped by
the small product q, k ~ sigma (stage 2 starts later for smaller sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, softmax

from mechverify.theory.checks import check_int, check_real


@dataclass(frozen=True)
class StageSamples:
    """Monte Carlo draws: ``theta`` (n, T), label topic ``y`` (n,), query topic ``r`` (n,;
    -1 for a [MASK] query)."""

    theta: np.ndarray
    y: np.ndarray
    r: np.ndarray
    words_per_topic: int


def stage_samples(n_topics: int = 10, words_per_topic: int = 10, alpha: float = 0.1, n_samples: int = 4000,
                  p_random: float = 0.1, p_keep: float = 0.1, seed: int = 0) -> StageSamples:
    T, v = check_int("n_topics", n_topics, minimum=2), check_int("words_per_topic", words_per_topic)
    alpha = check_real("alpha", alpha, positive=True)
    n = check_int("n_samples", n_samples)
    p_random = check_real("p_random", p_random, nonnegative=True)
    p_keep = check_real("p_keep", p_keep, nonnegative=True)
    if p_random + p_keep > 1:
        raise ValueError(f"p_random + p_keep must be <= 1; got {p_random} + {p_keep}")
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    theta = rng.dirichlet(np.full(T, alpha), size=n)
    y = np.array([rng.choice(T, p=row / row.sum()) for row in theta])
    kind = rng.random(n)
    r = np.where(kind < p_keep, y, np.where(kind < p_keep + p_random, rng.integers(0, T, size=n), -1))
    return StageSamples(theta, y, r, v)


def loss_and_grads(c: float, beta: float, samples: StageSamples) -> tuple[float, float, float]:
    """(L, dL/dc, dL/dbeta) of the module doc on ``samples``."""
    theta, y, r = samples.theta, samples.y, samples.r
    n, T = theta.shape
    hit = (np.arange(T)[None, :] == r[:, None]).astype(float)       # all zero for [MASK] queries
    s = softmax(np.log(np.maximum(theta, 1e-300)) + beta * hit, axis=1)
    g = softmax(c * s, axis=1)
    rows = np.arange(n)
    loss = np.mean(-c * s[rows, y] + logsumexp(c * s, axis=1)) + np.log(samples.words_per_topic)
    d_c = np.mean(-s[rows, y] + np.sum(g * s, axis=1))
    ds = s * (hit - np.sum(s * hit, axis=1, keepdims=True))          # d s_u / d beta
    d_beta = np.mean(c * (-ds[rows, y] + np.sum(g * ds, axis=1)))
    return float(loss), float(d_c), float(d_beta)


def two_stage_descent(sigma: float, samples: StageSamples, lr: float = 1.0, steps: int = 1000,
                      c0: float = 0.0) -> dict:
    """Gradient descent from (c, q, k) = (c0, sigma, sigma); returns arrays ``c``, ``beta``,
    ``loss`` at steps 0..steps."""
    sigma = check_real("sigma", sigma, nonnegative=True)
    lr, steps = check_real("lr", lr, positive=True), check_int("steps", steps)
    c, q, k = check_real("c0", c0), sigma, sigma
    cs, betas, losses = [], [], []
    for _ in range(steps + 1):
        loss, d_c, d_beta = loss_and_grads(c, q * k, samples)
        cs.append(c), betas.append(q * k), losses.append(loss)
        c, q, k = c - lr * d_c, q - lr * k * d_beta, k - lr * q * d_beta
    return {"c": np.array(cs), "beta": np.array(betas), "loss": np.array(losses)}


def half_time(curve: np.ndarray) -> int:
    """First index at which ``curve`` - curve[0] reaches half of its final change."""
    curve = np.asarray(curve, dtype=float)
    change = curve - curve[0]
    final = change[-1]
    if final == 0:
        return len(curve) - 1
    return int(np.argmax(change / final >= 0.5))
