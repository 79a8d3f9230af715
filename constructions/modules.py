"""Architectures shared by the hand-built constructions and by training.

Residual stream. A prompt of n labelled examples and one query is a sequence of
T = n + 1 tokens z_1 .. z_n, z_q in R^D; its coordinates are named by a
:class:`Layout` (for plain regression: ``x`` = coordinates 0..d-1, ``y`` = coordinate d).
Context tokens carry (x_i, y_i), the query carries (x_q, 0).

Linear self-attention (one layer, H heads, keys and values from the n context tokens only)::

    z_t <- z_t + (1/n) sum_h W_O[h] sum_{j<=n} (W_V[h] z_j) * phi(<W_K[h] z_j, W_Q[h] z_t>)

with phi the identity (linear attention) or ReLU (Bai et al.).  In merged form
W^KQ_h = W_K[h]^T W_Q[h] and W^PV_h = W_O[h] W_V[h]; the update is
(1/n) sum_h W^PV_h sum_j z_j (z_j^T W^KQ_h z_t) -- the form used by Zhang-Frei-Bartlett,
Ahn et al. and Chen-Zhao-Zou.  For phi = identity the sum over j never needs the n x n
score matrix: the update of every token is one (D x D) map per prompt,
M = (1/n) sum_h W^PV_h C W^KQ_h with the context moment C = sum_j z_j z_j^T, costing
O(n D^2 + H D^3) instead of O(n^2 D) (for tiny contexts the per-head projected form is
cheaper and is used instead).  ``scores_form=True`` computes the n x n form, for checks
and benchmarks.

CPU inference kernel.  When nothing needs a gradient and the tensors are plain CPU float
tensors, the moment route runs in numpy (:mod:`mechverify.constructions.kernel`): a whole
stack of such layers at once, block of prompts by block of prompts.  Autograd, torch.func
transforms, dispatch modes (e.g. the FLOP counter) and non-CPU devices take the torch route
written out below; ``with kernel.disabled():`` forces it.  Both routes are checked against
each other and against the numpy GD reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mechverify.constructions import kernel
from mechverify.constructions.encoders import Layout, StackedRegression, regression_layout  # noqa: F401 (re-exported)
from mechverify.theory.checks import check_int, check_real

ACTIVATIONS = (None, "relu")


def check_tensor(name: str, value, shape: tuple | None = None, ndim: int | None = None) -> torch.Tensor:
    """A finite floating-point tensor of the given shape (``None`` entries are free)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(value.shape)}")
    if shape is not None:
        if value.dim() != len(shape) or any(s is not None and s != a for s, a in zip(shape, value.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got {tuple(value.shape)}")
    if value.numel() and not torch.isfinite(value).all():
        raise ValueError(f"{name} must contain only finite values")
    return value


class LinearAttention(nn.Module):
    """Multi-head linear (or ReLU) self-attention; keys and values from context tokens only.

    Parameters ``W_Q``, ``W_K`` (H, d_head, D), ``W_V`` (H, d_value, D), ``W_O`` (H, D, d_value).
    ``forward`` returns the update (the caller adds the residual).
    """

    def __init__(self, d_model: int, n_heads: int = 1, d_head: int | None = None,
                 d_value: int | None = None, activation: str | None = None,
                 init_scale: float = 0.0, *, dtype=torch.float64, device=None, generator=None):
        super().__init__()
        D = check_int("d_model", d_model)
        H = check_int("n_heads", n_heads)
        dk = D if d_head is None else check_int("d_head", d_head)
        dv = D if d_value is None else check_int("d_value", d_value)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        init_scale = check_real("init_scale", init_scale, nonnegative=True)
        self.d_model, self.n_heads, self.d_head, self.d_value, self.activation = D, H, dk, dv, activation
        shapes = {"W_Q": (H, dk, D), "W_K": (H, dk, D), "W_V": (H, dv, D), "W_O": (H, D, dv)}
        for name, shape in shapes.items():
            w = torch.randn(shape, dtype=dtype, device=device, generator=generator) * init_scale
            setattr(self, name, nn.Parameter(w))

    @torch.no_grad()
    def set_merged(self, kq: Sequence[torch.Tensor], pv: Sequence[torch.Tensor]) -> "LinearAttention":
        """Set head h to the merged matrices W^KQ_h = kq[h], W^PV_h = pv[h] (each D x D):
        W_K = W_V = I, W_Q = W^KQ, W_O = W^PV.  Needs d_head = d_value = D."""
        D, H = self.d_model, self.n_heads
        if self.d_head != D or self.d_value != D:
            raise ValueError("set_merged needs d_head == d_value == d_model")
        if len(kq) != H or len(pv) != H:
            raise ValueError(f"kq and pv must hold one ({D}, {D}) matrix per head ({H}); got {len(kq)}, {len(pv)}")
        eye = torch.eye(D, dtype=self.W_Q.dtype, device=self.W_Q.device)
        for h in range(H):
            self.W_Q[h] = check_tensor(f"kq[{h}]", kq[h], shape=(D, D))
            self.W_O[h] = check_tensor(f"pv[{h}]", pv[h], shape=(D, D))
            self.W_K[h] = eye
            self.W_V[h] = eye
        return self

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W^KQ, W^PV), each (H, D, D)."""
        return self.W_K.transpose(1, 2) @ self.W_Q, self.W_O @ self.W_V

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.W_Q, self.W_K, self.W_V, self.W_O

    def moment_route(self, n_tokens: int, n_context: int, scores_form: bool = False) -> bool:
        """Whether ``forward`` takes the moment route.  Linear heads have two exact routes,
        chosen by multiply-adds per prompt.  "moment": the update is
        sum_h W_O W_V (sum_j z_j z_j^T) W_K^T W_Q z_t / n, so form the context moment C
        (n D^2), fold it with the merged weights into one (D x D) map M per prompt (2 H D^3)
        and apply it (T D^2); no Q/K/V tensors, no separate 1/n pass.  "projected": Q/K/V
        projections, S_h = sum_j v_j k_j^T, then queries and W_O."""
        D, H, dk, dv, T = self.d_model, self.n_heads, self.d_head, self.d_value, n_tokens
        moment_cost = n_context * D * D + 2 * H * D ** 3 + T * D * D
        projected_cost = (T * D * H * (2 * dk + dv) + (n_context + T) * H * dk * dv
                          + T * H * dv * D)
        return self.activation is None and not scores_form and moment_cost <= projected_cost

    def forward(self, Z: torch.Tensor, n_context: int, scores_form: bool = False) -> torch.Tensor:
        B, T, D = Z.shape
        H, dk, dv = self.n_heads, self.d_head, self.d_value
        if self.moment_route(T, n_context, scores_form):
            if kernel.applies(Z, *self.weights()):
                return kernel.layer_update(Z, self.weights(), n_context)
            A = (self.W_O @ self.W_V) / n_context                 # (H, D, D) = W^PV / n
            G = self.W_K.transpose(1, 2) @ self.W_Q               # (H, D, D) = W^KQ
            ctx = Z[:, :n_context]
            C = ctx.transpose(1, 2) @ ctx                         # (B, D, D)
            if H == 1:
                M = A[0] @ C @ G[0]
            else:
                M = (A @ C.unsqueeze(1) @ G).sum(1)
            return Z @ M.transpose(1, 2)
        W = torch.cat([self.W_Q.reshape(H * dk, D), self.W_K.reshape(H * dk, D),
                       self.W_V.reshape(H * dv, D)])
        proj = Z @ W.T                                            # (B, T, H(2dk + dv))
        Q = proj[..., :H * dk].reshape(B, T, H, dk)
        K = proj[:, :n_context, H * dk:2 * H * dk].reshape(B, n_context, H, dk)
        V = proj[:, :n_context, 2 * H * dk:].reshape(B, n_context, H, dv)
        if self.activation is None and not scores_form:
            S = torch.einsum("bjhv,bjhk->bhvk", V, K)             # sum over context tokens
            heads = torch.einsum("bhvk,bthk->bthv", S, Q)
        else:
            scores = torch.einsum("bthk,bjhk->bhtj", Q, K)
            if self.activation == "relu":
                scores = torch.relu(scores)
            heads = torch.einsum("bhtj,bjhv->bthv", scores, V)
        out = heads.reshape(B, T, H * dv) @ self.W_O.permute(1, 0, 2).reshape(D, H * dv).T
        return out / n_context


class LinearTransformer(nn.Module):
    """A residual stack of attention layers on regression prompts, read out linearly.

    ``predict(X, y, x_query)`` encodes the prompt in ``layout`` (x, y, extra fields 0; the
    :class:`mechverify.constructions.encoders.StackedRegression` encoder), runs
    ``z <- z + layer(z)`` for every layer, and returns ``<readout, z_q>`` of the final query
    token.
    """

    def __init__(self, layers: Sequence[LinearAttention], layout: Layout, readout: torch.Tensor):
        super().__init__()
        if not layers:
            raise ValueError("layers must hold at least one attention layer")
        self.layers = nn.ModuleList(layers)
        self.layout = layout
        for i, layer in enumerate(self.layers):
            if layer.d_model != layout.width:
                raise ValueError(f"layers[{i}] has d_model {layer.d_model}; layout width is {layout.width}")
        self.register_buffer("readout", check_tensor("readout", readout, shape=(layout.width,)))

    def embed(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """The prompt's tokens (B, n+1, D) by the stacked-regression encoder."""
        return self.encoder.encode((X, y, x_query), dtype=self.readout.dtype, device=self.readout.device)

    @property
    def encoder(self) -> StackedRegression:
        return StackedRegression(self.layout)

    def forward(self, Z: torch.Tensor, return_all: bool = False, scores_form: bool = False):
        """Run the stack on embedded prompts (B, n+1, D); with ``return_all`` also the
        residual stream after each layer (list of L+1 tensors, the input first)."""
        n_context = Z.shape[1] - 1
        if (all(layer.moment_route(Z.shape[1], n_context, scores_form) for layer in self.layers)
                and kernel.applies(Z, *(w for layer in self.layers for w in layer.weights()))):
            states = kernel.residual_stack(Z, [layer.weights() for layer in self.layers], n_context,
                                           keep_all=return_all)
        else:
            states = [Z]
            for layer in self.layers:
                states.append(states[-1] + layer(states[-1], n_context, scores_form=scores_form))
        return (states[-1], states) if return_all else states[-1]

    def outputs(self, Z: torch.Tensor) -> torch.Tensor:
        """The linear read-out <readout, z_t> of every token after the stack: (B, n+1)."""
        return self(Z) @ self.readout

    def states(self, Z: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream before the first layer and after each layer (L+1 tensors)."""
        return self(Z, return_all=True)[1]

    def predict(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """The prediction of y_q (B,): encode, run the stack, read out at the query."""
        return self.encoder.readout(self.outputs(self.embed(X, y, x_query)))


class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax self-attention (GPT-2 style): heads of width d_model / H,
    one fused QKV projection and one output projection ``out`` (d_model x d_model), whose
    columns h*dh .. (h+1)*dh - 1 take head h's output.  Returns the update."""

    def __init__(self, d_model: int, n_heads: int, *, dtype=torch.float32, device=None):
        super().__init__()
        D, H = check_int("d_model", d_model), check_int("n_heads", n_heads)
        if D % H:
            raise ValueError(f"d_model ({D}) must be a multiple of n_heads ({H})")
        self.d_model, self.n_heads, self.d_head = D, H, D // H
        self.qkv = nn.Linear(D, 3 * D, dtype=dtype, device=device)
        self.out = nn.Linear(D, D, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, return_pattern: bool = False):
        """softmax(q k^T / sqrt(d_head) + causal mask) v per head, then ``out``; with
        ``return_pattern`` also the pattern (B, H, T, T), written out explicitly (else torch's
        fused ``scaled_dot_product_attention`` computes the same without materialising it)."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        if return_pattern:
            scores = (q @ k.transpose(-1, -2)) / self.d_head ** 0.5
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            pattern = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)   # (B, H, T, T)
            heads = pattern @ v
        else:
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = self.out(heads.transpose(1, 2).reshape(B, T, D))
        return (out, pattern) if return_pattern else out


class GPTBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + MLP(LN(x)) (GELU, width 4 d_model)."""

    def __init__(self, d_model: int, n_heads: int, *, dtype=torch.float32, device=None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        d_model = check_int("d_model", d_model)
        self.ln1, self.ln2 = nn.LayerNorm(d_model, **kw), nn.LayerNorm(d_model, **kw)
        self.attn = SoftmaxAttention(d_model, n_heads, **kw)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model, **kw), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A small GPT-2-style causal transformer on real-valued tokens: linear read-in (d_in ->
    d_model) plus learned positions, ``n_layers`` pre-LN blocks, final LayerNorm, linear
    read-out (d_model -> d_out) at every position.  ``forward(tokens, return_hidden=True)``
    also returns the residual stream after the read-in and after each block.

    Initialisation: torch's default for every ``nn.Linear`` and LayerNorm, positions
    N(0, 0.02^2), drawn on the CPU from ``generator`` (torch's global generator when None) in
    the order read-in, positions, blocks, read-out -- the values that ``torch.manual_seed(s)``
    followed by default construction gives, whatever the device."""

    def __init__(self, d_in: int, d_model: int, n_layers: int, n_heads: int, max_len: int, d_out: int = 1,
                 *, dtype=torch.float32, device=None, generator: torch.Generator | None = None):
        super().__init__()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        kw = {"dtype": dtype, "device": "meta"}             # shapes only; values drawn below
        self.max_len = check_int("max_len", max_len)
        self.read_in = nn.Linear(check_int("d_in", d_in), check_int("d_model", d_model), **kw)
        self.pos = nn.Parameter(torch.empty(max_len, d_model, **kw))
        self.blocks = nn.ModuleList([GPTBlock(d_model, n_heads, **kw) for _ in range(check_int("n_layers", n_layers))])
        self.ln_f = nn.LayerNorm(d_model, **kw)
        self.read_out = nn.Linear(d_model, check_int("d_out", d_out), **kw)
        self.to_empty(device="cpu")
        self._initialise(generator)
        if device is not None:
            self.to(device)

    @torch.no_grad()
    def _initialise(self, generator: torch.Generator | None) -> None:
        def linear(m: nn.Linear) -> None:
            nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5, generator=generator)
            bound = 1 / m.in_features ** 0.5
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)

        linear(self.read_in)
        self.pos.copy_(0.02 * torch.randn(self.pos.shape, dtype=self.pos.dtype, generator=generator))
        for m in list(self.blocks.modules()) + [self.ln_f, self.read_out]:
            if isinstance(m, nn.Linear):
                linear(m)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream before the first block: read-in plus positions."""
        tokens = check_tensor("tokens", tokens, ndim=3)
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens has {tokens.shape[1]} positions; max_len is {self.max_len}")
        return self.read_in(tokens) + self.pos[: tokens.shape[1]]

    def outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """The read-out at every position (B, T, d_out), what a task encoder reads out."""
        return self(tokens)

    def states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream after the read-in and after each block (n_layers + 1 tensors)."""
        return self(tokens, return_hidden=True)[1]

    def forward(self, tokens: torch.Tensor, return_hidden: bool = False):
        h = self.embed(tokens)
        hidden = [h]
        for block in self.blocks:
            h = block(h)
            hidden.append(h)
        out = self.read_out(self.ln_f(h))
        return (out, hidden) if return_hidden else out
