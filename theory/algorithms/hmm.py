"""Bayes-optimal references for HMMs and the in-context regression the construction runs
(numpy only; docs/hmm.md §3.2, §4).

Filtering
    :func:`forward` runs the forward algorithm batched over K HMMs and N sequences at once:
    the state law is renormalised every step (so it never underflows, and zero
    probabilities stay exact zeros), and likelihoods are kept as sums of logs of the
    normalisers (so 1e5-step sequences stay finite; an impossible observation gives -inf).
    :func:`forward_predictive` returns P(o_{t+1} = . | o_1..o_t) as rows t = 0..T (row 0 is
    the law of o_1; T = 0 is allowed and gives that one row).  :func:`bayes_mixture_predictive` is the Bayes-optimal predictor of a
    mixture-of-HMMs prompt; :func:`windowed_predictive` sees only the last r observations.
Independent references
    :func:`bruteforce_likelihood`, :func:`bruteforce_predictive` enumerate every hidden
    path (S^T of them) in probability space: no recursion shared with :func:`forward`.
Hankel structure [reconstructed]
    :func:`hankel_matrix` (past window x future window joint law), :func:`future_matrix`
    P(F_r | h), and the features phi(o_<=t) = Xi^T b_t, psi(f) = M P(f | h_{t+1} = .) of
    the factorisation P(f | o_<=t) = <psi(f), phi(o_<=t)> (docs/hmm.md §4.1).
In-context regression [reconstructed]
    one-hot window features (:func:`window_features`), the demonstrations' least-squares
    problem (:func:`demo_regression`), its gradient-descent iterates, least-squares
    solution and the readout onto the simplex.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from mechverify.theory.checks import check_array, check_int, check_real
from mechverify.theory.tasks.hmm import HMM, check_hmms, stack

# --- validation ----------------------------------------------------------------------------

def check_obs(name: str, obs, n_obs: int, ndim: int | tuple = (1, 2), allow_empty_batch: bool = False,
              allow_empty_time: bool = False) -> np.ndarray:
    """Integer observation ids in [0, n_obs); the last axis is time.  The time axis must be
    non-empty unless ``allow_empty_time`` (empty sequences), the batch axes unless
    ``allow_empty_batch``."""
    arr = np.asarray(obs)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name} must be an integer array of observation ids; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions; got shape {arr.shape}")
    if arr.shape[-1] < 1 and not allow_empty_time:
        raise ValueError(f"{name} must hold non-empty sequences (time axis >= 1); got shape {arr.shape}")
    if math.prod(arr.shape[:-1]) == 0 and not allow_empty_batch:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_obs):
        bad = arr[(arr < 0) | (arr >= n_obs)].flat[0]
        raise ValueError(f"{name} must hold ids in [0, {n_obs}); found {bad}")
    return arr


def _log(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(a)


# --- the forward algorithm -------------------------------------------------------------------

@dataclass(frozen=True)
class ForwardResult:
    """Forward pass over sequences of length T (batch shape ``...``), in log space:
    ``log_predictive`` (..., T+1, O): row t = log P(o_{t+1} = . | o_<=t);
    ``log_prefix`` (..., T+1): log P(o_1..o_t) (0 at t = 0);
    ``log_state`` (..., T+1, S): row t = log P(h_{t+1} = . | o_<=t);
    ``log_filtered`` (..., T, S): row t-1 = log P(h_t = . | o_<=t)."""

    log_predictive: np.ndarray
    log_prefix: np.ndarray
    log_state: np.ndarray
    log_filtered: np.ndarray


TCH = 256            # time steps per gathered block of emission columns (bounds memory)


def _filter(T: np.ndarray, E: np.ndarray, b0: np.ndarray, obs: np.ndarray, keep_filtered: bool = False):
    """The normalised forward recursion, batched over K HMMs and N sequences.

    T (K, S, S), E (K, S, O), b0 (K or 1, N or 1, S) the law of h_1, obs (K or 1, N, L).
    Returns, with time as axis 1: ``states`` (K, L+1, N, S), [:, t] = P(h_{t+1} = . | o_<=t);
    ``log_norm`` (K, L, N), [:, t-1] = log P(o_t | o_<t) (-inf for an impossible o_t, after
    which the filter keeps its prior law); ``filtered`` (K, L, N, S) = P(h_t = . | o_<=t) or None.

    Each step multiplies the state law by the emission column of o_t and normalises by the
    sum, which is P(o_t | o_<t): the laws stay in [0, 1] however long the sequence, exact
    zeros stay zero, and the likelihood is the running sum of the logs of the normalisers.
    The normaliser comes out of the same batched product as the next state law (T padded
    with a column of ones), so a step is one multiply, one matmul and one divide."""
    K, S, _ = E.shape
    N, L = obs.shape[1], obs.shape[2]
    T1 = np.concatenate([T, np.ones((K, S, 1))], axis=2)          # (K, S, S+1)
    ET = np.ascontiguousarray(np.swapaxes(E, 1, 2))                # (K, O, S): emission columns
    obs_t = np.swapaxes(np.broadcast_to(obs, (K, N, L)), 1, 2)     # (K, L, N)
    kk = np.arange(K)[:, None, None]
    states = np.empty((K, L + 1, N, S))
    states[:, 0] = b0
    norm = np.empty((K, L, N))
    filtered = np.empty((K, L, N, S)) if keep_filtered else None
    for t0 in range(0, L, TCH):
        cols = ET[kk, obs_t[:, t0:t0 + TCH]]                       # (K, tch, N, S): P(o_t | h_t = .)
        for i in range(cols.shape[1]):
            t = t0 + i
            x = states[:, t] * cols[:, i]                          # P(h_t = ., o_t | o_<t)
            u = np.matmul(x, T1)                                   # [P(h_{t+1} = ., o_t | o_<t), P(o_t | o_<t)]
            c = u[..., S]
            norm[:, t] = c
            if not np.all(c > 0):                                  # an impossible o_t: keep the prior law
                x = np.where((c > 0)[..., None], x, states[:, t])
                u = np.matmul(x, T1)
            np.divide(u[..., :S], u[..., S:], out=states[:, t + 1])
            if keep_filtered:
                np.divide(x, u[..., S:], out=filtered[:, t])
    return states, _log(norm), filtered


def _log_prefix(log_norm: np.ndarray) -> np.ndarray:
    """(K, L, N) log P(o_t | o_<t) -> (K, L+1, N) log P(o_1..o_t), 0 at t = 0."""
    K, L, N = log_norm.shape
    out = np.zeros((K, L + 1, N))
    np.cumsum(log_norm, axis=1, out=out[:, 1:])
    return out


def _batch_first(x: np.ndarray) -> np.ndarray:
    """(K, L, N, ...) -> (K, N, L, ...) (a view)."""
    return np.swapaxes(x, 1, 2)


def _predictive(states: np.ndarray, E: np.ndarray) -> np.ndarray:
    """P(o_{t+1} = . | o_<=t) = P(h_{t+1} = . | o_<=t) E: (K, L+1, N, S) -> (K, L+1, N, O)."""
    K, L1, N, S = states.shape
    return np.matmul(states.reshape(K, L1 * N, S), E).reshape(K, L1, N, E.shape[2])


def _prepare(hmms, obs, paired: bool):
    hmms_list = check_hmms(hmms)
    single_hmm = isinstance(hmms, HMM)
    T, E, pi = stack(hmms_list)
    O = E.shape[2]
    K = T.shape[0]
    if paired:
        arr = check_obs("obs", obs, O, ndim=3, allow_empty_time=True)
        if arr.shape[0] != K:
            raise ValueError(f"obs must have shape (K={K}, N, T) when paired; got {arr.shape}")
        squeeze_seq = False
    else:
        arr = check_obs("obs", obs, O, allow_empty_time=True)
        squeeze_seq = arr.ndim == 1
        arr = arr.reshape(1, math.prod(arr.shape[:-1]), arr.shape[-1])
    return T, E, pi, arr, single_hmm and not paired, squeeze_seq


def _shape_out(x: np.ndarray, single_hmm: bool, squeeze_seq: bool) -> np.ndarray:
    if squeeze_seq:
        x = x[:, 0]
    if single_hmm:
        x = x[0]
    return x


def forward(hmms, obs, *, paired: bool = False) -> ForwardResult:
    """The forward algorithm for one HMM or K HMMs (sharing S, O) on obs (T,) or (N, T)
    (every HMM on every sequence; batch shape (K, N), the K axis dropped for a single HMM and
    the N axis for a single sequence), or with ``paired`` obs (K, N, T): HMM k on obs[k].
    T = 0 (empty sequences) is allowed: one predictive row, the law of o_1."""
    T, E, pi, arr, single, sq = _prepare(hmms, obs, paired)
    states, log_norm, filtered = _filter(T, E, pi[:, None, :], arr, keep_filtered=True)
    out = (_log(_batch_first(_predictive(states, E))), _batch_first(_log_prefix(log_norm)),
           _log(_batch_first(states)), _log(_batch_first(filtered)))
    return ForwardResult(*(_shape_out(x, single, sq) for x in out))


def forward_predictive(hmms, obs, *, paired: bool = False) -> np.ndarray:
    """P(o_{t+1} = . | o_1..o_t), rows t = 0..T: shape (..., T+1, O) (see :func:`forward`);
    an empty sequence (T = 0) gives the one row P(o_1 = .)."""
    T, E, pi, arr, single, sq = _prepare(hmms, obs, paired)
    states, _, _ = _filter(T, E, pi[:, None, :], arr)
    return _shape_out(_batch_first(_predictive(states, E)), single, sq)


def log_likelihood(hmms, obs, *, paired: bool = False) -> np.ndarray:
    """log P(o_1..o_T) per sequence (batch shape as in :func:`forward`; 0 for T = 0)."""
    T, E, pi, arr, single, sq = _prepare(hmms, obs, paired)
    _, log_norm, _ = _filter(T, E, pi[:, None, :], arr)
    return _shape_out(log_norm.sum(axis=1), single, sq)


# --- brute force (independent reference) ---------------------------------------------------

def _path_probabilities(hmm: HMM, obs: np.ndarray) -> float:
    """sum over hidden paths h_1..h_L of pi(h_1) E(h_1, o_1) prod T(h_{t-1}, h_t) E(h_t, o_t)."""
    S, L = hmm.n_states, obs.shape[0]
    paths = np.array(list(itertools.product(range(S), repeat=L)), dtype=np.int64).reshape(-1, L)
    p = hmm.initial[paths[:, 0]] * hmm.emission[paths[:, 0], obs[0]]
    for t in range(1, L):
        p = p * hmm.transition[paths[:, t - 1], paths[:, t]] * hmm.emission[paths[:, t], obs[t]]
    return float(p.sum())


def bruteforce_likelihood(hmm: HMM, obs) -> float:
    """P(o_1..o_T) by enumerating all S^T hidden paths (small cases only: S^T <= 1e6)."""
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    obs = check_obs("obs", obs, hmm.n_obs, ndim=1)
    if hmm.n_states ** obs.shape[0] > 10**6:
        raise ValueError(f"obs is too long for enumeration: S^T = {hmm.n_states}^{obs.shape[0]} > 1e6")
    return _path_probabilities(hmm, obs)


def bruteforce_predictive(hmm: HMM, obs) -> np.ndarray:
    """(T+1, O): row t = P(o_1..o_t, o_{t+1} = o) / P(o_1..o_t), each joint by enumeration
    (T = 0 allowed: the one row P(o_1 = .))."""
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    obs = check_obs("obs", obs, hmm.n_obs, ndim=1, allow_empty_time=True)
    if hmm.n_states ** (obs.shape[0] + 1) > 10**6:
        raise ValueError("obs is too long for enumeration (S^(T+1) > 1e6)")
    out = np.empty((obs.shape[0] + 1, hmm.n_obs))
    for t in range(obs.shape[0] + 1):
        joint = np.array([_path_probabilities(hmm, np.append(obs[:t], o)) for o in range(hmm.n_obs)])
        out[t] = joint / joint.sum()
    return out


# --- Bayes mixture ------------------------------------------------------------------------------

STATE_BUDGET = 2 ** 24   # state-law entries (K x prompts x (T+1) x S) held at once; prompts are chunked to fit


def _check_mixture(hmms, prior, demos, test):
    hmms = check_hmms(hmms)
    K, O = len(hmms), hmms[0].n_obs
    prior = check_array("prior", prior, shape=(K,))
    if np.any(prior < 0) or abs(prior.sum() - 1.0) > 1e-8:
        raise ValueError(f"prior must be a probability vector over the {K} HMMs; sums to {prior.sum():.6g}")
    test = check_obs("test", test, O, allow_empty_time=True)
    single = test.ndim == 1
    test = test.reshape(1, -1) if single else test
    B = test.shape[0]
    demos = np.asarray(demos)
    if demos.ndim == 2 and single:
        demos = demos[None]
    if demos.ndim != 3 or demos.shape[0] != B:
        raise ValueError(f"demos must have shape (B={B}, n, L) (or (n, L) with a single test sequence); "
                         f"got {demos.shape}")
    if demos.shape[1] > 0:
        demos = check_obs("demos", demos, O, ndim=3)
    else:
        demos = demos.astype(np.int64)
    return hmms, prior, demos, test, single


def _mixture(hmms, prior, demos, test, with_pred: bool):
    """(B, T+1, O) mixture predictive (None unless ``with_pred``) and (B, T+1, K) log weights,
    in chunks of prompts that keep the state laws within STATE_BUDGET entries."""
    T, E, pi = stack(hmms)
    K, S, O = E.shape
    B, Lt = test.shape
    chunk = max(1, STATE_BUDGET // (K * (Lt + 1) * S))
    preds, logws = [], []
    for s in range(0, B, chunk):
        d, x = demos[s:s + chunk], test[s:s + chunk]
        b, n, L = d.shape
        lw = np.broadcast_to(_log(prior)[:, None, None], (K, 1, b))        # (K, 1, b)
        if n:
            _, log_norm, _ = _filter(T, E, pi[:, None, :], d.reshape(1, b * n, L))
            lw = lw + log_norm.sum(axis=1).reshape(K, 1, b, n).sum(axis=-1)
        states, log_norm, _ = _filter(T, E, pi[:, None, :], x[None])    # (K, Lt+1, b, S), (K, Lt, b)
        logw = lw + _log_prefix(log_norm)                                # (K, Lt+1, b)
        m = logw.max(axis=0)
        logw -= m + np.log(np.exp(logw - m).sum(axis=0))
        logws.append(np.transpose(logw, (2, 1, 0)))                      # (b, Lt+1, K)
        if with_pred:                                                    # sum_k w_k P_k(o_{t+1} = . | o_<=t)
            pk = _predictive(states, E)
            pk *= np.exp(logw)[..., None]
            preds.append(np.swapaxes(pk.sum(axis=0), 0, 1))              # (b, Lt+1, O)
    return (np.concatenate(preds) if with_pred else None), np.concatenate(logws)


def mixture_log_weights(hmms, prior, demos, test) -> np.ndarray:
    """log posterior weights log P(k | demos, o^test_<=t), shape (B, T+1, K) (or (T+1, K))."""
    hmms, prior, demos, test, single = _check_mixture(hmms, prior, demos, test)
    _, logw = _mixture(hmms, prior, demos, test, with_pred=False)
    return logw[0] if single else logw


def bayes_mixture_predictive(hmms, prior, demos, test, *, return_weights: bool = False):
    """The Bayes-optimal next-observation law of mixture-of-HMMs prompts:
    p(o_{t+1} | demos, o^test_<=t) = sum_k w_k(t) P_k(o_{t+1} | o^test_<=t) with
    w_k(t) proportional to prior_k prod_i P_k(demo_i) P_k(o^test_<=t).

    ``demos`` (B, n, L) (n may be 0), ``test`` (B, T) -> (B, T+1, O); a single prompt
    (demos (n, L), test (T,)) -> (T+1, O).  T = 0 gives the one row p(o_1 | demos).
    ``return_weights`` also returns the weights (B, T+1, K).

    One filter pass covers all K HMMs and all prompts at once (the batch axes of
    :func:`_filter`); the weights are normalised in log space, so long demonstrations
    whose likelihoods underflow keep their exact posterior."""
    hmms, prior, demos, test, single = _check_mixture(hmms, prior, demos, test)
    pred, logw = _mixture(hmms, prior, demos, test, with_pred=True)
    weights = np.exp(logw)
    if single:
        pred, weights = pred[0], weights[0]
    return (pred, weights) if return_weights else pred


def bruteforce_mixture_weights(hmms, prior, demos, test_prefix) -> np.ndarray:
    """(K,): prior_k prod_i P_k(demo_i) P_k(test_prefix) normalised, every likelihood by
    enumeration (an empty ``test_prefix`` contributes 1)."""
    hmms = check_hmms(hmms)
    O = hmms[0].n_obs
    prior = check_array("prior", prior, shape=(len(hmms),))
    demos = np.asarray(demos)
    demos = check_obs("demos", demos, O, ndim=2) if demos.size else demos.reshape(0, 1).astype(np.int64)
    test_prefix = np.asarray(test_prefix)
    test_prefix = check_obs("test_prefix", test_prefix, O, ndim=1) if test_prefix.size else test_prefix.astype(np.int64)
    w = prior.copy()
    for k, h in enumerate(hmms):
        for d in demos:
            w[k] *= bruteforce_likelihood(h, d)
        if test_prefix.size:
            w[k] *= bruteforce_likelihood(h, test_prefix)
    return w / w.sum()


# --- windows, Hankel matrices, features --------------------------------------------------------

def windowed_predictive(hmm: HMM, obs, r: int) -> np.ndarray:
    """Row t = P(o_{t+1} = . | o_{t-r+1}..o_t): the predictor that sees only the last r
    observations, started from the exact law of h_{t-r+1} (initial @ T^(t-r)); rows t <= r
    equal the full predictive.  obs (T,) or (N, T) -> (..., T+1, O)."""
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    r = check_int("r", r)
    obs = check_obs("obs", obs, hmm.n_obs)
    single = obs.ndim == 1
    obs = obs.reshape(-1, obs.shape[-1])
    N, L = obs.shape
    T, E, pi = stack(hmm)
    states, _, _ = _filter(T, E, pi[:, None, :], obs[None])
    out = _batch_first(_predictive(states, E))[0]
    if L > r:
        # window ending at t (t = r+1 .. L) covers o_{t-r+1}..o_t = obs[:, t-r:t]
        starts = np.empty((L - r, hmm.n_states))
        law = hmm.initial.copy()
        for s in range(1, L - r + 1):                 # law of h_{s+1}, s = 1..L-r
            law = law @ hmm.transition
            starts[s - 1] = law
        idx = np.arange(r + 1, L + 1)
        windows = np.stack([obs[:, t - r:t] for t in idx], axis=1).reshape(-1, r)      # (N(L-r), r)
        b0 = np.broadcast_to(starts[None], (N, L - r, hmm.n_states)).reshape(1, -1, hmm.n_states)
        states, _, _ = _filter(T, E, b0, windows[None])
        out[:, r + 1:] = (states[0, -1] @ hmm.emission).reshape(N, L - r, -1)
    return out[0] if single else out


def all_sequences(n_obs: int, length: int) -> np.ndarray:
    """Every sequence of ``length`` ids in [0, n_obs), lexicographic: (n_obs^length, length)."""
    return np.array(list(itertools.product(range(n_obs), repeat=length)), dtype=np.int64).reshape(-1, length)


def hankel_matrix(hmm: HMM, past: int, future: int = 1) -> np.ndarray:
    """H[w, f] = P(o_1..o_past = w, o_{past+1}..o_{past+future} = f) from the HMM's initial
    law (its stationary law for the package's generators): shape (O^past, O^future)."""
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    past, future = check_int("past", past), check_int("future", future)
    O = hmm.n_obs
    if O ** (past + future) > 2 * 10**6:
        raise ValueError(f"past + future too long: O^(past+future) = {O}^{past + future} > 2e6")
    seqs = all_sequences(O, past + future)
    return np.exp(log_likelihood(hmm, seqs)).reshape(O ** past, O ** future)


def future_matrix(hmm: HMM, r: int) -> np.ndarray:
    """P(F_r = f | h_1 = h): (O^r, S), column h the law of the next r observations from h."""
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    r = check_int("r", r)
    S, O = hmm.n_states, hmm.n_obs
    if O ** r > 2 * 10**6:
        raise ValueError(f"r too large: O^r = {O}^{r} > 2e6")
    seqs = all_sequences(O, r)
    T, E, _ = stack(hmm)
    cols = []
    for h in range(S):
        _, log_norm, _ = _filter(T, E, np.eye(S)[h][None, None, :], seqs[None])
        cols.append(np.exp(log_norm[0].sum(axis=0)))
    return np.stack(cols, axis=1)


def _factors(hmm: HMM):
    if not isinstance(hmm, HMM):
        raise TypeError(f"hmm must be an HMM; got {type(hmm).__name__}")
    if hmm.factors is None:
        raise ValueError("hmm must carry low-rank factors (Xi, M); build it with random_hmm(..., rank=d)")
    return hmm.factors


def phi_features(hmm: HMM, obs) -> np.ndarray:
    """phi(o_<=t) = Xi^T b_t with b_t = P(h_t | o_<=t): (..., T, d), row t-1 for prefix o_<=t."""
    Xi, _ = _factors(hmm)
    return np.exp(forward(hmm, obs).log_filtered) @ Xi


def psi_features(hmm: HMM, futures) -> np.ndarray:
    """psi(f) = M P(f | h_{t+1} = .) for future windows ``futures`` (F, r): (F, d)."""
    _, M = _factors(hmm)
    futures = check_obs("futures", futures, hmm.n_obs, ndim=2)
    T, E, _ = stack(hmm)
    S = hmm.n_states
    lik = np.stack([np.exp(_filter(T, E, np.eye(S)[h][None, None, :], futures[None])[1][0].sum(axis=0))
                    for h in range(S)], axis=1)
    return lik @ M.T


# --- the in-context regression of the construction [reconstructed] ------------------------------

def window_index(obs: np.ndarray, n_obs: int, r: int, lag: int) -> np.ndarray:
    """Index of the window o_{t-lag-r+1}..o_{t-lag} at every position t (1-based) as
    sum_k o_{t-lag-k} n_obs^k (k = 0 the most recent), -1 where the window is incomplete."""
    obs = np.asarray(obs, dtype=np.int64)
    L = obs.shape[-1]
    idx = np.full(obs.shape, -1, dtype=np.int64)
    for t in range(lag + r, L + 1):                 # 1-based t
        w = np.zeros(obs.shape[:-1], dtype=np.int64)
        for k in range(r):
            w += obs[..., t - lag - k - 1] * n_obs ** k
        idx[..., t - 1] = w
    return idx


def window_features(obs, n_obs: int, r: int, lag: int = 0) -> np.ndarray:
    """One-hot window features (..., L, n_obs^r): at position t the window ending at t - lag
    (zero rows where it is incomplete)."""
    n_obs, r = check_int("n_obs", n_obs), check_int("r", r)
    lag = check_int("lag", lag, minimum=0)
    obs = check_obs("obs", obs, n_obs, ndim=(1, 2, 3))
    idx = window_index(obs, n_obs, r, lag)
    X = np.zeros(obs.shape + (n_obs ** r,))
    mask = idx >= 0
    X[mask, idx[mask]] = 1.0
    return X


def demo_regression(demos, n_obs: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The demonstrations' least-squares data: every demo position s gives the pair
    (x = window o_{s-r}..o_{s-1}, y = one-hot o_s) (x = 0 for s <= r).  demos (B, n, L) ->
    X (B, nL, O^r), Y (B, nL, O)."""
    n_obs, r = check_int("n_obs", n_obs), check_int("r", r)
    demos = check_obs("demos", demos, n_obs, ndim=3)
    B, n, L = demos.shape
    X = window_features(demos, n_obs, r, lag=1).reshape(B, n * L, -1)
    Y = np.eye(n_obs)[demos].reshape(B, n * L, n_obs)
    return X, Y


def gd_matrix_iterates(X, Y, lr: float, steps: int, W0=None) -> np.ndarray:
    """W_{k+1} = W_k - (lr/N) sum_j (W_k x_j - y_j) x_j^T from W_0 (default 0):
    X (B, N, p), Y (B, N, O) -> (steps+1, B, O, p)."""
    X = check_array("X", X, ndim=3)
    B, N, p = X.shape
    Y = check_array("Y", Y, ndim=3)
    if Y.shape[:2] != (B, N):
        raise ValueError(f"Y must have shape ({B}, {N}, O); got {Y.shape}")
    lr = check_real("lr", lr)
    steps = check_int("steps", steps, minimum=0)
    W = np.zeros((B, Y.shape[2], p)) if W0 is None else np.array(
        check_array("W0", W0, shape=(B, Y.shape[2], p)))
    out = [W]
    for _ in range(steps):
        resid = np.einsum("bop,bnp->bno", W, X) - Y
        W = W - (lr / N) * np.einsum("bno,bnp->bop", resid, X)
        out.append(W)
    return np.stack(out)


def least_squares_matrix(X, Y) -> np.ndarray:
    """The minimum-norm least-squares solution W (B, O, p) of X W^T ~ Y (the GD limit from 0)."""
    X = check_array("X", X, ndim=3)
    Y = check_array("Y", Y, ndim=3)
    if Y.shape[:2] != X.shape[:2]:
        raise ValueError(f"Y must have shape {X.shape[:2] + (None,)}; got {Y.shape}")
    return np.swapaxes(np.linalg.pinv(X) @ Y, 1, 2)


def covariance_spectrum(X) -> np.ndarray:
    """Eigenvalues (ascending) of Sigma = X^T X / N per prompt: (B, p)."""
    X = check_array("X", X, ndim=3)
    return np.linalg.eigvalsh(np.einsum("bnp,bnq->bpq", X, X) / X.shape[1])


def simplex_readout(raw) -> np.ndarray:
    """Clip to >= 0 and normalise the last axis; a row with no positive mass -> uniform."""
    raw = check_array("raw", raw)
    q = np.clip(raw, 0.0, None)
    s = q.sum(axis=-1, keepdims=True)
    return np.where(s > 0, q / np.where(s > 0, s, 1.0), 1.0 / raw.shape[-1])


def regression_predictive(W, test, n_obs: int, r: int) -> np.ndarray:
    """simplex_readout(W x_t) at every test position, x_t = window o_{t-r+1}..o_t: (B, T, O)
    (row t-1 predicts o_{t+1}; rows t < r have x = 0 and read out uniform)."""
    W = check_array("W", W, ndim=3)
    X = window_features(test, n_obs, r, lag=0)
    if X.ndim != 3 or W.shape != (X.shape[0], n_obs, X.shape[-1]):
        raise ValueError(f"W must have shape (B, n_obs, n_obs^r) = ({X.shape[0]}, {n_obs}, {X.shape[-1]}) for test "
                         f"of shape {X.shape[:-1]}; got {W.shape}")
    return simplex_readout(np.einsum("bop,btp->bto", W, X))
