"""CPU inference kernel for the moment route of linear attention (see
:class:`mechverify.constructions.modules.LinearAttention`).

The mathematics lives in :mod:`mechverify.constructions.modules`; this module only makes the
no-gradient CPU forward fast.  For prompts Z (B, T, D), the first n tokens the context, a
linear-attention layer with stacked per-head maps A_h = W_O[h] W_V[h] / n and
G_h = W_K[h]^T W_Q[h] updates every token by Z_b M_b^T, with M_b = sum_h A_h C_b G_h and
C_b = sum_{j<=n} z_j z_j^T (:func:`moment_update_numpy`).

How it runs.  The batch is split over ``torch.get_num_threads()`` worker threads
(:class:`_BatchThreads`; numpy releases the GIL in matmul and add), each with a one-thread
OpenBLAS and without torch ops (torch's OpenMP threads keep spinning after a parallel op and
would take the cores from the workers).  A worker walks its prompts in blocks of about
``BLOCK_ELEMENTS`` float64 numbers and runs the *whole residual stack* on one block before
the next (:func:`residual_stack`): the block and its scratch buffers, allocated once per
worker and reused by every layer, stay in the core's cache, and only the stack's input and
output (or, when every state is asked for, each layer's state) touch main memory.  The
per-prompt products are stacked small matrix products; the fold with the weights is one tall
GEMM over all prompts of the block and one small product per prompt.  On the 2-core AMD development machine numpy's
OpenBLAS runs these 21-wide products about twice as fast as torch's batched matmul.

When.  :func:`applies` says whether a call may take the kernel: the kernel is enabled
(:func:`use` / :func:`disabled`), the tensors are plain CPU float32/float64 tensors, nothing
wants a gradient, and neither a torch.func transform nor a dispatch mode (e.g. the FLOP
counter) watches the ops.  The last two are known only through two private torch functions;
they sit behind one feature check (:data:`WATCH_CHECK`): on a torch without them the kernel
is never used and everything runs in torch, with the same results.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

BLOCK_ELEMENTS = 2 ** 17          # a block holds about 1 MB of float64 tokens (measured best of 2^14..2^19)


# --- when the kernel may run ----------------------------------------------------------------------

def _private_watch_check():
    """The check built on torch's private APIs: a function telling whether a tensor is wrapped
    by a torch.func transform or a dispatch mode is active; None if this torch lacks them."""
    try:
        from torch._C._functorch import is_functorch_wrapped_tensor
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:
        return None
    return lambda tensors: (_get_current_dispatch_mode() is not None
                            or any(is_functorch_wrapped_tensor(t) for t in tensors))


WATCH_CHECK = _private_watch_check()      # None: no kernel on this torch (torch fallback)
_enabled = contextvars.ContextVar("mechverify_numpy_kernel", default=True)


@contextlib.contextmanager
def use(enabled: bool):
    """Within the block, the kernel is on (``True``) or off (``False``, torch everywhere)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool; got {type(enabled).__name__}")
    token = _enabled.set(enabled)
    try:
        yield
    finally:
        _enabled.reset(token)


def disabled():
    """``with kernel.disabled():`` runs the moment route in torch (the reference route)."""
    return use(False)


def applies(*tensors: torch.Tensor) -> bool:
    """Whether a no-grad forward on these tensors may run in the numpy kernel."""
    if WATCH_CHECK is None or not _enabled.get():
        return False
    dtype = tensors[0].dtype
    return (dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == dtype and t.layout == torch.strided for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and not WATCH_CHECK(tensors))


# --- the kernel -----------------------------------------------------------------------------------

class Workspace:
    """Scratch arrays of the kernel for blocks of up to ``prompts`` prompts of (T, D) tokens:
    two residual streams (ping-pong between layers) and the (D x D) per-prompt products.
    Allocated once per worker and reused by every block and layer (a fresh 0.5 MB array per
    product costs an mmap and its page faults, more than the product itself)."""

    def __init__(self, prompts: int, T: int, D: int, dtype):
        self.streams = [np.empty((prompts, T, D), dtype=dtype) for _ in range(2)]
        self.C, self.CA, self.term, self.Mt = (np.empty((prompts, D, D), dtype=dtype) for _ in range(4))


def moment_update_numpy(Z: np.ndarray, A: np.ndarray, G: np.ndarray, n_context: int,
                        out: np.ndarray | None = None, residual: bool = False,
                        work: Workspace | None = None) -> np.ndarray:
    """The linear-attention update Z_b M_b^T of every token, M_b = sum_h A_h C_b G_h, for
    prompts Z (B, T, D) and stacked per-head maps A, G (H, D, D), written into ``out`` when
    given; with ``residual`` the new residual stream Z + update.  C_b is symmetric, so
    M_b^T = sum_h G_h^T (C_b A_h^T): one tall GEMM over all prompts, then one small product
    per prompt.  ``work`` supplies the scratch arrays.  One thread; no input checks."""
    B, T, D = Z.shape
    work = work or Workspace(B, T, D, Z.dtype)
    C, CA, term, Mt = work.C[:B], work.CA[:B], work.term[:B], work.Mt[:B]
    ctx = Z[:, :n_context]
    np.matmul(ctx.transpose(0, 2, 1), ctx, out=C)                        # C_b = sum_j z_j z_j^T
    for h, (A_h, G_h) in enumerate(zip(A, G)):
        np.matmul(C.reshape(B * D, D), A_h.T, out=CA.reshape(B * D, D))   # C_b A_h^T, one GEMM
        np.matmul(G_h.T, CA, out=Mt if h == 0 else term)                  # G_h^T C_b A_h^T
        if h:
            np.add(Mt, term, out=Mt)                                      # = M_b^T, summed over heads
    out = np.matmul(Z, Mt, out=out)                                       # Z_b M_b^T
    return np.add(out, Z, out=out) if residual else out


class _BatchThreads:
    """Runs ``work(a, b)`` on ``torch.get_num_threads()`` contiguous batch chunks [a, b) in
    parallel worker threads, each with a one-thread BLAS.  The pool is rebuilt after a fork
    or a change of the thread count."""

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


def _merged(weights) -> tuple[np.ndarray, np.ndarray]:
    """(A, G) of one layer from its (W_Q, W_K, W_V, W_O), in numpy (no torch op)."""
    W_Q, W_K, W_V, W_O = (w.detach().numpy() for w in weights)
    return np.matmul(W_O, W_V), np.matmul(W_K.transpose(0, 2, 1), W_Q)


def residual_stack(Z: torch.Tensor, layers, n_context: int, keep_all: bool = False) -> list[torch.Tensor]:
    """z <- z + update_l(z) for each layer l, with ``layers`` a sequence of (W_Q, W_K, W_V, W_O)
    weight tuples of linear (moment-route) layers.  Returns [Z, final], or with ``keep_all``
    every state [Z, after layer 1, ..., after layer L].  Call only where :func:`applies`."""
    return _run(Z, layers, n_context, residual=True, keep_all=keep_all)


def layer_update(Z: torch.Tensor, weights, n_context: int) -> torch.Tensor:
    """One layer's update (without the residual) from its (W_Q, W_K, W_V, W_O)."""
    return _run(Z, [weights], n_context, residual=False, keep_all=False)[-1]


def _run(Z: torch.Tensor, layers, n_context: int, residual: bool, keep_all: bool) -> list[torch.Tensor]:
    Zn = Z.detach().numpy()
    B, T, D = Zn.shape
    maps = []
    for weights in layers:
        A, G = _merged(weights)
        maps.append((A / n_context, G))
    L = len(maps)
    outs = [np.empty_like(Zn) for _ in range(L if keep_all else 1)]
    block = max(1, BLOCK_ELEMENTS // (T * D))                            # prompts per block

    def work(a: int, b: int) -> None:
        scratch = Workspace(min(block, b - a), T, D, Zn.dtype)
        for s in range(a, b, block):
            e = min(s + block, b)
            cur = Zn[s:e]
            for l, (A, G) in enumerate(maps):
                if keep_all:
                    dst = outs[l][s:e]
                elif l == L - 1:
                    dst = outs[0][s:e]
                else:
                    dst = scratch.streams[l % 2][:e - s]
                cur = moment_update_numpy(cur, A, G, n_context, out=dst, residual=residual, work=scratch)

    _batch_threads(B, work)
    return [Z] + [torch.from_numpy(o) for o in outs]
