"""Small causal LMs for the meta-learning view of Wu & Varshney (2024): cached training on a
Zipf-Markov corpus and on real text, residual-stream extraction, and the inner-loss analyses
of docs/meta_learning.md §7 rows 9-13.

The inner-optimisation reading measured here (the residual stream as gradient descent on
the logit-lens loss, docs/meta_learning.md §3) is our **reconstruction**, not confirmed as the paper's.

Model: :class:`mechverify.constructions.modules.GPT` (pre-LN blocks, causal softmax attention, learned
positions) fed one-hot tokens, so its linear read-in is the token embedding
(e_v = W_in[:, v] + b_in) and its read-out the unembedding (U = W_out, V x d, bias b_out).
The final norm is the GPT's LayerNorm, or (``final_norm="rmsnorm"``) an ``nn.RMSNorm`` put in
its place after construction; both with eps = 1e-5 and a learned gain.

Notation -> code:

=================================  ===========================================================
h_t^(l), l = 0..L                  ``hidden[l]`` from ``GPT.forward(..., return_hidden=True)``
Delta_t^(l) = h^(l+1) - h^(l)      per-layer update (l = 0..L-1)
l_t(h) = -log softmax(U N(h) + b)   numpy :func:`mechverify.theory.algorithms.inner_loss.logit_lens_loss`
                                   with N the model's own final norm (gain, bias, eps)
grad l_t                           numpy :func:`mechverify.theory.algorithms.inner_loss.logit_lens_grad`
=================================  ===========================================================

Corpora (``MetaNormConfig.corpus``):

``zipf``  :func:`mechverify.theory.tasks.zipf.zipf_markov` (V = 64, exponent 1.1); fresh sequences every
          step, held-out sequences from a seed no step uses; token frequency = the exact
          stationary pi.
``text``  :func:`mechverify.theory.tasks.text.char_stream`, the ``vocab - 1`` most frequent characters of
          the ``pydoc_data`` topics plus ``<unk>``; the first 90% trains (random windows), the
          last 10% is held out (consecutive windows); frequency = counts in the training part.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from mechverify.constructions.modules import GPT
from mechverify.theory.algorithms.inner_loss import inner_gd_unroll, logit_lens_grad, logit_lens_loss
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.text import char_stream
from mechverify.theory.tasks.zipf import ZipfMarkov, zipf_markov
from mechverify.training.runner import Resume, catalogue, check_scale, cpu_state, optimise, register, step_seed, trained

CORPORA = ("zipf", "text")
FINAL_NORMS = ("layernorm", "rmsnorm")
SCALES = ("quick", "paper")
NORM_EPS = 1e-5
TRAIN_FRACTION = 0.9
EVAL_SEED = 10**6          # held-out Zipf sequences come from a stream no training step uses


@dataclass(frozen=True)
class MetaNormConfig:
    """One training run of a small pre-LN causal GPT on next-token prediction."""

    corpus: str = "zipf"                # "zipf" | "text" (see module doc)
    final_norm: str = "layernorm"       # "layernorm" | "rmsnorm"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    context: int = 64                   # tokens per training sequence
    batch: int = 32                     # sequences per step
    steps: int = 2000                   # AdamW steps
    lr: float = 1e-3
    weight_decay: float = 0.01
    clip: float = 1.0                   # gradient-norm clipping
    vocab: int = 64                     # zipf: vocabulary; text: characters kept, <unk> included
    zipf_exponent: float = 1.1
    zipf_sharpness: float = 2.0         # see mechverify.theory.tasks.zipf
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {CORPORA}; got {self.corpus!r}")
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}; got {self.final_norm!r}")
        for name in ("n_layers", "d_model", "n_heads", "context", "batch", "steps", "log_every"):
            check_int(name, getattr(self, name))
        check_int("vocab", self.vocab, minimum=2)
        check_int("seed", self.seed, minimum=0)
        check_real("lr", self.lr, positive=True)
        check_real("weight_decay", self.weight_decay, nonnegative=True)
        check_real("clip", self.clip, positive=True)
        check_real("zipf_exponent", self.zipf_exponent, nonnegative=True)
        check_real("zipf_sharpness", self.zipf_sharpness, nonnegative=True)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")


@catalogue
def runs(scale: str = "quick") -> dict[str, MetaNormConfig]:
    """The meta-learning runs by name ``<corpus>_<final norm>``.

    ``quick`` (CPU, about 25 CPU-s per run): 2 layers, d = 64, 4 heads, context 64, batch 32,
    AdamW at lr 3e-3 for 600 steps (the spec's 2000 steps at 1e-3 shortened for CI); final
    LayerNorm on both corpora, and final RMSNorm on the Zipf corpus.  ``paper``: the docs/meta_learning.md §6.2
    setting, 2000 steps at lr 1e-3, both final norms on both corpora."""
    quick = dict(steps=600, lr=3e-3, log_every=25)
    paper = dict(steps=2000, lr=1e-3)
    table = {
        "quick": {"zipf_layernorm": MetaNormConfig(corpus="zipf", final_norm="layernorm", **quick),
                  "text_layernorm": MetaNormConfig(corpus="text", final_norm="layernorm", **quick),
                  "zipf_rmsnorm": MetaNormConfig(corpus="zipf", final_norm="rmsnorm", **quick)},
        "paper": {"zipf_layernorm": MetaNormConfig(corpus="zipf", final_norm="layernorm", **paper),
                  "zipf_rmsnorm": MetaNormConfig(corpus="zipf", final_norm="rmsnorm", **paper),
                  "text_layernorm": MetaNormConfig(corpus="text", final_norm="layernorm", **paper),
                  "text_rmsnorm": MetaNormConfig(corpus="text", final_norm="rmsnorm", **paper)},
    }
    return table[check_scale(scale)]


# --- corpora -------------------------------------------------------------------------

@cache
def _zipf_chain(vocab: int, exponent: float, sharpness: float, seed: int) -> ZipfMarkov:
    return zipf_markov(vocab, exponent, sharpness, seed)


@cache
def _text(vocab: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(train ids, held-out ids, characters) of the pydoc_data character stream."""
    ids, voc = char_stream(max_size=vocab - 1)
    split = int(TRAIN_FRACTION * ids.size)
    return ids[:split], ids[split:], voc.tokens


def zipf_chain(config: MetaNormConfig) -> ZipfMarkov:
    """The Zipf-Markov chain of a ``zipf`` run (chain seed = run seed)."""
    return _zipf_chain(config.vocab, config.zipf_exponent, config.zipf_sharpness, config.seed)


def train_batch(config: MetaNormConfig, step: int) -> np.ndarray:
    """(batch, context + 1) token ids of training step ``step``."""
    seed = step_seed(config.seed, step)
    if config.corpus == "zipf":
        return zipf_chain(config).sample(config.batch, config.context + 1, seed)
    train, _, _ = _text(config.vocab)
    starts = np.random.default_rng(seed).integers(0, train.size - config.context - 1, size=config.batch)
    return train[starts[:, None] + np.arange(config.context + 1)]


def heldout_tokens(config: MetaNormConfig, n_sequences: int = 64) -> np.ndarray:
    """(n_sequences, context + 1) held-out token ids (never seen in training)."""
    n_sequences = check_int("n_sequences", n_sequences)
    L = config.context + 1
    if config.corpus == "zipf":
        return zipf_chain(config).sample(n_sequences, L, EVAL_SEED + config.seed)
    _, held, _ = _text(config.vocab)
    if n_sequences * L > held.size:
        raise ValueError(f"n_sequences must be <= {held.size // L} for the held-out text; got {n_sequences}")
    return held[: n_sequences * L].reshape(n_sequences, L)


def token_frequency(config: MetaNormConfig) -> np.ndarray:
    """(V,) relative token frequency: pi (zipf) or training-part counts (text; <unk> = NaN)."""
    if config.corpus == "zipf":
        return zipf_chain(config).pi.copy()
    train, _, chars = _text(config.vocab)
    freq = np.bincount(train, minlength=config.vocab).astype(np.float64) / train.size
    freq[len(chars):] = np.nan
    return freq


def optimal_loss(config: MetaNormConfig) -> float:
    """The best achievable next-token loss (zipf: the entropy rate); NaN for text."""
    return zipf_chain(config).entropy_rate() if config.corpus == "zipf" else math.nan


# --- model and training --------------------------------------------------------------

def build_model(config: MetaNormConfig) -> GPT:
    """The untrained model of ``config`` (float32, CPU), initialised from its seed."""
    torch.manual_seed(config.seed)
    model = GPT(config.vocab, config.d_model, config.n_layers, config.n_heads, config.context, d_out=config.vocab)
    model.ln_f = (nn.LayerNorm(config.d_model, eps=NORM_EPS) if config.final_norm == "layernorm"
                  else nn.RMSNorm(config.d_model, eps=NORM_EPS))
    return model


def _one_hot(tokens: np.ndarray, vocab: int, device="cpu") -> torch.Tensor:
    return F.one_hot(torch.as_tensor(tokens, device=device), vocab).to(torch.float32)


def lm_loss(model: GPT, tokens: np.ndarray, vocab: int, device="cpu") -> torch.Tensor:
    """Mean next-token cross-entropy over all positions of ``tokens`` (B, T + 1)."""
    logits = model(_one_hot(tokens[:, :-1], vocab, device))
    target = torch.as_tensor(tokens[:, 1:], device=device)
    return F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1))


def train_metanorm(config: MetaNormConfig, progress: bool = True, device: str | torch.device = "cpu") -> dict:
    """Train with AdamW (gradient norm clipped); payload: ``state``, ``log_steps``, ``loss``."""
    device = torch.device(device)
    model = build_model(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def step_loss(step):
        return lm_loss(model, train_batch(config, step), config.vocab, device)

    log_steps, losses = optimise(opt, step_loss, steps=config.steps, log_every=config.log_every,
                                 desc=f"train metanorm {config.corpus}/{config.final_norm}", progress=progress,
                                 lr=config.lr,
                                 after_backward=lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip),
                                 resume=Resume(config, model, device))
    return {"state": cpu_state(model), "log_steps": torch.tensor(log_steps), "loss": torch.tensor(losses)}


register(MetaNormConfig, train=train_metanorm, build=build_model)
trained_metanorm = trained          # the runner's trained(config): eval mode, grads off


def random_init_model(config: MetaNormConfig) -> GPT:
    """The control: the same architecture and seed, untrained."""
    return build_model(config).requires_grad_(False).eval()


# --- analyses ------------------------------------------------------------------------

def head_parameters(model: GPT) -> dict:
    """The logit-lens head as float64 numpy: U, bias, norm name, gamma, beta, eps."""
    ln = model.ln_f
    as_np = lambda t: None if t is None else t.detach().cpu().numpy().astype(np.float64)
    norm = "layernorm" if isinstance(ln, nn.LayerNorm) else "rmsnorm"
    return {"U": as_np(model.read_out.weight), "bias": as_np(model.read_out.bias), "norm": norm,
            "gamma": as_np(ln.weight), "beta": as_np(getattr(ln, "bias", None)), "eps": float(ln.eps)}


def residual_stream(model: GPT, tokens: np.ndarray, vocab: int) -> np.ndarray:
    """h_t^(l) for l = 0..L on the inputs tokens[:, :-1]: (L+1, B, T, d) float64."""
    with torch.no_grad():
        _, hidden = model(_one_hot(tokens[:, :-1], vocab), return_hidden=True)
    return np.stack([h.numpy().astype(np.float64) for h in hidden])


def inner_analysis(model: GPT, tokens: np.ndarray, vocab: int, chunk: int = 16, targets=None) -> dict:
    """The inner-loss quantities on held-out ``tokens`` (B, T + 1), all numpy float64
    (``targets`` (B, T), if given, replaces the next tokens tokens[:, 1:] in the inner loss,
    e.g. shuffled targets as a control; ``model_loss`` always uses the true next tokens):

    ``loss``   (L+1, B, T) logit-lens loss l_t(h_t^(l)) with the model's head and final norm;
    ``norm``   (L+1, B, T) |h_t^(l)|;
    ``cos``    (L, B, T)   cos(Delta_t^(l), -grad l_t(h_t^(l)));
    ``eta``    (L, B, T)   the fitted step <Delta, -g> / |g|^2 (GD component of the update);
    ``c``      (L, B, T)   |g| |h| (= |grad l(h_hat)| when N is exactly scale invariant);
    ``model_loss`` (B, T)  the model's own next-token loss (torch), for the l = L check.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must have shape (B, T + 1) with T >= 1; got {tokens.shape}")
    targets = tokens[:, 1:] if targets is None else np.asarray(targets)
    if targets.shape != (tokens.shape[0], tokens.shape[1] - 1):
        raise ValueError(f"targets must have shape {(tokens.shape[0], tokens.shape[1] - 1)}; got {targets.shape}")
    chunk = check_int("chunk", chunk)
    head = head_parameters(model)
    kw = {k: head[k] for k in ("gamma", "beta", "bias", "eps")}
    parts = {k: [] for k in ("loss", "norm", "cos", "eta", "c", "model_loss")}
    for s in range(0, tokens.shape[0], chunk):
        tok = tokens[s:s + chunk]
        H = residual_stream(model, tok, vocab)
        y = np.broadcast_to(targets[s:s + chunk], H.shape[:-1])
        parts["loss"].append(logit_lens_loss(H, head["U"], y, head["norm"], **kw))
        g = logit_lens_grad(H[:-1], head["U"], y[:-1], head["norm"], **kw)
        delta = H[1:] - H[:-1]
        gn, dn, hn = (np.linalg.norm(a, axis=-1) for a in (g, delta, H))
        inner = -np.sum(delta * g, axis=-1)
        parts["norm"].append(hn)
        parts["cos"].append(inner / (dn * gn))
        parts["eta"].append(inner / gn**2)
        parts["c"].append(gn * hn[:-1])
        with torch.no_grad():
            logits = model(_one_hot(tok[:, :-1], vocab))
            parts["model_loss"].append(F.cross_entropy(logits.transpose(1, 2), torch.as_tensor(tok[:, 1:]),
                                                       reduction="none").numpy().astype(np.float64))
    axis = {"model_loss": 0}
    return {k: np.concatenate(v, axis=axis.get(k, 1)) for k, v in parts.items()}


def per_layer_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: the mean over sequences of the per-sequence mean of ``values`` (L, B, T),
    and the half-width of its t-interval (sequences are the independent units)."""
    seq = values.mean(axis=2)                                 # (L, B)
    B = seq.shape[1]
    if B < 2:
        raise ValueError(f"values must hold at least 2 sequences; got {B}")
    half = scipy.stats.t.ppf(0.5 + level / 2, B - 1) * seq.std(axis=1, ddof=1) / math.sqrt(B)
    return seq.mean(axis=1), half


def norm_growth_stats(analysis: dict) -> dict:
    """Norm against depth: the fraction of (t, l) steps with |h^(l+1)| >= |h^(l)|, the fraction
    of monotone trajectories, and the docs/meta_learning.md §5 bound with the fitted GD steps eta_l (negative
    ones set to 0): a_l^2 >= a_0^2 + 2 sum_{k<l} eta_k^2 c_k^2 for a pure inner-GD unroll;
    ``bound_norm`` is its mean over tokens as a norm (the 4th root), per layer, and
    ``frac_above_bound`` the fraction of tokens whose measured |h^(L)|^4 reaches it."""
    norm = analysis["norm"]
    up = np.diff(norm, axis=0) >= 0
    a = norm**2
    steps = 2.0 * np.clip(analysis["eta"], 0, None) ** 2 * analysis["c"] ** 2
    bound = a[0] ** 2 + np.concatenate([np.zeros_like(a[:1]), np.cumsum(steps, axis=0)])   # (L+1, B, T)
    return {"frac_steps_nondecreasing": float(up.mean()), "frac_monotone": float(up.all(axis=0).mean()),
            "frac_above_bound": float(np.mean(a[-1] ** 2 >= bound[-1])),
            "mean_norm": norm.mean(axis=(1, 2)).tolist(), "bound_norm": (bound ** 0.25).mean(axis=(1, 2)).tolist(),
            "n_tokens": int(norm[0].size)}


def inner_gd_reference(model: GPT, tokens: np.ndarray, vocab: int, lrs) -> dict:
    """The pure inner-GD unroll of docs/meta_learning.md §3 (numpy, :func:`mechverify.theory.algorithms.inner_loss.inner_gd_unroll`)
    from the model's own h^(0) with step sizes ``lrs`` (one per layer) and the model's head:
    ``norm`` and ``loss`` (L'+1, B, T) along the unroll, L' = len(lrs)."""
    head = head_parameters(model)
    H0 = residual_stream(model, tokens, vocab)[0]
    states, _ = inner_gd_unroll(H0, head["U"], tokens[:, 1:], lrs, head["norm"], gamma=head["gamma"],
                                beta=head["beta"], bias=head["bias"], eps=head["eps"])
    loss = logit_lens_loss(states, head["U"], np.broadcast_to(tokens[:, 1:], states.shape[:-1]), head["norm"],
                           gamma=head["gamma"], beta=head["beta"], bias=head["bias"], eps=head["eps"])
    return {"norm": np.linalg.norm(states, axis=-1), "loss": loss}


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """(rho, two-sided p, n) of the finite pairs."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same size; got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        raise ValueError(f"x and y must hold at least 3 finite pairs; got {int(ok.sum())}")
    res = scipy.stats.spearmanr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue), int(ok.sum())


def position_stats(analysis: dict) -> dict:
    """|h_t^(L)| against position t: Spearman rho over all tokens at t >= 1 (B (T-1) pairs), and
    the first position apart (its mean norm over the median of the others' means)."""
    final = analysis["norm"][-1]                                   # (B, T)
    B, T = final.shape
    rho, p, n = spearman(final[:, 1:], np.broadcast_to(np.arange(1, T), (B, T - 1)))
    per_pos = final.mean(axis=0)
    return {"rho": rho, "p": p, "n": n, "first_over_median": float(per_pos[0] / np.median(per_pos[1:])),
            "per_position": per_pos.tolist()}


def frequency_stats(model: GPT, frequency: np.ndarray) -> dict:
    """Spearman rho of |u_v| (unembedding rows) and |e_v| (embeddings W_in[:, v] + b_in)
    against log frequency, over the tokens with a finite, positive frequency."""
    U = model.read_out.weight.detach().numpy().astype(np.float64)
    E = (model.read_in.weight.T + model.read_in.bias).detach().numpy().astype(np.float64)
    logf = np.log(np.where(frequency > 0, frequency, np.nan))
    rho_u, p_u, n = spearman(np.linalg.norm(U, axis=1), logf)
    rho_e, p_e, _ = spearman(np.linalg.norm(E, axis=1), logf)
    return {"rho_unembed": rho_u, "p_unembed": p_u, "rho_embed": rho_e, "p_embed": p_e, "n": n,
            "unembed_norm": np.linalg.norm(U, axis=1).tolist(), "embed_norm": np.linalg.norm(E, axis=1).tolist()}
