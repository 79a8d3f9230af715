"""A transformer that predicts the next observation of a mixture-of-HMMs prompt: feature
extraction in the lower layers, in-context gradient descent in the upper layers.

This is our reconstruction [reconstructed] of the construction behind Theorem 1 of Hao,
Ye, Han, Zhang (2025), built from the clues the reviewers quote (position indicators
v_pos, previous-token gathering, "gradient descent per layer" on a matrix W, depth
logarithmic in the sequence length); the paper's own weights, feature map and bounds were
not available (docs/hmm.md §3, §9).  Choices that are ours: the feature is the
one-hot code of the last r observations (p = O^r, task-independent, so the regression on
it estimates P(o_{t+1} | last r observations)); block 1 runs on each sequence separately
(attention never crosses a sequence boundary); the regression target of demo token s is
its own observation, paired with the window o_{s-r}..o_{s-1}.

Notation (paper / spec -> code).

| paper / spec                         | code                                           |
|--------------------------------------|------------------------------------------------|
| |O|, observation o_t (one-hot)        | ``n_obs`` = O, field ``obs``                   |
| v_pos in {0,1}^L                     | field ``pos`` (position within its sequence)   |
| window length r, feature x_t (p)     | ``r``; p = O^r; fields ``x_prev``, ``x_cur``   |
| y_{i,t+1}                            | field ``res`` (starts as the token's own obs)  |
| W_k (O x p), eta, K                  | implicit in ``res`` / ``pred``; ``lr``; ``n_gd_layers`` |
| softmax inverse temperature          | ``beta``                                       |
| readout clip/normalise(W_K x)        | :meth:`HMMConstruction.predict`                |

Residual layout (:func:`hmm_layout`): obs [O] | pos [L] | win [O r] (slot k-1 holds the
observation k back) | x_prev [p] | x_cur [p] | res [O] | pred [O] | pad.

Block 1 (features; one softmax layer + one MLP).  Head k (k = 1..r) of a causal
:class:`mechverify.constructions.modules.SoftmaxAttention` has query beta sqrt(d_head) S_k pos_t and key
pos_j (S_k the shift by k), so its logits are beta 1[pos_j = pos_t - k]; its value is
obs_j, written to window slot k.  At position t >= k+1 the head puts weight
e^beta / (e^beta + t - 1) on the target, so the copied vector is off by at most
2 (t-1) e^{-beta} max_j |v_j| (claim hmm/positional-head-bound).  The MLP has one ReLU
unit per window w = (w_0..w_{r-1}) (w_0 the most recent) and feature:
x_prev[w] = ReLU(sum_k win_{k+1}[w_k] + valid_prev - r) (the window o_{t-r}..o_{t-1}) and
x_cur[w] = ReLU(obs[w_0] + sum_{k>=1} win_k[w_k] + valid_cur - r) (o_{t-r+1}..o_t), where
valid_* = sum of the pos coordinates at which the window is complete (a linear function
of v_pos).  With exact one-hots each unit is 1 iff every digit matches, else <= 0.

Block 2 (regression; one linear-attention layer per GD step, two heads, keys and values
from the n L demonstration tokens only).  Head A: W^KQ[x_prev, x_prev] = I,
W^PV[res, res] = -eta I; head B: W^KQ[x_prev, x_cur] = I, W^PV[pred, res] = -eta I.  By
induction (as for von Oswald et al.'s layer, :mod:`mechverify.constructions.gd_icl`) after k layers
res_j = y_j - W_k x_prev_j at every demo token and pred_t = -W_k x_cur_t at every token,
where W_{k+1} = W_k - (eta / nL) sum_j (W_k x_j - y_j) x_j^T from W_0 = 0.  The update
sums over demo tokens, so it is position-free and invariant under permutations of the
demonstrations.  Readout: clip(-pred, 0), normalised (uniform if no mass).

Error decomposition (docs/hmm.md §3.2, each term exposed by :func:`error_terms`):
TV(oracle, model) <= TV(oracle, window_r) + TV(window_r, LS) + TV(LS, GD_K) + TV(GD_K, model_beta).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mechverify.constructions.encoders import HMMTokens, HMMWithSeparators
from mechverify.constructions.modules import Layout, LinearAttention, SoftmaxAttention
from mechverify.theory.algorithms.hmm import (demo_regression, forward_predictive, gd_matrix_iterates, least_squares_matrix,
                                   regression_predictive, windowed_predictive)
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.hmm import check_hmms


def hmm_layout(n_obs: int, r: int, max_len: int) -> Layout:
    """The residual layout (padded so that each of the r heads has width >= max(max_len, O))."""
    O, r, L = check_int("n_obs", n_obs), check_int("r", r), check_int("max_len", max_len)
    p = O ** r
    fields = [("obs", O), ("pos", L), ("win", O * r), ("x_prev", p), ("x_cur", p), ("res", O), ("pred", O)]
    width = sum(w for _, w in fields)
    D = max(-(-width // r) * r, r * max(L, O))
    if D > width:
        fields.append(("pad", D - width))
    return Layout(tuple(fields))


def _digits(w: int, n_obs: int, r: int) -> list[int]:
    """Digits w_0..w_{r-1} of window index w = sum_k w_k n_obs^k (w_0 the most recent)."""
    return [(w // n_obs ** k) % n_obs for k in range(r)]


class HMMConstruction(nn.Module):
    """Block 1 (positional heads + window MLP) and block 2 (``n_gd_layers`` GD layers)."""

    def __init__(self, n_obs: int, r: int, n_gd_layers: int, lr: float, beta: float, max_len: int,
                 *, dtype=torch.float64, device=None):
        super().__init__()
        self.n_obs, self.r = check_int("n_obs", n_obs), check_int("r", r)
        self.n_gd_layers = check_int("n_gd_layers", n_gd_layers, minimum=0)
        self.lr, self.beta = check_real("lr", lr), check_real("beta", beta, positive=True)
        self.max_len = check_int("max_len", max_len)
        if n_obs ** r > 4096:
            raise ValueError(f"r too large: the feature has n_obs^r = {n_obs ** r} > 4096 coordinates")
        self.layout = lay = hmm_layout(n_obs, r, max_len)
        D, O, L, p = lay.width, n_obs, max_len, n_obs ** r
        kw = {"dtype": dtype, "device": device}
        self.attn = SoftmaxAttention(D, r, **kw)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * p, **kw), nn.ReLU(), nn.Linear(2 * p, D, **kw))
        self.gd = nn.ModuleList([LinearAttention(D, 2, **kw) for _ in range(self.n_gd_layers)])
        self._set_weights(D, O, L, p, dtype, device)

    @torch.no_grad()
    def _set_weights(self, D, O, L, p, dtype, device):
        lay, r, dh = self.layout, self.r, self.attn.d_head
        pos, obs, win = lay.slice("pos").start, lay.slice("obs").start, lay.slice("win").start
        W = torch.zeros(3 * D, D, dtype=dtype, device=device)
        out = torch.zeros(D, D, dtype=dtype, device=device)
        for h in range(r):
            k = h + 1
            for a in range(L - k):                       # q_a = pos[a + k]: target position pos_t - k
                W[h * dh + a, pos + a + k] = self.beta * dh ** 0.5
            for a in range(L):
                W[D + h * dh + a, pos + a] = 1.0
            for c in range(O):
                W[2 * D + h * dh + c, obs + c] = 1.0
                out[win + h * O + c, h * dh + c] = 1.0
        self.attn.qkv.weight.copy_(W)
        self.attn.qkv.bias.zero_()
        self.attn.out.weight.copy_(out)
        self.attn.out.bias.zero_()
        W1 = torch.zeros(2 * p, D, dtype=dtype, device=device)
        b1 = torch.full((2 * p,), -float(r), dtype=dtype, device=device)
        W2 = torch.zeros(D, 2 * p, dtype=dtype, device=device)
        xp, xc = lay.slice("x_prev").start, lay.slice("x_cur").start
        for w in range(p):
            dig = _digits(w, O, r)
            for k, o in enumerate(dig):                  # x_prev: digit k is the observation k+1 back
                W1[w, win + k * O + o] += 1.0
            W1[p + w, obs + dig[0]] += 1.0               # x_cur: digit 0 is the token itself
            for k in range(1, r):
                W1[p + w, win + (k - 1) * O + dig[k]] += 1.0
            W1[w, pos + r:pos + L] = 1.0                 # window o_{t-r}..o_{t-1} complete iff t >= r+1
            W1[p + w, pos + r - 1:pos + L] = 1.0         # window o_{t-r+1}..o_t complete iff t >= r
            W2[xp + w, w] = 1.0
            W2[xc + w, p + w] = 1.0
        self.mlp[0].weight.copy_(W1)
        self.mlp[0].bias.copy_(b1)
        self.mlp[2].weight.copy_(W2)
        self.mlp[2].bias.zero_()
        res, pred = lay.slice("res"), lay.slice("pred")
        kq_a = torch.zeros(D, D, dtype=dtype, device=device)
        kq_b = torch.zeros(D, D, dtype=dtype, device=device)
        pv_a = torch.zeros(D, D, dtype=dtype, device=device)
        pv_b = torch.zeros(D, D, dtype=dtype, device=device)
        eye_p, eye_o = torch.eye(p, dtype=dtype, device=device), torch.eye(O, dtype=dtype, device=device)
        kq_a[xp:xp + p, xp:xp + p] = eye_p
        kq_b[xp:xp + p, xc:xc + p] = eye_p
        pv_a[res, res] = -self.lr * eye_o
        pv_b[pred, res] = -self.lr * eye_o
        for layer in self.gd:
            layer.set_merged([kq_a, kq_b], [pv_a, pv_b])

    def _check(self, name: str, obs) -> torch.Tensor:
        if not isinstance(obs, torch.Tensor) or obs.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an integer torch.Tensor of observation ids")
        if obs.shape[-1] < 1 or obs.shape[-1] > self.max_len:
            raise ValueError(f"{name} must hold sequences of length 1..{self.max_len}; got shape {tuple(obs.shape)}")
        if obs.numel() and (obs.min() < 0 or obs.max() >= self.n_obs):
            raise ValueError(f"{name} must hold ids in [0, {self.n_obs})")
        return obs.long()

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        """Tokens (..., L, D) of sequences (..., L): obs one-hot, position one-hot, res = obs."""
        lay = self.layout
        dtype, device = self.attn.qkv.weight.dtype, self.attn.qkv.weight.device
        Z = torch.zeros(obs.shape + (lay.width,), dtype=dtype, device=device)
        onehot = nn.functional.one_hot(obs, self.n_obs).to(dtype)
        Z[..., lay.slice("obs")] = onehot
        Z[..., lay.slice("res")] = onehot
        L = obs.shape[-1]
        Z[..., lay.slice("pos").start + torch.arange(L, device=device)] = torch.eye(L, dtype=dtype, device=device)
        return Z

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Block 1 on sequences (N, L) (each sequence on its own): the residual (N, L, D)."""
        Z = self.embed(obs)
        Z = Z + self.attn(Z)
        return Z + self.mlp(Z)

    def forward(self, demos: torch.Tensor, test: torch.Tensor, return_all: bool = False):
        """Raw scores -pred (B, T, O) at the test tokens (row t-1 predicts o_{t+1}); with
        ``return_all`` also the residual stream (B, nL + T, D) before and after each GD layer."""
        demos, test = self._check("demos", demos), self._check("test", test)
        if demos.dim() != 3 or test.dim() != 2 or demos.shape[0] != test.shape[0] or demos.shape[1] < 1:
            raise ValueError(f"demos must be (B, n >= 1, L) and test (B, T) with the same B; got "
                             f"{tuple(demos.shape)}, {tuple(test.shape)}")
        B, n, L = demos.shape
        Zd = self.features(demos.reshape(B * n, L)).reshape(B, n * L, -1)
        Zt = self.features(test)
        Z = torch.cat([Zd, Zt], dim=1)
        states = [Z]
        for layer in self.gd:
            Z = Z + layer(Z, n * L)
            states.append(Z)
        raw = -Z[:, n * L:, self.layout.slice("pred")]
        return (raw, states) if return_all else raw

    def predict(self, demos: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        """The next-observation law (B, T, O): clip(raw, 0) normalised, uniform where no mass."""
        return self.law(self(demos, test))

    def law(self, raw: torch.Tensor) -> torch.Tensor:
        """clip(raw, 0) normalised over the last axis, uniform where no mass."""
        q = raw.clamp_min(0.0)
        s = q.sum(-1, keepdim=True)
        return torch.where(s > 0, q / torch.where(s > 0, s, torch.ones_like(s)), torch.full_like(q, 1.0 / self.n_obs))

    def token_scores(self, tokens: HMMTokens, encoder: HMMWithSeparators) -> torch.Tensor:
        """Raw scores (B, len, O) at every token of a prompt encoded by ``encoder`` (the
        trained model's format): the construction reads the sequences back from the tokens
        (its block 1 runs on each sequence alone) and scores each test token o_t (predicting
        o_{t+1}); every other token scores 0 -- at SEP_test that is the construction's own
        value, W x_cur = 0 with no observation yet, so its law there is uniform.
        ``encoder.readout`` of the result gives the same rows as for the trained model."""
        demos, test = encoder.sequences(tokens)
        raw = self(torch.from_numpy(demos), torch.from_numpy(test))
        out = raw.new_zeros(tokens.ids.shape + (self.n_obs,))
        out[:, encoder.test_token_positions(tokens.ids.shape[1])] = raw
        return out


def hmm_construction(n_obs: int, r: int, n_gd_layers: int, lr: float, beta: float, max_len: int, *,
                     dtype=torch.float64, device=None) -> HMMConstruction:
    """The constructed transformer (see the module docstring)."""
    return HMMConstruction(n_obs, r, n_gd_layers, lr, beta, max_len, dtype=dtype, device=device)


def error_terms(hmms, tasks: np.ndarray, demos: np.ndarray, test: np.ndarray, r: int, n_gd_layers: int,
                lr: float, beta: float, *, model_pred: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per test position t >= r (1-based), the total-variation terms of the decomposition
    TV(oracle, model) <= window + statistical + optimisation + softmax, each (B, T - r + 1):

    window        TV(P_k(. | o_<=t), P_k(. | last r obs))            (theory, exact)
    statistical   TV(P_k(. | last r obs), LS readout)                (theory; LS on the demos)
    optimisation  TV(LS readout, K-step GD readout)                   (theory)
    softmax       TV(K-step GD readout, the construction at beta)     (construction vs theory)
    total         TV(P_k(. | o_<=t), the construction)

    ``model_pred`` (B, T, O) replaces the construction's output (else it is built and run)."""
    hmms = check_hmms(hmms)
    O = hmms[0].n_obs
    r, n_gd_layers = check_int("r", r), check_int("n_gd_layers", n_gd_layers, minimum=0)
    lr, beta = check_real("lr", lr), check_real("beta", beta, positive=True)
    test = np.asarray(test)
    demos = np.asarray(demos)
    if test.ndim != 2 or demos.ndim != 3 or demos.shape[0] != test.shape[0]:
        raise ValueError(f"demos must be (B, n, L) and test (B, T) with the same B; got {demos.shape}, {test.shape}")
    tasks = np.asarray(tasks)
    if tasks.shape != (test.shape[0],) or not np.issubdtype(tasks.dtype, np.integer) or tasks.min() < 0 \
            or tasks.max() >= len(hmms):
        raise ValueError(f"tasks must hold {test.shape[0]} task ids in [0, {len(hmms)})")
    B, T = test.shape
    if model_pred is not None and np.shape(model_pred) != (B, T, O):
        raise ValueError(f"model_pred must have shape ({B}, {T}, {O}); got {np.shape(model_pred)}")
    oracle = np.stack([forward_predictive(hmms[k], test[b])[1:] for b, k in enumerate(tasks)])
    window = np.stack([windowed_predictive(hmms[k], test[b], r)[1:] for b, k in enumerate(tasks)])
    X, Y = demo_regression(demos, O, r)
    ls = regression_predictive(least_squares_matrix(X, Y), test, O, r)
    gd = regression_predictive(gd_matrix_iterates(X, Y, lr, n_gd_layers)[-1], test, O, r)
    if model_pred is None:
        model = hmm_construction(O, r, n_gd_layers, lr, beta, max(demos.shape[2], T))
        with torch.no_grad():
            model_pred = model.predict(torch.from_numpy(demos), torch.from_numpy(test)).numpy()
    tv = lambda a, b: 0.5 * np.abs(a - b).sum(-1)[:, r - 1:]
    return {"window": tv(oracle, window), "statistical": tv(window, ls), "optimisation": tv(ls, gd),
            "softmax": tv(gd, model_pred), "total": tv(oracle, model_pred)}
