"""Branches of the HMM task code (``theory/tasks/hmm.py``) that the claims reach only on
chains that hide them (found by ``make mutation``).

``stationary`` picks the eigenvector of eigenvalue 1 and then polishes it with three power
steps; on the claims' chains (low rank, they mix within a step or two) the polish alone lands on
the stationary law, so choosing the wrong eigenvector went unseen.  A slowly mixing chain
(second eigenvalue 0.99) needs the right eigenvector: checked against the stationary law
solved as a linear system (pi (T - I) = 0, sum pi = 1).
"""

import numpy as np

from mechverify.theory.tasks.hmm import stationary


def _solved(T: np.ndarray) -> np.ndarray:
    S = T.shape[0]
    A = np.vstack([(T - np.eye(S)).T, np.ones((1, S))])
    b = np.concatenate([np.zeros(S), [1.0]])
    return np.linalg.lstsq(A, b, rcond=None)[0]


def test_stationary_of_a_slowly_mixing_chain():
    rng = np.random.default_rng(3)
    for S in (3, 6, 12):
        T = 0.99 * np.eye(S) + 0.01 * rng.dirichlet(np.ones(S), size=S)
        T[0] = 0.9 * T[0] + 0.1 * np.eye(S)[1]          # asymmetric: the law is not uniform
        T /= T.sum(axis=1, keepdims=True)
        p, ref = stationary(T), _solved(T)
        assert np.abs(ref - ref.mean()).max() > 1e-3              # a non-uniform law
        assert np.abs(p - ref).max() <= 1e-12, (S, np.abs(p - ref).max())
        assert np.abs(p @ T - p).max() <= 1e-12
