"""High-order Markov chain teacher with sparse block structure (docs/markov.md §2.1).

numpy only.  Notation:

==================  ==================  ==================================================
paper               code                meaning
==================  ==================  ==================================================
d                   ``d``               vocabulary size (one-hot tokens e_1 .. e_d)
h (or K)            ``len(sizes)``      number of blocks of past lags
I(k), |I(k)|        ``block_lags(k)``   lags of the k-th *most important* block (k = 1..h)
w                   ``task.w``          context window: the largest lag of any block
m                   ``m``               importance ratio: A*_k = m^{h-k} Q_k
Q_k                 ``teacher_matrices``random orthogonal d x d (Q = U V^T of a Gaussian)
α_i                 ``alpha``           within-block weights, listed oldest -> nearest (default all ones)
τ                   ``tau``             temperature of the next-token softmax
L                   ``L``               generated tokens per sequence (after w seed tokens)
==================  ==================  ==================================================

Next token (lag i means the token i positions back)::

    x_t ~ softmax( (1/τ) Σ_k A*_k Σ_{i ∈ I(k)} α_i x_{t-i} )

Block layout.  Blocks sit next to each other in *position* order, nearest first; block p
(p = 0, 1, ...) covers lags p*stride + 1 .. p*stride + size (``stride`` defaults to the
block size: disjoint contiguous blocks; a smaller stride gives overlapping blocks).  The
most important block is the nearest one, or the farthest one with ``reverse=True``.  All
functions index blocks by importance rank k = 1..h (``k=1`` the most important).

Within-block weights follow the official IL-SAP code (``span_position_weights``): the listed
``alpha`` applies to a block's positions from the OLDEST to the NEAREST token (the first
weight multiplies the largest lag of the block) and is rescaled to sum to 1
(:func:`lag_weights`).  ``alpha=None`` is the official default: every weight 1, not rescaled.

The Q draw is fixed by ``teacher_seed``; sequence draws take their own ``seed``.
``orthogonal=True`` additionally makes the A*_k mutually Frobenius-orthogonal
(Gram-Schmidt on the flattened Q_k, each rescaled to Frobenius norm sqrt(d)).  That needs
the h drawn Q_k to be linearly independent in R^{d x d}.  For d >= 3 they are (almost surely),
but the 2 x 2 orthogonal matrices lie in two 2-dimensional subspaces (rotations
[[c, -s], [s, c]] and reflections [[c, s], [s, -c]]), so at d = 2 three or more Q_k of the
same determinant sign are dependent: :func:`teacher_matrices` raises ValueError for such a
draw instead of returning matrices that are not orthogonal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mechverify.theory.checks import check_int, check_real

__all__ = ["MarkovTask", "lag_weights", "teacher_matrices", "lag_matrices", "sample_sequences", "teacher_logits",
           "teacher_cross_entropy", "log_softmax"]


def lag_weights(alpha, size: int) -> np.ndarray:
    """Weights of a block's lags in increasing-lag order (nearest token first) for ``alpha``
    listed in the official code's order, oldest token first, rescaled to sum to 1;
    ``alpha=None``: ``size`` ones."""
    size = check_int("size", size)
    if alpha is None:
        return np.ones(size)
    a = np.array([check_real("alpha entry", x, positive=True) for x in alpha])
    if a.size != size:
        raise ValueError(f"alpha must hold one weight per lag of a block ({size}); got {a.size}")
    return (a / a.sum())[::-1]


@dataclass(frozen=True)
class MarkovTask:
    """The teacher of docs/markov.md §2.1 (defaults: the minimal-model setting, d = 50, [2, 2, 2])."""

    d: int = 50                        # vocabulary size
    sizes: tuple = (2, 2, 2)           # block sizes |I(k)|, in position order (nearest first)
    m: float = 1.7                     # importance ratio
    tau: float = 0.1                   # softmax temperature
    alpha: tuple | None = None         # within-block weights, oldest -> nearest, rescaled to sum 1; None = ones
    reverse: bool = False              # most important block farthest back
    stride: int | None = None          # lag offset between consecutive blocks; None = contiguous
    orthogonal: bool = False           # Gram-Schmidt the Q_k (Frobenius-orthogonal A*_k)
    L: int = 20                        # generated tokens per sequence
    teacher_seed: int = 0              # seed of the Q_k draw

    def __post_init__(self):
        check_int("d", self.d, minimum=2)
        if not isinstance(self.sizes, tuple) or not self.sizes:
            raise TypeError(f"sizes must be a non-empty tuple of block sizes; got {self.sizes!r}")
        for s in self.sizes:
            check_int("sizes entry", s)
        check_real("m", self.m, positive=True)
        check_real("tau", self.tau, positive=True)
        check_int("L", self.L)
        check_int("teacher_seed", self.teacher_seed, minimum=0)
        if not isinstance(self.reverse, bool) or not isinstance(self.orthogonal, bool):
            raise TypeError("reverse and orthogonal must be bools")
        if self.stride is not None:
            check_int("stride", self.stride)
        if self.alpha is not None:
            if not isinstance(self.alpha, tuple):
                raise TypeError(f"alpha must be a tuple of weights or None; got {type(self.alpha).__name__}")
            if len(set(self.sizes)) != 1 or len(self.alpha) != self.sizes[0]:
                raise ValueError(f"alpha must hold one weight per lag of a block (all blocks of size "
                                 f"{len(self.alpha)}); got sizes {self.sizes}")
            for a in self.alpha:
                check_real("alpha entry", a, positive=True)
        if self.orthogonal and len(self.sizes) > self.d * self.d:
            raise ValueError(f"orthogonal needs at most d^2 = {self.d ** 2} blocks; got {len(self.sizes)}")

    @property
    def h(self) -> int:
        return len(self.sizes)

    @property
    def stride_(self) -> list[int]:
        return [self.stride] * (self.h - 1) if self.stride is not None else list(self.sizes[:-1])

    def position_lags(self, p: int) -> np.ndarray:
        """Lags (1-based) of the block at position p (0 = nearest)."""
        start = 1 + sum(self.stride_[:p])
        return np.arange(start, start + self.sizes[p])

    @property
    def w(self) -> int:
        return max(int(self.position_lags(p)[-1]) for p in range(self.h))

    def position_of(self, k: int) -> int:
        """Position index of the block of importance rank k (1-based)."""
        k = check_int("k", k)
        if k > self.h:
            raise ValueError(f"k must be <= h = {self.h}; got {k}")
        return self.h - k if self.reverse else k - 1

    def block_lags(self, k: int) -> np.ndarray:
        """Lags I(k) of the k-th most important block."""
        return self.position_lags(self.position_of(k))

    def weights(self, k: int) -> np.ndarray:
        """α over I(k), aligned with :meth:`block_lags` (nearest lag first; see :func:`lag_weights`)."""
        return lag_weights(self.alpha, self.sizes[self.position_of(k)])

    def importance(self, k: int) -> float:
        """‖A*_k‖_2 = m^{h-k}."""
        return self.m ** (self.h - check_int("k", k))

    def energies(self) -> np.ndarray:
        """e_k = μ_k² ‖α_{I(k)}‖² with μ_k = ‖A*_k‖_F = m^{h-k} sqrt(d)."""
        return np.array([self.importance(k) ** 2 * self.d * float(np.sum(self.weights(k) ** 2))
                         for k in range(1, self.h + 1)])


def _check_task(task) -> MarkovTask:
    if not isinstance(task, MarkovTask):
        raise TypeError(f"task must be a MarkovTask; got {type(task).__name__}")
    return task


def teacher_matrices(task: MarkovTask) -> np.ndarray:
    """A*_k for k = 1..h (importance order): (h, d, d)."""
    _check_task(task)
    rng = np.random.default_rng(task.teacher_seed)
    Q = []
    for _ in range(task.h):
        U, _, Vt = np.linalg.svd(rng.standard_normal((task.d, task.d)))
        Q.append(U @ Vt)
    Q = np.stack(Q)
    if task.orthogonal:
        # Gram-Schmidt on the flattened Q_k, computed stably as a Householder QR (same result
        # up to rounding: signs fixed so each Q_k keeps a positive component along its own draw).
        basis, R = np.linalg.qr(Q.reshape(task.h, -1).T)
        diag = np.diag(R)
        if np.min(np.abs(diag)) < 1e-8 * math.sqrt(task.d):
            raise ValueError(
                f"orthogonal=True: the Q_k drawn with teacher_seed={task.teacher_seed} are linearly dependent "
                f"(d = {task.d}, h = {task.h}; residual norms {np.abs(diag).round(12).tolist()}): at d = 2 the "
                "orthogonal matrices of one determinant sign span only 2 dimensions, so h >= 3 blocks need both "
                "signs; choose another teacher_seed, h <= 2 or d >= 3")
        Q = (basis * np.sign(diag)).T.reshape(Q.shape) * math.sqrt(task.d)
    scale = np.array([task.importance(k) for k in range(1, task.h + 1)])
    return Q * scale[:, None, None]


def lag_matrices(task: MarkovTask, k: int | None = None, A: np.ndarray | None = None) -> np.ndarray:
    """(w, d, d): W_i = Σ_{l<=k} α_i A*_l 1[i ∈ I(l)] for lag i = 1..w (row i-1); ``k`` keeps
    the k most important blocks (the truncated teacher p_{A*_{1:k}}), default all h."""
    A = teacher_matrices(task) if A is None else A
    _check_task(task)
    k = task.h if k is None else check_int("k", k)
    if k > task.h:
        raise ValueError(f"k must be <= h = {task.h}; got {k}")
    W = np.zeros((task.w, task.d, task.d))
    for l in range(1, k + 1):
        for lag, a in zip(task.block_lags(l), task.weights(l)):
            W[lag - 1] += a * A[l - 1]
    return W


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def teacher_logits(task: MarkovTask, tokens: np.ndarray, k: int | None = None,
                   W: np.ndarray | None = None) -> np.ndarray:
    """Logits (n, L', d) of the (truncated) teacher for tokens at positions w .. n_pos-1 of
    ``tokens`` (n, n_pos) given the previous w tokens (L' = n_pos - w)."""
    _check_task(task)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be an integer array (n, positions); got {tokens.dtype} {tokens.shape}")
    if tokens.shape[1] <= task.w:
        raise ValueError(f"tokens must have more than w = {task.w} positions; got {tokens.shape[1]}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= task.d):
        raise ValueError(f"tokens must lie in 0..d-1 = {task.d - 1}")
    W = lag_matrices(task, k) if W is None else W
    n, P = tokens.shape
    out = np.zeros((n, P - task.w, task.d))
    for lag in range(1, task.w + 1):
        if np.any(W[lag - 1]):
            out += W[lag - 1][:, tokens[:, task.w - lag:P - lag]].transpose(1, 2, 0)
    return out / task.tau


def sample_sequences(task: MarkovTask, n: int, seed: int, L: int | None = None) -> np.ndarray:
    """``n`` sequences (n, w + L) of token ids: w uniform seed tokens, then L teacher tokens."""
    _check_task(task)
    n = check_int("n", n)
    check_int("seed", seed, minimum=0)
    L = task.L if L is None else check_int("L", L)
    rng = np.random.default_rng(seed)
    W = lag_matrices(task)
    seq = np.empty((n, task.w + L), dtype=np.int64)
    seq[:, :task.w] = rng.integers(0, task.d, size=(n, task.w))
    for t in range(task.w, task.w + L):
        logits = sum(W[lag - 1][:, seq[:, t - lag]].T for lag in range(1, task.w + 1)) / task.tau
        p = np.exp(log_softmax(logits))
        u = rng.random((n, 1))
        seq[:, t] = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), task.d - 1)
    return seq


def teacher_cross_entropy(task: MarkovTask, n: int = 10_000, seed: int = 0,
                          k: int | None = None) -> tuple[float, float]:
    """(mean, standard error) over ``n`` sequences of the per-sequence average cross-entropy
    E_{x~p}[-log p_k(x)] of the truncated teacher p_k (k = h: the Bayes rate) on the L
    generated positions, computed exactly per position (no sampled next tokens)."""
    seq = sample_sequences(task, n, seed)
    logp = log_softmax(teacher_logits(task, seq))
    logq = logp if k is None or k == task.h else log_softmax(teacher_logits(task, seq, k))
    per_seq = -(np.exp(logp) * logq).sum(-1).mean(-1)
    return float(per_seq.mean()), float(per_seq.std(ddof=1) / math.sqrt(n))
