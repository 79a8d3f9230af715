"""Models of the staged-Markov spec (docs/markov.md §2.3, §3.1): the minimal attention-only
model, the full one-layer model, and the hand-built minimal model that fits the teacher.

Notation and residual layout:

=====================  ====================  ============================================
paper                  code                  meaning
=====================  ====================  ============================================
x_j ∈ {e_1..e_d}       ``tokens[:, j]``      token at input position j (0-based)
p_j                    one-hot of j          position code, P = w + L - 1 positions
z_j = [x_j ; p_j]      ``embed``             width D = d + P: coordinates 0..d-1 token,
                                             d..d+P-1 position
W_Q^h (D x D)          ``W_Q[h]``            score(t, j) = z_tᵀ W_Q^hᵀ z_j / √D = W_Q^h[j, t]
                                             on one-hot codes (row: key code, col: query)
W_V^h (D x D)          ``W_V[h]`` (d x D)    only the first d output rows reach the logits
                                             (frozen identity decoder), so only they are kept
β                      ``beta``              logit gap of the hand-built attention
=====================  ====================  ============================================

Input position t predicts the token at position t + 1; "lag i" of that prediction is input
position t + 1 − i (lag 1 = the query position itself).

Minimal model: logits_t = Σ_h Σ_{j<=t} softmax_j(score_h(t, j)) [W_V^h z_j]_{1:d}; no key or
output projection, residual, LayerNorm or MLP.  ``max_lag`` restricts every head to lags
1..max_lag (the restricted-context "k-gram" baselines of the paper's code).

Hand-built fit [reconstructed] (docs/markov.md §3.1): head k puts logit ln(α_i / max α) on the
positions of lag i ∈ I(k) through the position×position block W_Q^k[d + j, d + t] and −β
elsewhere (the spec's β + ln(α_i / max α) vs 0, shifted by −β per query: the same softmax,
but the in-block ratios stay exact in float32 at any β, where 10⁶ + ln(3/7) would round), and W_V^k = ((Σ_i α_i)/τ) A*_k on the token block.  As β → ∞ head k's attention
tends to α/Σα on I(k) and the logits to the teacher's (1/τ) Σ_k A*_k Σ_{i∈I(k)} α_i x_{t+1-i};
for finite β (α = 1) the n_out = t + 1 − |I(k)| positions outside the block keep the mass
n_out / (n_out + |I(k)| e^β) ≤ n_out e^{−β} / |I(k)| (exact sparsity only as β → ∞).

Full model: :class:`mechverify.constructions.modules.GPT` with one pre-LN block on one-hot tokens (the
read-in is the token embedding, learned positions); its MLP is 4 x width wide and it has no
dropout (the paper's: MLP 64, dropout 0.1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mechverify.constructions.modules import GPT
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.markov import MarkovTask, teacher_matrices

INITS = ("xavier", "small")

__all__ = ["MinimalMarkovModel", "full_markov_model", "exact_minimal_model", "full_attention_pattern"]


def _check_tokens(tokens, d: int, P: int) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tokens.dim() != 2:
        raise TypeError("tokens must be a (B, positions) torch.long tensor")
    if tokens.shape[1] > P or tokens.shape[1] < 1:
        raise ValueError(f"tokens must have 1..{P} positions; got {tokens.shape[1]}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= d):
        raise ValueError(f"tokens must lie in 0..d-1 = {d - 1}")
    return tokens


class MinimalMarkovModel(nn.Module):
    """The minimal attention-only model (see module doc).  Parameters ``W_Q`` (H, D, D),
    ``W_V`` (H, d, D)."""

    def __init__(self, d: int, n_positions: int, n_heads: int = 3, *, max_lag: int | None = None,
                 init: str = "xavier", sigma_q: float = 0.0, dtype=torch.float32, device=None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.d = check_int("d", d)
        self.P = check_int("n_positions", n_positions)
        self.H = check_int("n_heads", n_heads)
        self.max_lag = None if max_lag is None else check_int("max_lag", max_lag)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}; got {init!r}")
        sigma_q = check_real("sigma_q", sigma_q, nonnegative=True)
        D = self.D = self.d + self.P
        kw = dict(dtype=dtype, device=device)
        if init == "xavier":              # xavier-uniform bound for a D x D matrix
            bound = math.sqrt(6.0 / (2 * D))
            wq = (torch.rand(self.H, D, D, generator=generator, dtype=dtype) * 2 - 1) * bound
            wv = (torch.rand(self.H, D, D, generator=generator, dtype=dtype) * 2 - 1) * bound
            wv = wv[:, :self.d]
        else:                             # "small init": W_Q ~ U(-σ_Q, σ_Q), W_V = 0
            wq = (torch.rand(self.H, D, D, generator=generator, dtype=dtype) * 2 - 1) * sigma_q
            wv = torch.zeros(self.H, self.d, D, dtype=dtype)
        self.W_Q = nn.Parameter(wq.to(**kw))
        self.W_V = nn.Parameter(wv.to(**kw))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """z_j = [one-hot token ; one-hot position]: (B, n, D)."""
        tokens = _check_tokens(tokens, self.d, self.P)
        B, n = tokens.shape
        z = torch.zeros(B, n, self.D, dtype=self.W_Q.dtype, device=self.W_Q.device)
        z.scatter_(2, tokens.unsqueeze(-1), 1.0)
        z[:, torch.arange(n), self.d + torch.arange(n)] = 1.0
        return z

    def forward(self, tokens: torch.Tensor, query_from: int = 0, return_pattern: bool = False):
        """Logits (B, n - query_from, d) at input positions query_from..n-1 (each predicting
        the next token); with ``return_pattern`` also the attention (B, H, n_q, n)."""
        tokens = _check_tokens(tokens, self.d, self.P)
        B, n = tokens.shape
        d, D = self.d, self.D
        if not 0 <= query_from < n:
            raise ValueError(f"query_from must be in 0..{n - 1}; got {query_from}")
        # z is one-hot in two places, so products with z are column gathers:
        # W_Q z_t = W_Q[:, tok_t] + W_Q[:, d + t];  q·z_j = q[tok_j] + q[d + j].
        WQt = self.W_Q.transpose(1, 2)                                     # (H, D_col, D_row)
        pos_q = torch.arange(query_from, n, device=tokens.device)
        q = WQt[:, tokens[:, query_from:]] + WQt[:, d + pos_q].unsqueeze(1)   # (H, B, nq, D)
        idx = tokens.unsqueeze(1).expand(B, n - query_from, n).unsqueeze(0).expand(self.H, -1, -1, -1)
        scores = (q.gather(-1, idx) + q[..., d:d + n]) / math.sqrt(D)     # (H, B, nq, n)
        t = pos_q[:, None]
        j = torch.arange(n, device=tokens.device)[None, :]
        allowed = j <= t
        if self.max_lag is not None:
            allowed = allowed & (j > t - self.max_lag)
        scores = scores + torch.zeros(allowed.shape, dtype=scores.dtype, device=scores.device).masked_fill(
            ~allowed, float("-inf"))
        # softmax by hand: torch.softmax is several times slower on CPU for short rows
        e = (scores - scores.amax(-1, keepdim=True)).exp()
        pattern = e / e.sum(-1, keepdim=True)
        WVt = self.W_V.transpose(1, 2)                                     # (H, D, d)
        values = WVt[:, tokens] + WVt[:, d:d + n].unsqueeze(1)            # (H, B, n, d)
        logits = (pattern @ values).sum(0)
        return (logits, pattern.transpose(0, 1)) if return_pattern else logits


def full_markov_model(d: int, n_positions: int, width: int = 64, n_heads: int = 3, *,
                      dtype=torch.float32, device=None) -> GPT:
    """The full one-layer model: GPT (one pre-LN block, learned positions) on one-hot tokens,
    reading out d logits per position.  Initialised from torch's global generator."""
    return GPT(check_int("d", d), check_int("width", width), 1, check_int("n_heads", n_heads),
               check_int("n_positions", n_positions), d_out=d, dtype=dtype, device=device)


def full_attention_pattern(model: GPT, onehot: torch.Tensor) -> torch.Tensor:
    """The attention pattern (B, H, n, n) of the full model's block on one-hot inputs."""
    h = model.read_in(onehot) + model.pos[: onehot.shape[1]]
    block = model.blocks[0]
    return block.attn(block.ln1(h), return_pattern=True)[1]


def exact_minimal_model(task: MarkovTask, beta: float, *, n_heads: int | None = None,
                        dtype=torch.float64, device=None) -> MinimalMarkovModel:
    """The hand-built minimal model of docs/markov.md §3.1 for ``task`` (P = w + L − 1 positions);
    head k (k = 1..h, importance order) implements block k; extra heads are zero."""
    if not isinstance(task, MarkovTask):
        raise TypeError(f"task must be a MarkovTask; got {type(task).__name__}")
    beta = check_real("beta", beta, nonnegative=True)
    H = task.h if n_heads is None else check_int("n_heads", n_heads)
    if H < task.h:
        raise ValueError(f"n_heads must be >= h = {task.h}; got {H}")
    d, P = task.d, task.w + task.L - 1
    model = MinimalMarkovModel(d, P, H, init="small", sigma_q=0.0, dtype=dtype, device=device)
    A = teacher_matrices(task)
    D = model.D
    with torch.no_grad():
        for k in range(1, task.h + 1):
            alpha = task.weights(k)
            model.W_Q[k - 1, d:, d:] = -math.sqrt(D) * beta
            logit = np.log(alpha / alpha.max())
            for lag, g in zip(task.block_lags(k), logit):
                for t in range(lag - 1, P):                 # query t, key j = t + 1 - lag
                    model.W_Q[k - 1, d + t + 1 - lag, d + t] = math.sqrt(D) * g
            model.W_V[k - 1, :, :d] = torch.as_tensor(alpha.sum() / task.tau * A[k - 1], dtype=dtype)
    return model
