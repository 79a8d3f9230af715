"""Training on the staged-Markov task (docs/markov.md §2.3, §6): configs, cached runs,
block-mass and value-alignment metrics, KL to truncated teachers and to learned k-block
baselines, stage times.

A run (:class:`MarkovTrainConfig`) trains the minimal attention-only model (or the full
one-layer model) with AdamW, gradient-norm clipping and ReduceLROnPlateau (stepped on the
validation CE at every logged evaluation; stepping it on the noisy online training loss every
step collapsed the learning rate within a few hundred steps) on next-token cross-entropy at
the L generated positions, on a fixed training set (full batch) or online (fresh sequences
every step).  Every ``log_every`` steps it records on a fixed validation set:

``val``        validation CE (nats)
``kl_teacher`` (h,) KL(p_{A*_{1:k}} ‖ q_θ), k = 1..h, averaged over positions and sequences
``kl_base``    (h,) KL(q_θ ‖ q_k) to the learned k-block baselines (when the run has them)
``mass``       (H, h) per head, attention mass on each block I(k) (importance order) at the
               last query position, averaged over validation sequences
``lag_mass``   (H, n_inputs) per head, the mean attention of the last query position on each
               lag 1 .. n_inputs (column i-1 = lag i)
``align``      (H, h) minimal model: ⟨W_V^h (token block), A*_k⟩ / ‖A*_k‖_F

Baselines ("k-gram" in the paper's code) are runs of the same config with
``context_blocks = k``: the minimal model restricted to the lags of the k nearest blocks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from mechverify.constructions.markov import MinimalMarkovModel, full_attention_pattern, full_markov_model
from mechverify.theory.checks import check_int, check_real
from mechverify.theory.tasks.markov import MarkovTask, lag_matrices, log_softmax, sample_sequences, teacher_logits, \
    teacher_matrices
from mechverify.training.runner import Resume, catalogue, check_scale, cpu_state, optimise, register, step_seed, trained

ARCHS = ("minimal", "full")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
VAL_SEED = 10**6
TRAIN_SEED = 10**7


@dataclass(frozen=True)
class MarkovTrainConfig:
    """One training run on the Markov teacher ``task`` (defaults: docs/markov.md §6.2 reduced Fig. 1)."""

    task: MarkovTask = MarkovTask(d=20, L=10)
    arch: str = "minimal"               # "minimal" | "full"
    n_heads: int = 3
    width: int = 63                     # full model only: d_model (a multiple of n_heads)
    context_blocks: int | None = None   # minimal only: restrict attention to the k nearest blocks
    n_train: int | None = 2000          # training sequences (full batch); None = online
    batch: int = 512                    # online only: sequences per step
    n_val: int = 1000                   # validation sequences
    steps: int = 2000
    lr: float = 0.08                    # AdamW
    weight_decay: float = 0.01
    clip: float = 1.0                   # gradient-norm clipping
    init: str = "xavier"                # minimal: "xavier" | "small" (W_Q ~ U(-σ_Q, σ_Q), W_V = 0)
    sigma_q: float = 0.0
    patience: int = 10                  # ReduceLROnPlateau on the validation CE, in logged evaluations
    factor: float = 0.5
    baselines: tuple = ()               # context sizes k of the learned baselines to compare with
    baseline_n_train: int | None = None  # training sequences of those baselines (None = online, batch 256)
    baseline_steps: int = 1500          # their optimiser steps (Xavier init; 40% for k < h)
    dtype: str = "float32"
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.task, MarkovTask):
            raise TypeError(f"task must be a MarkovTask; got {type(self.task).__name__}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        for name in ("n_heads", "width", "batch", "n_val", "steps", "patience", "log_every", "baseline_steps"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0)
        if self.n_train is not None:
            check_int("n_train", self.n_train)
        if self.baseline_n_train is not None:
            check_int("baseline_n_train", self.baseline_n_train)
        if self.arch == "full" and self.width % self.n_heads:
            raise ValueError(f"width ({self.width}) must be a multiple of n_heads ({self.n_heads})")
        if self.context_blocks is not None:
            check_int("context_blocks", self.context_blocks)
            if self.context_blocks > self.task.h or self.arch != "minimal":
                raise ValueError(f"context_blocks must be <= h = {self.task.h} (minimal model only); "
                                 f"got {self.context_blocks}")
        for name in ("lr", "clip"):
            check_real(name, getattr(self, name), positive=True)
        check_real("weight_decay", self.weight_decay, nonnegative=True)
        check_real("sigma_q", self.sigma_q, nonnegative=True)
        check_real("factor", self.factor, positive=True)
        if not self.factor < 1:
            raise ValueError(f"factor must be < 1; got {self.factor}")
        if self.init not in ("xavier", "small"):
            raise ValueError(f"init must be 'xavier' or 'small'; got {self.init!r}")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}; got {self.dtype!r}")
        if not isinstance(self.baselines, tuple) or any(
                isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.task.h for k in self.baselines):
            raise ValueError(f"baselines must be a tuple of context sizes in 1..{self.task.h}; got {self.baselines!r}")
        if self.baselines and self.context_blocks is not None:
            raise ValueError("baselines: a baseline run has no baselines of its own")

    @property
    def n_positions(self) -> int:
        return self.task.w + self.task.L - 1

    @property
    def max_lag(self) -> int | None:
        if self.context_blocks is None:
            return None
        return int(self.task.position_lags(self.context_blocks - 1)[-1])

    def sub_runs(self) -> tuple["MarkovTrainConfig", ...]:
        """The runs that training this one requests: its learned baselines."""
        return tuple(self.baseline(k) for k in self.baselines)

    def baseline(self, k: int) -> "MarkovTrainConfig":
        """The learned k-block baseline of this run: the minimal model restricted to the k
        nearest blocks, Xavier init, ``baseline_steps`` steps (k = h; 40% of them for k < h,
        which converge sooner) on ``baseline_n_train`` sequences (so runs that differ only in
        their own data, init or length share their baselines)."""
        check_int("k", k)
        if k > self.task.h:
            raise ValueError(f"k must be <= h = {self.task.h}; got {k}")
        steps = self.baseline_steps if k == self.task.h else max(1, self.baseline_steps * 2 // 5)
        return dataclasses.replace(self, arch="minimal", context_blocks=k, baselines=(), steps=steps,
                                   n_train=self.baseline_n_train, batch=256, init="xavier", sigma_q=0.0,
                                   log_every=20, baseline_n_train=None, baseline_steps=1500)


def build_model(config: MarkovTrainConfig) -> torch.nn.Module:
    """The untrained model of ``config`` (CPU), initialised from its seed."""
    dtype = DTYPES[config.dtype]
    gen = torch.Generator().manual_seed(config.seed)
    if config.arch == "minimal":
        return MinimalMarkovModel(config.task.d, config.n_positions, config.n_heads, max_lag=config.max_lag,
                                  init=config.init, sigma_q=config.sigma_q, dtype=dtype, generator=gen)
    torch.manual_seed(config.seed)
    return full_markov_model(config.task.d, config.n_positions, config.width, config.n_heads, dtype=dtype)


def model_logits(model: torch.nn.Module, tokens: torch.Tensor, w: int) -> torch.Tensor:
    """Logits (B, L, d) for the generated positions of ``tokens`` (B, w + L)."""
    inputs = tokens[:, :-1]
    if isinstance(model, MinimalMarkovModel):
        return model(inputs, query_from=w - 1)
    onehot = torch.nn.functional.one_hot(inputs, model.read_out.out_features).to(model.pos.dtype)
    return model(onehot)[:, w - 1:]


def attention_pattern(model: torch.nn.Module, tokens: torch.Tensor, w: int) -> torch.Tensor:
    """Attention (B, H, n_inputs) of the last query position (predicting the last token)."""
    inputs = tokens[:, :-1]
    if isinstance(model, MinimalMarkovModel):
        return model(inputs, query_from=inputs.shape[1] - 1, return_pattern=True)[1][:, :, -1]
    onehot = torch.nn.functional.one_hot(inputs, model.read_out.out_features).to(model.pos.dtype)
    return full_attention_pattern(model, onehot)[:, :, -1]


def block_masses(pattern: np.ndarray, task: MarkovTask) -> np.ndarray:
    """(H, h): mean attention mass of each head on each block I(k) (importance order), from
    the last-position pattern (B, H, n_inputs); lag i sits at input index n_inputs − i."""
    n = pattern.shape[-1]
    mean = pattern.mean(0)
    return np.stack([mean[:, n - task.block_lags(k)].sum(-1) for k in range(1, task.h + 1)], axis=1)


def value_alignment(model: torch.nn.Module, A: np.ndarray) -> np.ndarray:
    """(H, h): ⟨W_V^h[:, :d], A*_k⟩ / ‖A*_k‖_F (minimal model; zeros for the full model)."""
    if not isinstance(model, MinimalMarkovModel):
        return np.zeros((0, A.shape[0]))
    Wv = model.W_V.detach()[:, :, :model.d].double().numpy()
    return np.einsum("hij,kij->hk", Wv, A) / np.linalg.norm(A, axis=(1, 2))


class _Evaluator:
    """Fixed validation set with the truncated teachers' and baselines' log-probabilities."""

    def __init__(self, config: MarkovTrainConfig, base_logp: dict[int, np.ndarray]):
        task = config.task
        self.task, self.config = task, config
        self.seq = sample_sequences(task, config.n_val, VAL_SEED)
        self.tokens = torch.from_numpy(self.seq)
        A = teacher_matrices(task)
        self.A = A
        self.teacher = [log_softmax(teacher_logits(task, self.seq, W=lag_matrices(task, k, A)))
                        for k in range(1, task.h + 1)]
        self.p = np.exp(self.teacher[-1])
        self.base = base_logp

    def __call__(self, model) -> dict:
        with torch.no_grad():
            logq = torch.log_softmax(model_logits(model, self.tokens, self.task.w), -1).double().numpy()
            pattern = attention_pattern(model, self.tokens, self.task.w).double().numpy()
        val = float(-(np.take_along_axis(logq, self.seq[:, self.task.w:, None], -1)).mean())
        kl_t = [float((np.exp(lp) * (lp - logq)).sum(-1).mean()) for lp in self.teacher]
        q = np.exp(logq)
        kl_b = [float((q * (logq - self.base[k])).sum(-1).mean()) for k in sorted(self.base)]
        return {"val": val, "kl_teacher": kl_t, "kl_base": kl_b, "mass": block_masses(pattern, self.task),
                "lag_mass": pattern.mean(0)[:, ::-1].copy(), "align": value_alignment(model, self.A), "logq": logq}


def baseline_payloads(config: MarkovTrainConfig, *, recompute: bool = False, progress: bool = True,
                      device: str | torch.device = "cpu") -> dict[int, dict]:
    """k -> payload of the learned k-block baseline, for every k in ``config.baselines``."""
    return {k: trained(sub, recompute=recompute, progress=progress, device=device)[1]
            for k, sub in zip(config.baselines, config.sub_runs())}


def plateau_ce_levels(config: MarkovTrainConfig, baselines: dict[int, dict]) -> np.ndarray:
    """Reference CE levels of the stages: ln d (uniform), then the best validation CE of the
    learned 1-, 2-, ... block baselines (needs baselines 1..h)."""
    if sorted(baselines) != list(range(1, config.task.h + 1)):
        raise ValueError(f"baselines must hold k = 1..{config.task.h}; got {sorted(baselines)}")
    return np.array([math.log(config.task.d)] + [float(baselines[k]["val"].min()) for k in sorted(baselines)])


def train_markov(config: MarkovTrainConfig, progress: bool = True, device: str | torch.device = "cpu",
                 recompute: bool = False) -> dict:
    """Train ``config``; payload: ``state``, ``log_steps``, ``loss`` (training), ``val``,
    ``kl_teacher`` (n_log, h), ``kl_base`` (n_log, len(baselines)), ``mass`` (n_log, H, h), ``lag_mass``
    (n_log, H, n_inputs),
    ``align`` (n_log, H, h), ``final_logq`` (validation log-probabilities at the end), and
    ``best_step`` (the logged step of least validation loss).  Index 0 of every log is the
    initial model (step 0)."""
    device = torch.device(device)
    base = {k: p["final_logq"].numpy() for k, p in
            baseline_payloads(config, recompute=recompute, progress=progress, device=device).items()}
    evaluator = _Evaluator(config, base)
    task, dtype = config.task, DTYPES[config.dtype]
    model = build_model(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=config.patience, factor=config.factor)
    if config.n_train is not None:
        train = torch.from_numpy(sample_sequences(task, config.n_train, TRAIN_SEED + config.seed)).to(device)
    logs = {key: [] for key in ("val", "kl_teacher", "kl_base", "mass", "lag_mass", "align")}

    def record():
        model.cpu()
        res = evaluator(model)
        model.to(device)
        for key in logs:
            logs[key].append(res[key])
        return res

    record()

    def step_loss(step):
        tokens = train if config.n_train is not None else torch.from_numpy(
            sample_sequences(task, config.batch, step_seed(config.seed, step))).to(device)
        logits = model_logits(model, tokens, task.w)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, task.d), tokens[:, task.w:].reshape(-1))
        return loss

    def after_backward():
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)

    log_steps, losses = optimise(opt, step_loss, steps=config.steps, log_every=config.log_every,
                                 desc=f"train markov {config.arch} k={config.context_blocks}", progress=progress,
                                 lr=config.lr, after_backward=after_backward,
                                 on_log=lambda: sched.step(record()["val"]),
                                 resume=Resume(config, model, device, logs=logs, schedulers=(sched,)))
    model.cpu()
    final = evaluator(model)
    val = np.array(logs["val"])
    steps = np.array([0] + log_steps)
    return {"state": cpu_state(model), "log_steps": torch.tensor(steps),
            "loss": torch.tensor([math.nan] + losses, dtype=torch.float64),
            "val": torch.tensor(val), "kl_teacher": torch.tensor(np.array(logs["kl_teacher"])),
            "kl_base": torch.tensor(np.array(logs["kl_base"]).reshape(len(steps), len(config.baselines))),
            "mass": torch.tensor(np.array(logs["mass"])), "lag_mass": torch.tensor(np.array(logs["lag_mass"])),
            "align": torch.tensor(np.array(logs["align"])),
            "final_logq": torch.tensor(final["logq"]), "best_step": int(steps[int(np.argmin(val))])}


register(MarkovTrainConfig, train=train_markov, build=build_model)
trained_markov = trained            # the runner's trained(config): eval mode, grads off


# --- Stage times ---------------------------------------------------------------------------

def loss_stage_times(steps: np.ndarray, loss: np.ndarray, levels) -> np.ndarray:
    """First step where ``loss`` falls below each midpoint of consecutive plateau levels
    (nan where never)."""
    levels = np.asarray(levels, float)
    out = np.full(levels.size - 1, math.nan)
    for k in range(levels.size - 1):
        below = np.nonzero(loss < 0.5 * (levels[k] + levels[k + 1]))[0]
        if below.size:
            out[k] = steps[below[0]]
    return out


def kl_crossings(steps: np.ndarray, kl_teacher: np.ndarray) -> np.ndarray:
    """(h - 1,): first step where KL(A*_{1:k+1}) < KL(A*_{1:k}), k = 1..h-1 (nan where never)."""
    out = np.full(kl_teacher.shape[1] - 1, math.nan)
    for k in range(kl_teacher.shape[1] - 1):
        idx = np.nonzero(kl_teacher[:, k + 1] < kl_teacher[:, k])[0]
        idx = idx[idx > 0]
        if idx.size:
            out[k] = steps[idx[0]]
    return out


def acquisition_steps(steps: np.ndarray, mass: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(h,): first logged step where any head's mass on block k exceeds ``threshold``."""
    out = np.full(mass.shape[2], math.nan)
    for k in range(mass.shape[2]):
        idx = np.nonzero((mass[:, :, k] > threshold).any(1))[0]
        if idx.size:
            out[k] = steps[idx[0]]
    return out


# --- The runs behind the trained claims and figures ------------------------------------------

@catalogue
def runs(scale: str = "quick") -> dict[str, MarkovTrainConfig]:
    """The Markov runs by name (``quick``: docs/markov.md §6.2 reduced setting, CPU; ``paper``: d = 50, L = 20).

    ``main``       minimal model, small init (σ_Q = 1e-9, W_V = 0), Frobenius-orthogonal A*
                   (rebuttal Fig. B setting), online data (fresh sequences every step), with the
                   learned 1/2/3-block baselines; serves the stage, competitive/cooperative,
                   order and baseline-KL claims.  Online, because a fixed set of 2000
                   sequences overfits before stage 3 is complete (best validation CE 0.494 at
                   step 1100, above the stage-3 midpoint 0.44 of the online baselines)
    ``online``     the same run (the online-staging claim)
    ``data_<n>``   the same model on a fixed set of n sequences (full batch): early stopping
                   vs data size; ``data_2000`` is the spec's reduced Fig. 1 setting
    ``symmetric``  σ_Q = 0, W_V = 0, float64, 500 sequences (symmetry is never broken)
    ``reversed``, ``unequal``  acquisition order with reversed importance / block sizes (1, 3)
                   with m = 1.25 (energy order ≠ norm order; 2/3 of the steps)
    ``sigma_<s>``, ``m_<m>``   timing sweeps: σ_Q ∈ {1e-3, 1e-9} and m ∈ {1.7, 2.5} at quick
                   scale (plus σ_Q = 1e-6 and m = 1.3 at paper scale); ``main`` is one point of each.
                   At paper scale m = 2.5 trains 6000 steps (twice the others): in 3000 steps
                   it never acquired block 3 (it closed 0.83-0.86 of ce_2 -> ce_3 at seeds
                   0-2), acquisition 2560-3530 steps after block 2 with 6000
    ``figure_xavier``, ``figure_ratio_1``  figure-only runs (Fig. 4 analogue): Xavier init, and m = 1.0
    ``figure_full``  figure-only run: the full one-layer model (GPT block) on blocks [4, 4, 4],
                   non-orthogonal A*, AdamW 3e-3, Xavier init (Figs. 2-3 analogue)
    """
    if scale == "quick":
        task = MarkovTask(d=20, L=10, orthogonal=True)
        main = MarkovTrainConfig(task=task, init="small", sigma_q=1e-9, n_train=None, batch=256, steps=1500,
                                 log_every=10, baselines=(1, 2, 3))
        sizes, sym_steps = (100, 300, 2000), 300
    elif scale == "paper":
        task = MarkovTask(d=50, L=20, orthogonal=True)
        main = MarkovTrainConfig(task=task, init="small", sigma_q=1e-9, n_train=None, batch=512, n_val=3000,
                                 steps=3000, log_every=10, baselines=(1, 2, 3), baseline_steps=3000)
        sizes, sym_steps = (100, 300, 600, 2000, 9000), 500
    else:
        check_scale(scale)
    runs = {"main": main, "online": main,
            "symmetric": dataclasses.replace(main, sigma_q=0.0, dtype="float64", steps=sym_steps, n_train=500,
                                             baselines=())}
    for n in sizes:
        runs[f"data_{n}"] = dataclasses.replace(main, n_train=n, steps=1200 if scale == "quick" else main.steps)
    runs["reversed"] = dataclasses.replace(main, task=dataclasses.replace(task, reverse=True), baselines=())
    runs["unequal"] = dataclasses.replace(main, task=dataclasses.replace(task, sizes=(1, 3), m=1.25), baselines=(),
                                          steps=main.steps * 2 // 3)
    # timing sweeps (σ_Q at m = 1.7; m at σ_Q = 1e-9); the main run is the shared point
    sigmas, ms = ((1e-3,), (2.5,)) if scale == "quick" else ((1e-3, 1e-6), (1.3, 2.5))
    runs["sigma_1e-09"] = runs["m_1.7"] = main
    for sigma in sigmas:
        runs[f"sigma_{sigma:g}"] = dataclasses.replace(main, sigma_q=sigma, baselines=())
    for m in ms:
        steps = 2 * main.steps if scale == "paper" and m == 2.5 else main.steps
        runs[f"m_{m:g}"] = dataclasses.replace(main, task=dataclasses.replace(task, m=m), baselines=(), steps=steps)
    runs["figure_xavier"] = dataclasses.replace(main, init="xavier", baselines=())
    runs["figure_ratio_1"] = dataclasses.replace(main, task=dataclasses.replace(task, m=1.0), baselines=())
    runs["figure_full"] = dataclasses.replace(main, task=dataclasses.replace(task, sizes=(4, 4, 4), orthogonal=False),
                                              arch="full", width=63 if scale == "quick" else 255, lr=3e-3,
                                              init="xavier", sigma_q=0.0, baselines=(),
                                              steps=800 if scale == "quick" else main.steps, log_every=20)
    return runs
