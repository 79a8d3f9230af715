"""A synthetic Zipf-Markov corpus with controlled token frequencies [reconstructed test bed].

The test bed of docs/meta_learning.md §6.2 (ours, not the paper's): vocabulary V
(default 64), first-order Markov transitions whose stationary distribution is exactly
Zipf, pi_v proportional to (v + 1)^(-exponent) (default exponent 1.1; token 0 most frequent).

Construction (reversible chain).  Draw a symmetric positive matrix
S = exp(sharpness * G), G symmetric with N(0, 1) entries (seeded), and scale it
symmetrically, W = diag(x) S diag(x), so that every row of W sums to pi_v (x solves
x_v (S x)_v = pi_v by the damped fixed-point iteration x <- sqrt(x pi / (S x)), which
converges for positive S).  Then P_{vw} = W_{vw} / pi_v is a transition matrix with
pi^T P = pi exactly (detailed balance: pi_v P_{vw} = W_{vw} = W_{wv}).  ``sharpness``
sets how far the next-token distribution departs from the unigram one (0: i.i.d. tokens
from pi, and then the bigram structure is only the Zipf marginal).

* :func:`zipf_markov` -> :class:`ZipfMarkov` (pi, P, validated);
* :meth:`ZipfMarkov.sample` -> seeded integer sequences (x_0 ~ pi, x_{t+1} ~ P[x_t]);
* :func:`zipf_weights`, :func:`check_transition`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechverify.theory.checks import check_array, check_int, check_real


def zipf_weights(vocab: int, exponent: float) -> np.ndarray:
    """pi_v = (v + 1)^(-exponent) / sum, v = 0..vocab-1."""
    vocab = check_int("vocab", vocab, minimum=2)
    exponent = check_real("exponent", exponent, nonnegative=True)
    w = np.arange(1, vocab + 1, dtype=np.float64) ** (-exponent)
    return w / w.sum()


def check_transition(P, pi=None, tol: float = 1e-10) -> np.ndarray:
    """A (V, V) row-stochastic matrix (entries >= 0, rows summing to 1 within ``tol``); with
    ``pi`` also pi^T P = pi within ``tol``."""
    P = check_array("P", P, ndim=2)
    V = P.shape[0]
    if P.shape != (V, V) or V < 1:
        raise ValueError(f"P must be square (V, V); got {P.shape}")
    if np.any(P < 0):
        raise ValueError("P must have entries >= 0")
    rows = P.sum(axis=1)
    bad = int(np.argmax(np.abs(rows - 1.0)))
    if abs(rows[bad] - 1.0) > tol:
        raise ValueError(f"P rows must sum to 1; row {bad} sums to {rows[bad]:.12g}")
    if pi is not None:
        pi = check_array("pi", pi, shape=(V,))
        if np.any(pi < 0) or abs(pi.sum() - 1.0) > tol:
            raise ValueError("pi must be a probability vector")
        gap = float(np.max(np.abs(pi @ P - pi)))
        if gap > tol:
            raise ValueError(f"pi must be stationary for P; max |pi P - pi| = {gap:.3g}")
    return P


@dataclass(frozen=True, eq=False)
class ZipfMarkov:
    """A Markov chain on ``pi.size`` tokens with stationary distribution ``pi``."""

    pi: np.ndarray          # (V,) stationary (Zipf) distribution
    P: np.ndarray           # (V, V) transitions, P[v] = law of the next token after v

    def __post_init__(self):
        check_transition(self.P, self.pi)

    @property
    def vocab(self) -> int:
        return self.pi.size

    def entropy_rate(self) -> float:
        """sum_v pi_v H(P[v]) in nats: the best achievable next-token loss."""
        logP = np.log(np.where(self.P > 0, self.P, 1.0))
        return float(-np.sum(self.pi[:, None] * self.P * logP))

    def unigram_entropy(self) -> float:
        """H(pi) in nats: the loss of a model that ignores the context."""
        return float(-np.sum(self.pi * np.log(self.pi)))

    def sample(self, n_sequences: int, length: int, seed: int) -> np.ndarray:
        """(n_sequences, length) int64 token ids; x_0 ~ pi, x_{t+1} ~ P[x_t]."""
        n_sequences, length = check_int("n_sequences", n_sequences), check_int("length", length)
        seed = check_int("seed", seed, minimum=0)
        rng = np.random.default_rng(seed)
        cdf = np.cumsum(self.P, axis=1)
        cdf[:, -1] = 1.0
        u = rng.random((n_sequences, length))
        out = np.empty((n_sequences, length), dtype=np.int64)
        out[:, 0] = np.minimum(np.searchsorted(np.cumsum(self.pi), u[:, 0], side="right"), self.vocab - 1)
        for t in range(1, length):
            rows = cdf[out[:, t - 1]]
            out[:, t] = np.minimum((rows <= u[:, t, None]).sum(axis=1), self.vocab - 1)
        return out


def zipf_markov(vocab: int = 64, exponent: float = 1.1, sharpness: float = 2.0, seed: int = 0,
                max_iter: int = 10_000, tol: float = 1e-13) -> ZipfMarkov:
    """The reversible Zipf-Markov chain of the module doc (seeded, validated)."""
    pi = zipf_weights(vocab, exponent)
    sharpness = check_real("sharpness", sharpness, nonnegative=True)
    seed = check_int("seed", seed, minimum=0)
    max_iter = check_int("max_iter", max_iter)
    tol = check_real("tol", tol, positive=True)
    G = np.random.default_rng(seed).standard_normal((pi.size, pi.size))
    S = np.exp(sharpness * (G + G.T) / np.sqrt(2.0))
    x = np.sqrt(pi)
    for _ in range(max_iter):
        x = np.sqrt(x * pi / (S @ x))
        if np.max(np.abs(x * (S @ x) - pi)) <= tol * pi.max():
            break
    else:
        raise ValueError(f"sharpness = {sharpness} too large: the symmetric scaling did not converge "
                         f"in max_iter = {max_iter} iterations")
    W = x[:, None] * S * x[None, :]
    W = (W + W.T) / 2
    P = W / W.sum(axis=1, keepdims=True)
    return ZipfMarkov(pi, P)
