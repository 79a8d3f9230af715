"""Convergence gates of the trained claims: has a run learned its *task* well enough that a
claim about its *mechanism* can be judged?

A gate never looks at the mechanism a claim tests.  It compares the run's held-out loss with
the task's optimal (Bayes) predictor or with the baseline the claim compares against:

* ``closed_gap``: the run realises at least ``fraction`` of the loss reduction that the
  target predictor achieves over a trivial one (the zero predictor, the uniform or
  context-free predictor): ``(trivial - model) >= fraction * (trivial - target)``.
* ``at_most``: the run's mean held-out loss is at most a reference's, up to 2 standard errors
  of the difference (a baseline the model class contains, so a trained model should reach it).

A claim whose run misses its gate is *inconclusive* (the run was too short or too small to
tell), never a finding; the claim tests call ``record_claim.gate(gate.passed, **gate.numbers)``
and the quick-scale figures mark such runs.  The thresholds and why they are what they are sit
with each paper's gate below; the README (Claims) lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mechverify.theory.checks import check_real

GAP_FRACTION = 0.9        # closed_gap: share of the trivial -> target loss reduction a run must realise


@dataclass(frozen=True)
class Gate:
    """The verdict of one convergence gate: ``passed``, the ``rule`` in words, and the numbers."""

    passed: bool
    rule: str
    numbers: dict = field(default_factory=dict)

    def as_kwargs(self) -> dict:
        """Keyword arguments for ``record_claim.gate(passed, **numbers)``: the rule and the
        numbers, nested dicts and lists flattened to dotted keys (``runs.main.model``)."""
        flat = {"rule": self.rule}

        def put(prefix, value):
            if isinstance(value, dict):
                for k, v in value.items():
                    put(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(value, (list, tuple)):
                if all(isinstance(v, str) for v in value):
                    flat[prefix] = ",".join(value)
                else:
                    for i, v in enumerate(value):
                        put(f"{prefix}.{i}", v)
            else:
                flat[prefix] = value.item() if hasattr(value, "item") else value
        put("", self.numbers)
        return flat

    def __and__(self, other: "Gate") -> "Gate":
        """Both gates (e.g. every run a claim uses); numbers of each under their own keys."""
        if not isinstance(other, Gate):
            return NotImplemented
        return Gate(self.passed and other.passed, f"{self.rule}; {other.rule}",
                    {**self.numbers, **other.numbers})


def combine(gates: dict[str, Gate]) -> Gate:
    """One gate over several runs (all must pass); numbers keyed by run name."""
    if not gates:
        raise ValueError("gates must name at least one run")
    rules = sorted({g.rule for g in gates.values()})
    failed = [k for k, g in gates.items() if not g.passed]
    return Gate(not failed, "; ".join(rules),
                {"runs": {k: {"passed": g.passed, **g.numbers} for k, g in gates.items()}, "failed_runs": failed})


def closed_gap(model: float, trivial: float, target: float, *, fraction: float = GAP_FRACTION,
               names: tuple[str, str] = ("trivial", "target")) -> Gate:
    """``(trivial - model) >= fraction * (trivial - target)`` for losses (lower is better)."""
    model, trivial, target = (check_real(n, v) for n, v in (("model", model), ("trivial", trivial),
                                                             ("target", target)))
    fraction = check_real("fraction", fraction, positive=True)
    if not trivial > target:
        raise ValueError(f"trivial ({trivial}) must be a larger loss than target ({target})")
    closed = (trivial - model) / (trivial - target)
    return Gate(bool(closed >= fraction),
                f"held-out loss closes >= {fraction:g} of the gap {names[0]} -> {names[1]}",
                {"model": model, names[0]: trivial, names[1]: target, "closed_fraction": closed,
                 "required_fraction": fraction})


def at_most(model: np.ndarray, reference: np.ndarray, *, name: str = "reference", paired: bool = False) -> Gate:
    """Mean of the per-prompt losses ``model`` <= mean of ``reference`` + 2 SE of the difference
    (paired when both are measured on the same prompts)."""
    model, reference = np.asarray(model, dtype=float).ravel(), np.asarray(reference, dtype=float).ravel()
    if model.size < 2 or reference.size < 2:
        raise ValueError("model and reference need >= 2 per-prompt losses each")
    if paired:
        if model.shape != reference.shape:
            raise ValueError(f"paired losses need equal sizes; got {model.size} and {reference.size}")
        diff = model - reference
        se = float(diff.std(ddof=1) / math.sqrt(diff.size))
    else:
        se = math.hypot(model.std(ddof=1) / math.sqrt(model.size), reference.std(ddof=1) / math.sqrt(reference.size))
    excess = float(model.mean() - reference.mean())
    return Gate(bool(excess <= 2 * se), f"held-out loss <= {name}'s + 2 SE",
                {"model": float(model.mean()), name: float(reference.mean()), "excess": excess, "se": se})


# --- regression (GD-ICL Akyürek analogue, sparse regression) ----------------------------------

def aky_gate(risk: dict[str, float], target: str) -> Gate:
    """Akyürek analogue.  ``risk``: held-out query MSE of the model and of the references
    (:func:`mechverify.training.aky.compare_references`' ``risk``).  The run closes >= 90 % of the
    gap from the zero predictor (what an untrained model outputs) to ``target``: the Bayes
    predictor for the big models (OLS at sigma = 0, Bayes ridge at sigma > 0), one tuned GD step
    for the small one.  Which reference the model *matches* (the claim) is not looked at: a
    model that closes the gap may still match another algorithm."""
    if target not in risk or "zero" not in risk or "model" not in risk:
        raise ValueError(f"risk must hold 'model', 'zero' and {target!r}; got {sorted(risk)}")
    return closed_gap(risk["model"], risk["zero"], risk[target], names=("zero", target))


def sparse_gd_risks(config) -> np.ndarray:
    """Per-task excess risks of tuned GD on ``config``'s task (1000 tuning + 1000 test tasks, cached)."""
    from mechverify.theory.algorithms.tuning import SparseComparison
    from mechverify.training.sparse_regression import comparison
    cell = SparseComparison(config.d, config.s, config.n, config.noise, n_tasks=1000, methods=("gd",))
    return np.asarray(comparison(cell)["risks"]["gd"])


def sparse_gate(model, config) -> Gate:
    """Sparse regression: the model's held-out excess risk (4096 prompts) is at most tuned GD's
    (1000 tasks) + 2 SE.  GD is the baseline the paper's trained models beat and a 3-layer
    model can express GD steps; PtO (the mechanism under test) is not used."""
    from mechverify.training.sparse_regression import eval_prompts, excess_risks
    return at_most(excess_risks(model, eval_prompts(config), config.noise), sparse_gd_risks(config), name="tuned_gd")


# --- linear self-attention (GD-ICL, von Oswald et al., Zhang-Frei-Bartlett) ---------------------

def lsa_gate(model, batch, lr: float, steps: int) -> Gate:
    """A trained L-layer linear self-attention model: held-out query loss (paired, same prompts)
    at most that of ``steps`` steps of GD with the tuned step ``lr`` + 2 SE.  Every model class
    here contains that GD (von Oswald et al.'s construction), so a converged model is at least as
    good; *which* algorithm the model runs (the claims) is not looked at."""
    from mechverify.theory.algorithms.regression import gd_predict
    from mechverify.training.analysis import predict_np
    model_loss = (predict_np(model, batch.X, batch.y, batch.x_query) - batch.y_query) ** 2
    gd_loss = (gd_predict(batch.X, batch.y, batch.x_query, lr, steps) - batch.y_query) ** 2
    return at_most(model_loss, gd_loss, name=f"gd_{steps}_steps", paired=True)


# --- HMM mixture (Hao, Ye, Han, Zhang) ---------------------------------------------------------

HMM_DELTA = 0.05          # nats per token


def hmm_gate(icl: dict, delta: float = HMM_DELTA) -> Gate:
    """HMM mixture: for every number of demonstrations n, the model's mean held-out log-loss
    per test token is within ``delta`` = 0.05 nats of the exact Bayes mixture (the optimal
    predictor of the task; :func:`mechverify.training.hmm.icl_table`).  0.05 nats is 3-4 % of
    the Bayes loss (1.3-1.6 nats) and half of the quick model's gap when this gate was set (0.10
    nats at n = 4): a model that far from Bayes has not finished identifying the task."""
    delta = check_real("delta", delta, positive=True)
    gaps = {int(n): float(np.mean(rec["model"]["logloss_prompt"] - rec["bayes"]["logloss_prompt"]))
            for n, rec in sorted(icl.items())}
    return Gate(bool(max(gaps.values()) <= delta), f"log-loss within {delta:g} nats of the Bayes mixture at every n",
                {"gap_to_bayes": gaps, "worst_gap": max(gaps.values()), "delta": delta})


# --- staged Markov (minimal model) -------------------------------------------------------------

def markov_levels(task, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Loss levels of the staged-Markov task from the teachers themselves: ln d (uniform), then
    the exact cross-entropy of the truncated teachers A*_{1:k}, k = 1..h (k = h: the Bayes rate),
    on ``n`` sequences.  A truncated teacher is not the best k-block predictor (with orthogonal
    A* its CE can exceed ln d at k = 1), so only the last two levels make a gate; runs that
    have learned k-block baselines use those instead (:func:`markov_gate`)."""
    from mechverify.theory.tasks.markov import teacher_cross_entropy
    return np.array([math.log(task.d)] + [teacher_cross_entropy(task, n, seed, k=k)[0] for k in range(1, task.h + 1)])


MARKOV_FRACTION = 0.5     # markov_gate: the stage rule's midpoint (spec staged_markov.md §6.1)


def markov_gate(payload: dict, levels: np.ndarray, stage: int, *, fraction: float = MARKOV_FRACTION) -> Gate:
    """Staged Markov: the run's best validation CE closes >= half of the last drop before
    ``stage``, from level ``stage - 1`` to level ``stage``, i.e. it has *entered* that stage by
    the spec's stage rule (the midpoint between consecutive levels).  The Markov claims are
    about the stages (order, plateaus, timing) and need every stage time; sitting at the final
    level is not needed (at 0.9 the quick main run, 0.369 against levels 0.586 -> 0.304, closes
    0.77 of the last drop although it entered stage 3 at step ~1340).  ``levels``: ln d, then the best
    validation CE of the learned 1-, 2-, ... block baselines
    (:func:`mechverify.training.markov.plateau_ce_levels`), or, for runs without baselines,
    :func:`markov_levels` (used at stage h only).  ``stage = h``: the run reached the full
    model's loss, i.e. it has learned every block; the symmetric run (identical heads) is gated
    at stage 1.  Losses only: neither attention nor timing (the claims) is looked at."""
    levels = np.asarray(levels, dtype=float)
    if not 1 <= stage < levels.size:
        raise ValueError(f"stage must be in 1..{levels.size - 1}; got {stage}")
    best = float(payload["val"].min())
    return closed_gap(best, float(levels[stage - 1]), float(levels[stage]), fraction=fraction,
                      names=(f"ce_{stage - 1}" if stage > 1 else "ln_d", f"ce_{stage}"))


def early_stopping_gate(payload: dict) -> Gate:
    """A fixed-data run used at its best validation step: the run went on past that step (its
    best logged validation CE is not at the last logged step), so the best step is a real
    early-stopping point and not the end of a run that was still improving."""
    steps = payload["log_steps"].numpy() if hasattr(payload["log_steps"], "numpy") else np.asarray(payload["log_steps"])
    best, last = int(payload["best_step"]), int(steps[-1])
    return Gate(best < last, "best validation step before the last logged step", {"best_step": best, "last_step": last})


# --- meta-learning norms (Wu & Varshney) -------------------------------------------------------

def metanorm_gate(config, model_loss: np.ndarray, tokens: np.ndarray) -> Gate:
    """Small causal LM.  ``model_loss``: (B, T) held-out next-token losses of ``tokens``.
    Zipf-Markov corpus: the held-out loss closes >= 90 % of the gap from the unigram entropy
    (a predictor without context) to the entropy rate (the Bayes predictor).  Character text
    (no Bayes predictor): at most the loss of a bigram count model of the training text
    (add-1/2 smoothing) + 2 SE, paired over the same held-out sequences; a two-layer model with
    a 64-token context contains the bigram predictor."""
    from mechverify.training.meta_learning import _text, zipf_chain
    model_loss = np.asarray(model_loss, dtype=float)
    if config.corpus == "zipf":
        chain = zipf_chain(config)
        return closed_gap(float(model_loss.mean()), chain.unigram_entropy(), chain.entropy_rate(),
                          names=("unigram_entropy", "entropy_rate"))
    train, _, _ = _text(config.vocab)
    counts = np.full((config.vocab, config.vocab), 0.5)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    bigram = -logp[tokens[:, :-1], tokens[:, 1:]]
    return at_most(model_loss.mean(axis=1), bigram.mean(axis=1), name="bigram", paired=True)


# --- topic structure (Li, Li, Risteski) --------------------------------------------------------

def fit_gate(train_loss, rel_tol: float = 1e-5) -> Gate:
    """An L-BFGS fit on exact sufficient statistics (a smooth loss, the optimum of the model
    class on that data is the target): the last two logged losses differ by <= ``rel_tol``
    relative, i.e. the fit has stopped moving.  Whether the optimum has the structure the claim
    describes is not looked at."""
    losses = np.asarray(train_loss, dtype=float)
    if losses.size < 2:
        raise ValueError("train_loss needs >= 2 logged values")
    change = float(abs(losses[-1] - losses[-2]) / max(abs(losses[-1]), np.finfo(float).tiny))
    return Gate(bool(change <= rel_tol), f"fit stationary (last relative loss change <= {rel_tol:g})",
                {"final_loss": float(losses[-1]), "last_relative_change": change})


def plateau_gate(losses, window: float = 0.1, rel_tol: float = 0.01) -> Gate:
    """A stochastic run with no optimal predictor to compare with (real text): the training
    loss has stopped falling, i.e. the mean of the last ``window`` share of the logged losses
    is within ``rel_tol`` (relative) of the mean of the share before it."""
    losses = np.asarray(losses, dtype=float)
    losses = losses[np.isfinite(losses)]
    k = max(1, int(round(window * losses.size)))
    if losses.size < 2 * k:
        raise ValueError(f"losses needs >= {2 * k} finite logged values; got {losses.size}")
    last, before = float(losses[-k:].mean()), float(losses[-2 * k:-k].mean())
    drop = (before - last) / abs(before)
    return Gate(bool(drop <= rel_tol), f"training loss stationary (last {window:g} of logs within {rel_tol:g} of the one before)",
                {"last_window_loss": last, "previous_window_loss": before, "relative_drop": drop})
