"""Hidden Markov models and mixture-of-HMMs in-context prompts (numpy only).

Conventions (docs/hmm.md §4.2): ``transition[h, h'] = T(h' | h)`` (row-stochastic,
S x S), ``emission[h, o] = P(o | h)`` (row-stochastic, S x O), ``initial[h] = P(h_1 = h)``.
Observations are integer ids 0 .. O-1; a sequence o_1 .. o_T is an int array.

Generators (our reconstruction of the docs/hmm.md §2.3 setting, not the paper's, whose
generator is not known):

* low-rank transitions ``T = Xi @ M`` with Dirichlet rows (Xi: S x d, M: d x S), so T is
  row-stochastic of rank <= d (Assumption 1 in its standard form);
* emissions with Dirichlet(``concentration``) rows; ``duplicate_eps`` makes the rows come
  in near-duplicate pairs (row 2k+1 = (1 - eps) row 2k + eps fresh row), which drives the
  observability margin sigma_min(emission) down to O(eps): the "failing control";
* mixture-of-HMMs prompts: for each prompt a task k is drawn uniformly, then ``n_demos``
  demonstration sequences of length ``demo_len`` and one test sequence of length
  ``test_len``, each started afresh from the task's initial law.

Every generator takes an integer ``seed`` and is deterministic in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mechverify.theory.checks import check_array, check_int, check_real

INITIALS = ("stationary", "uniform")
STOCHASTIC_TOL = 1e-8


def _check_stochastic(name: str, value, shape: tuple) -> np.ndarray:
    arr = check_array(name, value, shape=shape)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if np.any(arr < 0):
        idx = np.unravel_index(int(np.argmin(arr)), arr.shape)
        raise ValueError(f"{name} must be non-negative; entry {tuple(int(i) for i in idx)} is {arr[idx]:.3g}")
    sums = arr.sum(axis=-1)
    bad = np.abs(sums - 1.0) > STOCHASTIC_TOL
    if np.any(bad):
        row = np.unravel_index(int(np.argmax(bad)), sums.shape)
        what = f"row {row[0]}" if len(row) == 1 else f"entry {tuple(int(i) for i in row)}"
        raise ValueError(f"{name} rows must sum to 1; {what} sums to {sums[row]:.6g}")
    return arr


@dataclass(frozen=True, eq=False)
class HMM:
    """A validated HMM: ``transition`` (S, S), ``emission`` (S, O), ``initial`` (S,).
    ``factors`` optionally holds (Xi, M) with transition = Xi @ M (low-rank generator)."""

    transition: np.ndarray
    emission: np.ndarray
    initial: np.ndarray
    factors: tuple | None = field(default=None)

    def __post_init__(self):
        T = check_array("transition", self.transition, ndim=2)
        if T.shape[0] < 1 or T.shape[0] != T.shape[1]:
            raise ValueError(f"transition must be square (S, S) with S >= 1; got shape {T.shape}")
        S = T.shape[0]
        T = _check_stochastic("transition", T, (S, S))
        E = check_array("emission", self.emission, ndim=2)
        if E.shape[0] != S or E.shape[1] < 1:
            raise ValueError(f"emission must have shape ({S}, O) with O >= 1 (S from transition); got {E.shape}")
        E = _check_stochastic("emission", E, (S, E.shape[1]))
        pi = _check_stochastic("initial", self.initial, (S,))
        for name, arr in (("transition", T), ("emission", E), ("initial", pi)):
            arr = arr.copy()
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if self.factors is not None:
            if not isinstance(self.factors, tuple) or len(self.factors) != 2:
                raise TypeError("factors must be a tuple (Xi, M)")
            Xi = check_array("factors[0]", self.factors[0], ndim=2)
            M = check_array("factors[1]", self.factors[1], ndim=2)
            if Xi.shape[0] != S or M.shape != (Xi.shape[1], S):
                raise ValueError(f"factors must have shapes (S, d), (d, S) with S = {S}; got {Xi.shape}, {M.shape}")
            if not np.allclose(Xi @ M, T, rtol=0, atol=1e-10):
                raise ValueError("factors must multiply to the transition: max |Xi M - T| = "
                                 f"{np.abs(Xi @ M - T).max():.3g}")
            object.__setattr__(self, "factors", (Xi, M))

    @property
    def n_states(self) -> int:
        return self.transition.shape[0]

    @property
    def n_obs(self) -> int:
        return self.emission.shape[1]


def check_hmms(hmms) -> list[HMM]:
    """An HMM or a non-empty sequence of HMMs sharing S and O -> list."""
    if isinstance(hmms, HMM):
        return [hmms]
    if isinstance(hmms, (str, bytes)) or not isinstance(hmms, Sequence):
        raise TypeError(f"hmms must be an HMM or a sequence of HMMs; got {type(hmms).__name__}")
    hmms = list(hmms)
    if not hmms:
        raise ValueError("hmms must hold at least one HMM")
    for k, h in enumerate(hmms):
        if not isinstance(h, HMM):
            raise TypeError(f"hmms[{k}] must be an HMM; got {type(h).__name__}")
        if (h.n_states, h.n_obs) != (hmms[0].n_states, hmms[0].n_obs):
            raise ValueError(f"hmms must share S and O; hmms[{k}] has (S, O) = ({h.n_states}, {h.n_obs}), "
                             f"hmms[0] ({hmms[0].n_states}, {hmms[0].n_obs})")
    return hmms


def stack(hmms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transitions (K, S, S), emissions (K, S, O), initials (K, S))."""
    hmms = check_hmms(hmms)
    return (np.stack([h.transition for h in hmms]), np.stack([h.emission for h in hmms]),
            np.stack([h.initial for h in hmms]))


def stationary(transition) -> np.ndarray:
    """The stationary law of a row-stochastic matrix (the eigenvector of eigenvalue 1 of T^T;
    for a reducible chain one of them)."""
    T = _check_stochastic("transition", transition, (None, None))
    w, v = np.linalg.eig(T.T)
    p = np.real(v[:, int(np.argmin(np.abs(w - 1.0)))])
    p = np.abs(p) / np.abs(p).sum()
    for _ in range(3):                      # polish: a few power steps
        p = p @ T
    return p / p.sum()


def emission_margin(emission) -> float:
    """sigma_min of the O x S emission operator as a map on R^S (0 when S > O): the
    alpha of alpha-weak revealing (docs/hmm.md §2.2)."""
    E = check_array("emission", emission, ndim=2)
    S, O = E.shape
    if S > O:
        return 0.0
    return float(np.linalg.svd(E, compute_uv=False)[-1])


def low_rank_transition(S: int, d: int, rng: np.random.Generator, concentration: float = 1.0):
    """(Xi (S, d), M (d, S)) with Dirichlet(``concentration``) rows; T = Xi @ M has rank <= d."""
    Xi = rng.dirichlet(np.full(d, concentration), size=S)
    M = rng.dirichlet(np.full(S, concentration), size=d)
    return Xi, M


def random_emission(S: int, O: int, rng: np.random.Generator, concentration: float = 0.3,
                    duplicate_eps: float | None = None) -> np.ndarray:
    """Dirichlet(``concentration``) rows; with ``duplicate_eps`` rows come in near-duplicate pairs."""
    E = rng.dirichlet(np.full(O, concentration), size=S)
    if duplicate_eps is not None:
        for h in range(1, S, 2):
            E[h] = (1 - duplicate_eps) * E[h - 1] + duplicate_eps * E[h]
    return E / E.sum(axis=1, keepdims=True)


def random_hmm(S: int, O: int, rank: int | None = None, *, seed: int, emission_concentration: float = 0.3,
               transition_concentration: float = 1.0, duplicate_eps: float | None = None,
               self_loop: float = 0.0, initial: str = "stationary") -> HMM:
    """One random HMM: rank-``rank`` transition Xi M (full Dirichlet rows when ``rank`` is None),
    mixed with the identity as ``self_loop`` I + (1 - self_loop) T when ``self_loop`` > 0 (a
    slowly mixing, "sticky" chain; the rank then grows by at most one), Dirichlet emissions,
    initial law stationary or uniform."""
    S, O = check_int("S", S), check_int("O", O)
    if rank is not None:
        rank = check_int("rank", rank)
        if rank > S:
            raise ValueError(f"rank must be <= S = {S}; got {rank}")
    check_int("seed", seed, minimum=0)
    check_real("emission_concentration", emission_concentration, positive=True)
    check_real("transition_concentration", transition_concentration, positive=True)
    if duplicate_eps is not None:
        eps = check_real("duplicate_eps", duplicate_eps, nonnegative=True)
        if eps > 1:
            raise ValueError(f"duplicate_eps must be in [0, 1]; got {eps}")
    self_loop = check_real("self_loop", self_loop, nonnegative=True)
    if self_loop >= 1:
        raise ValueError(f"self_loop must be in [0, 1); got {self_loop}")
    if initial not in INITIALS:
        raise ValueError(f"initial must be one of {INITIALS}; got {initial!r}")
    rng = np.random.default_rng(seed)
    if rank is None:
        T, factors = rng.dirichlet(np.full(S, transition_concentration), size=S), None
    else:
        Xi, M = low_rank_transition(S, rank, rng, transition_concentration)
        T, factors = Xi @ M, (Xi, M)
    T = T / T.sum(axis=1, keepdims=True)
    if self_loop > 0:
        T, factors = self_loop * np.eye(S) + (1 - self_loop) * T, None
    E = random_emission(S, O, rng, emission_concentration, duplicate_eps)
    pi = stationary(T) if initial == "stationary" else np.full(S, 1.0 / S)
    return HMM(T, E, pi, factors)


def random_hmms(K: int, S: int, O: int, rank: int | None = None, *, seed: int, **kwargs) -> list[HMM]:
    """K independent random HMMs (HMM k from the k-th child of ``seed``)."""
    K = check_int("K", K)
    check_int("seed", seed, minimum=0)
    children = np.random.SeedSequence(seed).generate_state(K)
    return [random_hmm(S, O, rank, seed=int(c), **kwargs) for c in children]


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` (..., C) by inverse CDF."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1] + (1,)) * cdf[..., -1:]
    return np.minimum((u > cdf).sum(axis=-1), probs.shape[-1] - 1)


def _sample_paths(T: np.ndarray, E: np.ndarray, pi: np.ndarray, task: np.ndarray, length: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """States and observations (N, length) for sequences of tasks ``task`` (N,)."""
    N = task.shape[0]
    states = np.empty((N, length), dtype=np.int64)
    obs = np.empty((N, length), dtype=np.int64)
    h = _categorical(rng, pi[task])
    for t in range(length):
        states[:, t] = h
        obs[:, t] = _categorical(rng, E[task, h])
        if t + 1 < length:
            h = _categorical(rng, T[task, h])
    return states, obs


def sample_sequences(hmm: HMM, n_sequences: int, length: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(observations, states), each (n_sequences, length) int64."""
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    (T, E, pi) = stack(hmm)
    n_sequences, length = check_int("n_sequences", n_sequences), check_int("length", length)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    states, obs = _sample_paths(T, E, pi, np.zeros(n_sequences, dtype=np.int64), length, rng)
    return obs, states


@dataclass(frozen=True)
class HMMPrompts:
    """B mixture-of-HMMs prompts: ``task`` (B,), ``demos`` (B, n, L) and ``demo_states``,
    ``test`` (B, L_test) and ``test_states`` (int64)."""

    task: np.ndarray
    demos: np.ndarray
    demo_states: np.ndarray
    test: np.ndarray
    test_states: np.ndarray


def sample_prompts(hmms, n_prompts: int, n_demos: int, demo_len: int, test_len: int, *, seed: int,
                   tasks=None) -> HMMPrompts:
    """Mixture-of-HMMs ICL prompts: task uniform over ``hmms`` (or the given ``tasks`` (B,)),
    ``n_demos`` >= 0 demonstrations of length ``demo_len`` and one test sequence."""
    T, E, pi = stack(hmms)
    K = T.shape[0]
    B = check_int("n_prompts", n_prompts)
    n = check_int("n_demos", n_demos, minimum=0)
    L, Lt = check_int("demo_len", demo_len), check_int("test_len", test_len)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    if tasks is None:
        task = rng.integers(0, K, size=B)
    else:
        task = np.asarray(tasks)
        if task.shape != (B,) or not np.issubdtype(task.dtype, np.integer) or task.min() < 0 or task.max() >= K:
            raise ValueError(f"tasks must be {B} integer ids in [0, {K}); got {task!r}")
    ds, do = _sample_paths(T, E, pi, np.repeat(task, n), L, rng) if n else (
        np.zeros((0, L), np.int64), np.zeros((0, L), np.int64))
    ts, to = _sample_paths(T, E, pi, task, Lt, rng)
    return HMMPrompts(task, do.reshape(B, n, L), ds.reshape(B, n, L), to, ts)
