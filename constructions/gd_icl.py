"""Linear self-attention layers that are exactly gradient-descent steps.

Notation (paper -> code).  Layer convention of :mod:`mechverify.constructions.modules`:
z_t <- z_t + (1/n) sum_h W^PV_h sum_{j<=n} z_j (z_j^T W^KQ_h z_t).

| paper                                  | code                                   |
|----------------------------------------|----------------------------------------|
| e_j = (x_j, y_j), query (x_q, 0)       | token z_j; layout x=[0:d], y=[d]        |
| N (context size)                       | n = ``n_context``                       |
| vO W_K = W_Q = [[I,0],[0,0]]           | W^KQ = [[I_d,0],[0,0]]                  |
| vO P W_V = (eta/N) [[0,0],[w0^T,-1]]   | W^PV = eta [[0,0],[w0^T,-1]] (1/n in layer) |
| Ahn Q = [[-A,0],[0,0]], P=[[0,0],[0,1]]| W^KQ = [[A,0],[0,0]], W^PV = [[0,0],[0,-1]] |
| GD++ x_j <- (I - gamma S) x_j          | W^PV top-left block -gamma I_d          |
| Bai ReLU attention                     | ``activation="relu"``, heads paired +/- |
| prediction <w_L, x_q>                  | readout (w0, -1) . z_q                  |

Why the weights work (vO, one layer).  With W^KQ the x-block, the score between context
token j and token t is x_j^T x_t; with W^PV = eta [[0,0],[w0^T,-1]] the value of j is
eta (<w0, x_j> - y_j) in the y-slot.  So y_t <- y_t + (eta/n) sum_j (<w0,x_j> - y_j) x_j^T x_t
= y_t - <Delta w, x_t> with Delta w = -eta grad L(w0).  After l layers every y-slot holds
y_t - <w_l - w0, x_t> (the query: -<w_l - w0, x_q>), and the next layer's value is
eta (<w_l, x_j> - y_j): the gradient at w_l.  Hence L layers = L GD steps and the
prediction is <w0, x_q> - (query y-slot), i.e. the readout (w0, -1).
``mechverify.theory.symbolic.gd_layer`` expands the layer symbolically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mechverify.constructions.modules import LinearAttention, LinearTransformer, regression_layout
from mechverify.theory.checks import check_array, check_int, check_preconditioners, check_real


def _blocks(d: int, xx=None, xy=None, yx=None, yy=0.0, dtype=torch.float64, device=None) -> torch.Tensor:
    """A (d+1) x (d+1) matrix [[xx, xy], [yx, yy]] (None blocks are zero)."""
    M = torch.zeros(d + 1, d + 1, dtype=dtype, device=device)
    if xx is not None:
        M[:d, :d] = torch.as_tensor(xx, dtype=dtype, device=device)
    if xy is not None:
        M[:d, d] = torch.as_tensor(xy, dtype=dtype, device=device)
    if yx is not None:
        M[d, :d] = torch.as_tensor(yx, dtype=dtype, device=device)
    M[d, d] = yy
    return M


def _readout(d: int, w0: np.ndarray, dtype, device) -> torch.Tensor:
    r = torch.zeros(d + 1, dtype=dtype, device=device)
    r[:d] = torch.as_tensor(w0, dtype=dtype, device=device)
    r[d] = -1.0
    return r


def _w0(w0, d: int) -> np.ndarray:
    return np.zeros(d) if w0 is None else check_array("w0", w0, shape=(d,))


def _gd_step(d: int, lr: float, w0: np.ndarray, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Merged key-query and projection-value matrices of one von Oswald GD step of size ``lr``
    from ``w0``: x-block identity, and lr * [[0, 0], [w0^T, -1]]."""
    kq = _blocks(d, xx=np.eye(d), dtype=dtype, device=device)
    pv = lr * _blocks(d, yx=w0, yy=-1.0, dtype=dtype, device=device)
    return kq, pv


def gd_transformer(d: int, n_layers: int, lr: float, w0=None, *, dtype=torch.float64,
                   device=None) -> LinearTransformer:
    """von Oswald et al.: ``n_layers`` single-head LSA layers = that many GD steps of size
    ``lr`` from ``w0`` (a length-d vector, default 0)."""
    d = check_int("d", d)
    n_layers = check_int("n_layers", n_layers)
    lr = check_real("lr", lr)
    w0 = _w0(w0, d)
    kq, pv = _gd_step(d, lr, w0, dtype, device)
    layers = [LinearAttention(d + 1, 1, dtype=dtype, device=device).set_merged([kq], [pv])
              for _ in range(n_layers)]
    return LinearTransformer(layers, regression_layout(d), _readout(d, w0, dtype, device))


def preconditioned_gd_transformer(preconditioners: Sequence, *, dtype=torch.float64,
                                  device=None) -> LinearTransformer:
    """Ahn et al. (B = 0): layer l = one step w <- w - A_l grad L(w), w_0 = 0; one SPD
    (d, d) preconditioner per layer."""
    if isinstance(preconditioners, torch.Tensor):           # a (L, d, d) stack or one matrix
        preconditioners = preconditioners.detach().cpu().numpy()
    elif isinstance(preconditioners, (list, tuple)):
        preconditioners = [A.detach().cpu().numpy() if isinstance(A, torch.Tensor) else A for A in preconditioners]
    mats = check_preconditioners(preconditioners)
    d = mats[0].shape[0]
    layers = []
    for A in mats:
        kq = _blocks(d, xx=A, dtype=dtype, device=device)
        pv = _blocks(d, yy=-1.0, dtype=dtype, device=device)
        layers.append(LinearAttention(d + 1, 1, dtype=dtype, device=device).set_merged([kq], [pv]))
    return LinearTransformer(layers, regression_layout(d), _readout(d, np.zeros(d), dtype, device))


def gdpp_transformer(d: int, n_layers: int, lr: float, gamma: float, *, dtype=torch.float64,
                     device=None) -> LinearTransformer:
    """GD++ (von Oswald et al.): each layer takes a GD step of size ``lr`` and also moves every
    input x_t <- (I - gamma S) x_t, S = (1/n) sum_j x_j x_j^T (our normalisation)."""
    d = check_int("d", d)
    n_layers = check_int("n_layers", n_layers)
    lr = check_real("lr", lr)
    gamma = check_real("gamma", gamma)
    kq = _blocks(d, xx=np.eye(d), dtype=dtype, device=device)
    pv = _blocks(d, xx=-gamma * np.eye(d), yy=-lr, dtype=dtype, device=device)
    layers = [LinearAttention(d + 1, 1, dtype=dtype, device=device).set_merged([kq], [pv])
              for _ in range(n_layers)]
    return LinearTransformer(layers, regression_layout(d), _readout(d, np.zeros(d), dtype, device))


def relu_gd_transformer(d: int, n_layers: int, lr: float, w0=None, *, dtype=torch.float64,
                        device=None) -> LinearTransformer:
    """Bai et al.'s ReLU attention doing the vO GD step: two heads per layer with opposite
    signs, relu(u) v - relu(-u) v = u v, so the pair equals one linear head."""
    d = check_int("d", d)
    n_layers = check_int("n_layers", n_layers)
    lr = check_real("lr", lr)
    w0 = _w0(w0, d)
    kq, pv = _gd_step(d, lr, w0, dtype, device)
    layers = [LinearAttention(d + 1, 2, activation="relu", dtype=dtype, device=device)
              .set_merged([kq, -kq], [pv, -pv]) for _ in range(n_layers)]
    return LinearTransformer(layers, regression_layout(d), _readout(d, w0, dtype, device))


# --- the von Oswald code's own convention ---------------------------------------------------
# Row vectors (Haiku): tokens are rows of H (T, d+1), projections are H @ W, one layer is
# H <- H + ((H W_q)(H_ctx W_k)^T)(H_ctx W_v) W_p with the 1/N folded into W_p, and the
# prediction is -H[-1, -1] (w0 = 0).  Kept separate from LinearAttention on purpose: claim
# gd-icl/vo-code-convention checks that both conventions give the same numbers.

def vo_code_weights(d: int, n: int, lr: float, w0=None, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """The weights of one vO layer in the code's row-vector convention."""
    d = check_int("d", d)
    n = check_int("n", n)
    lr = check_real("lr", lr)
    w0 = _w0(w0, d)
    qk = _blocks(d, xx=np.eye(d), dtype=dtype)
    value = _blocks(d, yx=w0, yy=-1.0, dtype=dtype).T        # [[0,0],[w0^T,-1]]^T
    proj = _blocks(d, yy=lr / n, dtype=dtype)                 # (eta/N) on the y block only
    return {"query": qk, "key": qk.clone(), "value": value, "projection": proj}


def vo_code_forward(H: torch.Tensor, weights: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """Run ``n_layers`` vO layers in the row convention on H (B, N+1, d+1); returns H."""
    for _ in range(check_int("n_layers", n_layers)):
        ctx = H[:, :-1]
        scores = (H @ weights["query"]) @ (ctx @ weights["key"]).transpose(1, 2)
        H = H + (scores @ (ctx @ weights["value"])) @ weights["projection"]
    return H
