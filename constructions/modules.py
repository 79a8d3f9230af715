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
tensors, the moment route runs in numpy (:func:`moment_update_numpy`): the per-prompt
products are stacked small matrix products, the fold with the weights is two tall GEMMs
over all prompts, and the batch is split over ``torch.get_num_threads()`` worker threads,
each with a one-thread BLAS.  On the 2-core AMD machine where the package is developed,
numpy's OpenBLAS runs these 21-wide products about twice as fast as torch's batched
matmul (see README, Performance).  Autograd, torch.func transforms, dispatch modes (e.g.
the FLOP counter) and non-CPU devices always take the torch route; both routes are checked
against each other and against the numpy GD reference; ``NUMPY_KERNEL = False`` turns
the numpy route off.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

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


@dataclass(frozen=True)
class Layout:
    """Named coordinates of the residual stream: ``Layout((("x", d), ("y", 1)))``."""

    fields: tuple[tuple[str, int], ...]

    def __post_init__(self):
        names = [name for name, _ in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"fields must have distinct names; got {names}")
        for name, width in self.fields:
            check_int(f"width of field {name!r}", width)

    @property
    def width(self) -> int:
        return sum(w for _, w in self.fields)

    def slice(self, name: str) -> slice:
        start = 0
        for field, width in self.fields:
            if field == name:
                return slice(start, start + width)
            start += width
        raise KeyError(f"no field {name!r} in layout {[f for f, _ in self.fields]}")

    def index(self, name: str) -> int:
        """Coordinate of a width-1 field."""
        s = self.slice(name)
        if s.stop - s.start != 1:
            raise ValueError(f"field {name!r} has width {s.stop - s.start}, not 1")
        return s.start

    def describe(self) -> str:
        return ", ".join(f"{n}=[{self.slice(n).start}:{self.slice(n).stop}]" for n, _ in self.fields)


def regression_layout(d: int, extra: Sequence[tuple[str, int]] = ()) -> Layout:
    """x (d coordinates), y (1 coordinate), then any extra named fields (initially 0)."""
    return Layout((("x", check_int("d", d)), ("y", 1), *tuple(extra)))


def moment_update_numpy(Z: np.ndarray, A: np.ndarray, G: np.ndarray, n_context: int,
                        out: np.ndarray | None = None) -> np.ndarray:
    """The linear-attention update of every token, sum_h Z_b (A_h C_b G_h)^T with the context
    moment C_b = sum_{j<=n} z_j z_j^T, for prompts Z (B, T, D) and stacked per-head maps
    A, G (H, D, D) (A = W^PV / n, G = W^KQ), written into ``out`` when given.  One thread;
    no input checks."""
    B, T, D = Z.shape
    ctx = Z[:, :n_context]
    C = np.matmul(ctx.transpose(0, 2, 1), ctx).reshape(B * D, D)        # rows of every C_b
    Mt = None
    for A_h, G_h in zip(A, G):
        CG = (C @ G_h).reshape(B, D, D)                                 # C_b G_h, one GEMM
        term = CG.transpose(0, 2, 1).reshape(B * D, D) @ A_h.T          # (C_b G_h)^T A_h^T
        Mt = term if Mt is None else np.add(Mt, term, out=Mt)           # = M_b^T, summed over heads
    return np.matmul(Z, Mt.reshape(B, D, D), out=out)                   # Z_b M_b^T


class _BatchThreads:
    """Runs ``work(a, b)`` on ``torch.get_num_threads()`` contiguous batch chunks [a, b) in
    parallel worker threads (numpy releases the GIL in matmul and add), each with a
    one-thread BLAS, and without torch ops: torch's OpenMP threads keep spinning after a
    parallel op and would take the cores from the workers.  The pool is rebuilt after a
    fork or a change of the thread count."""

    def __init__(self):
        self.pool, self.key, self.blas = None, None, None

    def __call__(self, size: int, work) -> None:
        if self.blas is None:
            self.blas = ThreadpoolController()
        k = min(torch.get_num_threads(), size)
        with self.blas.limit(limits=1, user_api="blas"):
            if k == 1:
                work(0, size)
                return
            if self.key != (os.getpid(), k):
                self.pool, self.key = ThreadPoolExecutor(max_workers=k), (os.getpid(), k)
            bounds = np.linspace(0, size, k + 1).astype(int)
            for job in [self.pool.submit(work, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
                job.result()


_batch_threads = _BatchThreads()
NUMPY_KERNEL = True        # set False to run the moment route in torch everywhere
KERNEL_BLOCK_ELEMENTS = 2 ** 17   # the kernel works on blocks of about 1 MB of float64 tokens


def _numpy_route(Z: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether the moment route may run in numpy: plain CPU float tensors, no gradient
    wanted, no torch.func transform and no dispatch mode watching the ops."""
    tensors = (Z, *params)
    return (NUMPY_KERNEL and Z.device.type == "cpu" and Z.dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == Z.dtype and t.layout == torch.strided
                    and not torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and _get_current_dispatch_mode() is None)


def _moment_update_cpu(Z: torch.Tensor, layer: "LinearAttention", n_context: int) -> torch.Tensor:
    """The layer's update by :func:`moment_update_numpy` over batch chunks in parallel; the
    merged weights are formed in numpy too (no torch op between the kernels)."""
    Zn = Z.detach().numpy()
    W_Q, W_K, W_V, W_O = (w.detach().numpy() for w in (layer.W_Q, layer.W_K, layer.W_V, layer.W_O))
    An, Gn = np.matmul(W_O, W_V) / n_context, np.matmul(W_K.transpose(0, 2, 1), W_Q)
    out = np.empty_like(Zn)
    block = max(1, KERNEL_BLOCK_ELEMENTS // (Zn.shape[1] * Zn.shape[2]))   # prompts per block

    def work(a: int, b: int) -> None:
        for s in range(a, b, block):     # a block's tokens stay in cache from moment to apply
            moment_update_numpy(Zn[s:min(s + block, b)], An, Gn, n_context, out[s:min(s + block, b)])

    _batch_threads(len(Zn), work)
    return torch.from_numpy(out)


def residual_add(Z: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``Z + update``.  For plain CPU tensors that need no gradient the sum is computed by
    numpy in the kernel's worker threads, into memory that numpy backs with transparent
    huge pages (torch does so only with ``THP_MEM_ALLOC_ENABLE=1``): a deep stack on long
    prompts then does not spend most of its time faulting in each new residual stream."""
    if Z.shape == update.shape and Z.dim() > 0 and _numpy_route(Z, update):
        z, u = Z.detach().numpy(), update.detach().numpy()
        out = np.empty_like(z)
        _batch_threads(len(z), lambda a, b: np.add(z[a:b], u[a:b], out=out[a:b]))
        return torch.from_numpy(out)
    return Z + update


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

    def forward(self, Z: torch.Tensor, n_context: int, scores_form: bool = False) -> torch.Tensor:
        B, T, D = Z.shape
        H, dk, dv = self.n_heads, self.d_head, self.d_value
        # Linear heads: two exact routes, taken by multiply-adds per prompt.  "moment": the
        # update is sum_h W_O W_V (sum_j z_j z_j^T) W_K^T W_Q z_t / n, so form the context
        # moment C (n D^2), fold it with the merged weights into one (D x D) map M per prompt
        # (2 H D^3) and apply it (T D^2); no Q/K/V tensors, no separate 1/n pass.
        # "projected": Q/K/V projections, S_h = sum_j v_j k_j^T, then queries and W_O.
        moment_cost = n_context * D * D + 2 * H * D ** 3 + T * D * D
        projected_cost = (T * D * H * (2 * dk + dv) + (n_context + T) * H * dk * dv
                          + T * H * dv * D)
        if self.activation is None and not scores_form and moment_cost <= projected_cost:
            if _numpy_route(Z, self.W_Q, self.W_K, self.W_V, self.W_O):
                return _moment_update_cpu(Z, self, n_context)
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

    ``predict(X, y, x_query)`` embeds the prompt in ``layout`` (x, y, extra fields 0),
    runs ``z <- z + layer(z)`` for every layer, and returns ``<readout, z_q>`` of the
    final query token.
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
        X = check_tensor("X", X, ndim=3)
        B, n, d = X.shape
        if B < 1 or n < 1:
            raise ValueError(f"X must have shape (B, n, d) with B, n >= 1; got {tuple(X.shape)}")
        xs = self.layout.slice("x")
        if d != xs.stop - xs.start:
            raise ValueError(f"X must have last dimension d = {xs.stop - xs.start}; got {d}")
        check_tensor("y", y, shape=(B, n))
        check_tensor("x_query", x_query, shape=(B, d))
        Z = torch.zeros(B, n + 1, self.layout.width, dtype=self.readout.dtype, device=self.readout.device)
        Z[:, :n, self.layout.slice("x")] = X.to(Z)
        Z[:, n, self.layout.slice("x")] = x_query.to(Z)
        Z[:, :n, self.layout.index("y")] = y.to(Z)
        return Z

    def forward(self, Z: torch.Tensor, return_all: bool = False, scores_form: bool = False):
        """Run the stack on embedded prompts (B, n+1, D); with ``return_all`` also the
        residual stream after each layer (list of L+1 tensors, the input first)."""
        n_context = Z.shape[1] - 1
        states = [Z]
        for layer in self.layers:
            Z = residual_add(Z, layer(Z, n_context, scores_form=scores_form))
            states.append(Z)
        return (Z, states) if return_all else Z

    def predict(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        Z = self(self.embed(X, y, x_query))
        return Z[:, -1, :] @ self.readout


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
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / self.d_head ** 0.5
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        pattern = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)   # (B, H, T, T)
        heads = (pattern @ v).transpose(1, 2).reshape(B, T, D)
        out = self.out(heads)
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
    also returns the residual stream after the read-in and after each block."""

    def __init__(self, d_in: int, d_model: int, n_layers: int, n_heads: int, max_len: int, d_out: int = 1,
                 *, dtype=torch.float32, device=None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.max_len = check_int("max_len", max_len)
        self.read_in = nn.Linear(check_int("d_in", d_in), check_int("d_model", d_model), **kw)
        self.pos = nn.Parameter(0.02 * torch.randn(max_len, d_model, **kw))
        self.blocks = nn.ModuleList([GPTBlock(d_model, n_heads, **kw) for _ in range(check_int("n_layers", n_layers))])
        self.ln_f = nn.LayerNorm(d_model, **kw)
        self.read_out = nn.Linear(d_model, check_int("d_out", d_out), **kw)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream before the first block: read-in plus positions."""
        tokens = check_tensor("tokens", tokens, ndim=3)
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens has {tokens.shape[1]} positions; max_len is {self.max_len}")
        return self.read_in(tokens) + self.pos[: tokens.shape[1]]

    def forward(self, tokens: torch.Tensor, return_hidden: bool = False):
        h = self.embed(tokens)
        hidden = [h]
        for block in self.blocks:
            h = block(h)
            hidden.append(h)
        out = self.read_out(self.ln_f(h))
        return (out, hidden) if return_hidden else out
