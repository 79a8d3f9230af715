"""Sparse linear regression (Chen, Zhao, Zou 2024): cached algorithm comparisons, trained
multi-head models, and the paper's analyses (head masking, pruning, layer-wise probes).

Two architectures (``SparseTrainConfig.arch``):

``linear``   the theory model: stacked tokens (x, 0_d, y) -> a residual stack of multi-head
             linear-attention layers (:class:`mechverify.constructions.modules.LinearAttention`, every
             head of width 2d+1), prediction = minus the query's y-slot, as in
             :func:`mechverify.constructions.sparse_regression.pto_transformer`.
``softmax``  GPT-2 style (Garg et al.): interleaved tokens x_1, y_1, ..., x_n, y_n, x_q with
             x-tokens (x, 0) and y-tokens (0_d, y); a causal :class:`mechverify.constructions.modules.GPT`
             reads out at every x-token the next y; training loss averaged over all prefixes.

Data: x ~ N(0, I_d), s-sparse w* ~ N(0, I_s), noise sigma; fresh prompts every step.
Excess risk = E (y_hat - y_q)^2 - sigma^2.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from mechverify.constructions.encoders import InterleavedRegression
from mechverify.constructions.modules import GPT, LinearAttention, LinearTransformer
from mechverify.constructions.sparse_regression import pto_layout
from mechverify.theory.algorithms.tuning import SparseComparison, compare_sparse_methods
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.regression import RegressionBatch, sample_regression
from mechverify.training.cache import cached
from mechverify.training.runner import Resume, catalogue, check_scale, cpu_state, optimise, register, step_seed, trained
from mechverify.training.schedules import check_schedule, learning_rate

ARCHS = ("linear", "softmax")
EVAL_SEED = 10**6          # evaluation prompts come from streams no training step uses


def comparison(config: SparseComparison, recompute: bool = False) -> dict:
    """:func:`mechverify.theory.algorithms.tuning.compare_sparse_methods`, cached under the config's hash."""
    return cached(config, lambda: compare_sparse_methods(config), recompute=recompute)


@dataclass(frozen=True)
class SparseTrainConfig:
    """One training run of a multi-head model on in-context sparse linear regression."""

    arch: str = "linear"             # "linear" | "softmax" (see module doc)
    d: int = 8                       # input dimension
    s: int = 2                       # non-zeros of w*
    noise: float = 0.5               # label noise sigma
    n: int = 16                      # labelled examples per prompt
    n_layers: int = 3
    n_heads: int = 4                 # heads per layer
    width: int = 64                  # softmax only: d_model (a multiple of n_heads)
    steps: int = 2000
    batch: int = 512
    lr: float = 1e-3                 # Adam (peak step size)
    warmup: int = 0                  # linear learning-rate warmup over the first ``warmup`` steps
    decay: str = "constant"          # after warmup: "constant" or "cosine" (to 0 at ``steps``)
    curriculum: int = 0              # steps over which the active input dimension grows to d (0: none)
    clip: float = 1.0                # gradient-norm clipping
    init_scale: float = 0.1          # linear only: N(0, init_scale^2 / (2d+1)) weights
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        for name in ("d", "s", "n", "n_layers", "n_heads", "width", "steps", "batch", "log_every"):
            check_int(name, getattr(self, name))
        if self.s > self.d:
            raise ValueError(f"s must be <= d = {self.d}; got {self.s}")
        check_real("noise", self.noise, nonnegative=True)
        check_real("lr", self.lr, positive=True)
        check_schedule(self)
        check_int("curriculum", self.curriculum, minimum=0)
        if self.curriculum > self.steps:
            raise ValueError(f"curriculum must be <= steps = {self.steps}; got {self.curriculum}")
        check_real("clip", self.clip, positive=True)
        check_real("init_scale", self.init_scale, nonnegative=True)
        check_int("seed", self.seed, minimum=0)
        if self.arch == "softmax" and self.width % self.n_heads:
            raise ValueError(f"width ({self.width}) must be a multiple of n_heads ({self.n_heads})")

    def sample(self, n_prompts: int, seed: int) -> RegressionBatch:
        return sample_regression(n_prompts, self.n, self.d, sparsity=self.s, noise=self.noise, seed=seed)


def build_model(config: SparseTrainConfig) -> torch.nn.Module:
    """The untrained model of ``config`` (float32, CPU), initialised from its seed."""
    if config.arch == "softmax":
        model = GPT(config.d + 1, config.width, config.n_layers, config.n_heads, 2 * config.n + 1,
                    generator=torch.Generator().manual_seed(config.seed))
        model.encoder = InterleavedRegression(config.d)         # the prompt format it reads
        return model
    layout = pto_layout(config.d)
    D = layout.width
    gen = torch.Generator().manual_seed(config.seed)
    layers = [LinearAttention(D, config.n_heads, init_scale=config.init_scale / math.sqrt(D),
                              dtype=torch.float32, generator=gen) for _ in range(config.n_layers)]
    readout = torch.zeros(D)
    readout[layout.index("y")] = -1.0
    return LinearTransformer(layers, layout, readout)


def interleave(X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    """Tokens (B, 2n+1, d+1) of :class:`mechverify.constructions.encoders.InterleavedRegression`."""
    return InterleavedRegression(X.shape[-1]).encode((X, y, x_query))


def predict(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    """The model's prediction of y_q (B,), through the model's task encoder."""
    return model.encoder.readout(model.outputs(model.encoder.encode((X, y, x_query))))


def _loss(model, X, y, xq, yq) -> torch.Tensor:
    """Mean square error of every prediction the prompt format trains on (interleaved: every
    prefix, y_i at x_i and y_q at x_q; stacked: y_q)."""
    pred = model.encoder.prefix_readout(model.outputs(model.encoder.encode((X, y, xq))))
    target = torch.cat([y, yq[:, None]], dim=1)[:, -pred.shape[1]:]
    return 0.5 * ((pred - target) ** 2).mean()


def _tensors(b: RegressionBatch, device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device=device, dtype=torch.float32) for a in (b.X, b.y, b.x_query, b.y_query))


def active_dimension(config: SparseTrainConfig, step: int) -> int:
    """Curriculum over the input dimension (after Garg et al. 2022): at training step ``step``
    only the first d_eff coordinates of x are non-zero, d_eff rising linearly from
    ceil(d / 4) at step 1 to d at step ``curriculum`` (always d without a curriculum)."""
    step = check_int("step", step)
    if config.curriculum == 0 or step >= config.curriculum:
        return config.d
    start = -(-config.d // 4)
    return start + (config.d - start) * (step - 1) // config.curriculum


def curriculum_batch(batch: RegressionBatch, d_eff: int) -> RegressionBatch:
    """``batch`` with the input coordinates d_eff.. set to 0 (labels recomputed from the same w
    and noise), i.e. a d_eff-dimensional task embedded in d dimensions."""
    d = batch.X.shape[2]
    d_eff = check_int("d_eff", d_eff)
    if d_eff >= d:
        return batch
    drop_ctx = batch.X[:, :, d_eff:] @ batch.w[:, d_eff:, None]
    drop_q = np.einsum("bd,bd->b", batch.x_query[:, d_eff:], batch.w[:, d_eff:])
    X, xq = batch.X.copy(), batch.x_query.copy()
    X[:, :, d_eff:] = 0.0
    xq[:, d_eff:] = 0.0
    return RegressionBatch(X, batch.y - drop_ctx[..., 0], xq, batch.y_query - drop_q, batch.w)


def train_sparse(config: SparseTrainConfig, progress: bool = True, device: str | torch.device = "cpu",
                 on_log=None) -> dict:
    """Train the model of ``config`` with Adam (gradient norm clipped, step size
    :func:`learning_rate`) on fresh prompts; payload: ``state``, ``log_steps``, ``loss`` (mean
    training loss since the last log).  ``on_log(step, model)``, if given, runs at every logged
    step (e.g. :mod:`bench.steps_to_gate`'s held-out evaluation)."""
    device = torch.device(device)
    model = build_model(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    current = [0]

    def step_loss(step):
        current[0] = step
        batch = config.sample(config.batch, step_seed(config.seed, step))
        return _loss(model, *_tensors(curriculum_batch(batch, active_dimension(config, step)), device))

    log_steps, losses = optimise(opt, step_loss, steps=config.steps, log_every=config.log_every,
                                 desc=f"train {config.arch} h={config.n_heads}", progress=progress, lr=config.lr,
                                 after_backward=lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip),
                                 on_log=None if on_log is None else lambda: on_log(current[0], model),
                                 schedule=lambda step: learning_rate(config, step),
                                 resume=Resume(config, model, device))
    return {"state": cpu_state(model), "log_steps": torch.tensor(log_steps), "loss": torch.tensor(losses)}


register(SparseTrainConfig, train=train_sparse, build=build_model)
trained_sparse = trained             # the runner's trained(config): eval mode, grads off


# --- Analyses: head masking, pruning, probes -------------------------------------------

def eval_prompts(config: SparseTrainConfig, n_prompts: int = 4096, part: int = 0) -> RegressionBatch:
    """Held-out prompts of the run's task (``part`` selects disjoint sets)."""
    return sample_regression(n_prompts, config.n, config.d, sparsity=config.s, noise=config.noise,
                             seed=EVAL_SEED, first=part * n_prompts)


def excess_risks(model: torch.nn.Module, batch: RegressionBatch, noise: float) -> np.ndarray:
    """Per-prompt (y_hat - y_q)^2 - sigma^2: (B,); its mean estimates the excess risk."""
    X, y, xq, yq = _tensors(batch, "cpu")
    with torch.no_grad():
        pred = predict(model, X, y, xq)
    return ((pred - yq) ** 2).numpy().astype(np.float64) - noise**2


def attention_layers(model: torch.nn.Module) -> list:
    return [b.attn for b in model.blocks] if isinstance(model, GPT) else list(model.layers)


def with_heads(model: torch.nn.Module, keep: dict[int, list[int]]) -> torch.nn.Module:
    """A copy of ``model`` in which, for every layer index in ``keep``, only the listed heads
    write to the residual stream (the others' outputs are zeroed before the output map)."""
    model = copy.deepcopy(model)
    for layer_index, heads in keep.items():
        layer = attention_layers(model)[layer_index]
        with torch.no_grad():
            for h in range(layer.n_heads):
                if h in heads:
                    continue
                if isinstance(layer, LinearAttention):
                    layer.W_O[h].zero_()
                else:
                    layer.out.weight[:, h * layer.d_head:(h + 1) * layer.d_head].zero_()
    return model


def head_importance(model: torch.nn.Module, batch: RegressionBatch, noise: float) -> np.ndarray:
    """(L, H): the increase of the mean excess risk when one head is masked."""
    base = excess_risks(model, batch, noise).mean()
    layers = attention_layers(model)
    out = np.zeros((len(layers), layers[0].n_heads))
    for l, layer in enumerate(layers):
        for h in range(layer.n_heads):
            others = [k for k in range(layer.n_heads) if k != h]
            out[l, h] = excess_risks(with_heads(model, {l: others}), batch, noise).mean() - base
    return out


def importance_entropy(importance: np.ndarray) -> np.ndarray:
    """Per layer: the entropy (nats) of p_h = max(I_h, 0) / sum_k max(I_k, 0); log H when all
    heads matter equally, 0 when one head carries the layer."""
    p = np.clip(importance, 0.0, None)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def pruned(model: torch.nn.Module, importance: np.ndarray, keep_first_layer: bool) -> torch.nn.Module:
    """Keep only the most important head in every layer > 1, and in layer 1 all heads
    (``keep_first_layer``) or also only the most important one."""
    H = importance.shape[1]
    keep = {l: [int(np.argmax(importance[l]))] for l in range(importance.shape[0])}
    if keep_first_layer:
        keep[0] = list(range(H))
    return with_heads(model, keep)


def query_states(model: torch.nn.Module, batch: RegressionBatch) -> list[np.ndarray]:
    """The residual stream at the query token after the embedding and after each layer:
    L+1 arrays (B, width)."""
    X, y, xq, _ = _tensors(batch, "cpu")
    with torch.no_grad():
        hidden = model.states(model.encoder.encode((X, y, xq)))
    return [h[:, -1].numpy().astype(np.float64) for h in hidden]


def probe_risks(model: torch.nn.Module, train: RegressionBatch, test: RegressionBatch, noise: float,
                ridge: float = 1e-6) -> np.ndarray:
    """Layer-wise linear probes of y_q (with intercept, ridge ``ridge``) from the query token's
    residual stream, fitted on ``train`` and scored on ``test``: excess risk per layer (L+1,),
    index 0 = the embedding."""
    out = []
    for Htr, Hte in zip(query_states(model, train), query_states(model, test)):
        A = np.hstack([Htr, np.ones((Htr.shape[0], 1))])
        coef = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ train.y_query)
        pred = np.hstack([Hte, np.ones((Hte.shape[0], 1))]) @ coef
        out.append(float(np.mean((pred - test.y_query) ** 2)) - noise**2)
    return np.array(out)


HEAD_COUNTS = (1, 2, 4, 8)


@catalogue
def runs(scale: str = "quick") -> dict[str, SparseTrainConfig]:
    """The sparse-regression runs by name, one per head count ``h<H>`` (same budget).

    ``quick`` (CPU, ~1 min in all): the linear-attention theory model, d = 8, s = 2,
    sigma = 0.5, n = 16, 3 layers, batch 256, 1500 Adam steps at lr 3e-3.
    ``paper`` (GPU advised): the GPT-2 style softmax model, width 64, batch 64, 20000 Adam steps
    at a peak lr of 1e-3 after 500 warmup steps, cosine decay to 0, and an input-dimension
    curriculum over the first 4000 steps (after Garg et al. 2022; the recipe is ours).
    docs/sparse_regression.md §6.2 asks for ~3000 steps: at that budget the model had not left
    the trivial predictor in our CPU trial (loss 1.10 after 500 steps).  The first paper preset,
    a constant lr of 3e-4 over the same 20000 steps, ended 0.38-0.46 (h = 4) in excess risk
    against tuned GD's 0.233 at three seeds; with the curriculum, h = 4 met the gate by step
    10000 (README, steps to the gate)."""
    recipe = {"quick": dict(arch="linear", batch=256, steps=1500, lr=3e-3),
              "paper": dict(arch="softmax", width=64, batch=64, steps=20000, lr=1e-3, warmup=500,
                            decay="cosine", curriculum=4000, log_every=200)}
    return {f"h{h}": SparseTrainConfig(**recipe[check_scale(scale)], n_heads=h) for h in HEAD_COUNTS}
