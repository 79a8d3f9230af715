"""The paper-neutral runner: the training loop, step seeds, checkpoints, the cache, and
:func:`trained`, the one way a claim, a figure or the bench gets a trained model.

    model, payload = trained(runs("quick")["vo_1"])          # from a paper's catalogue

A paper module registers each of its config classes once::

    register(LSATrainConfig, train=train_lsa, build=build_model)

``train(config, progress, device)`` returns the payload (plain tensors, numbers, lists;
``payload["state"]`` is the model's state dict) and runs its steps through :func:`optimise`;
``build(config)`` gives the untrained model, into which :func:`trained` loads the state (or
``load(config, payload)`` gives the trained model directly, for fits whose model is built
from the payload).  :func:`trained` returns the model on the CPU, in eval mode, with
``requires_grad`` off.

**Checkpoints and resumption.**  When a trainer passes ``resume=Resume(config, model, device,
...)`` to :func:`optimise`, the loop writes a checkpoint into the cache every
``checkpoint_every`` steps and at the end of the run (model, optimiser, schedulers, the logs
so far, the loss window, the torch RNG state and the step; atomic and checksummed like an
entry).  Its key is the run's key *without* ``steps``, so

* an interrupted run restarts from its last checkpoint;
* a run asked for more steps than a cached one continues from the shorter run's final
  checkpoint;

and either way ends with the same bytes as an uninterrupted run (``tests/test_runner.py``).
The rule for learning-rate schedules: an interrupted run always resumes (same budget, same
schedule).  An *extension* (a checkpoint written under a smaller ``steps``) is used only when
the step sizes of the steps already taken are the new run's too: the learning rate was
constant, or changed only by schedulers that look at the past (ReduceLROnPlateau, checkpointed
with ``schedulers=``), or it came from ``schedule=`` (``schedule(step)`` -> step size of every
parameter group) and the new run's schedule gives the same values at steps 1..s.  A run that
sets the learning rate inside ``step_loss`` (the loop sees it change there) never extends: a
warmup or decay over the budget would otherwise mix two schedules.  ``recompute`` ignores
checkpoints as well as entries.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib
import os
import pkgutil
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mechverify.training.cache import cache_dir, cached, code_digest, config_hash, device_kind, encode, read_entry, write_atomic

CHECKPOINT_EVERY = 500          # steps between checkpoints (and one at the end of every run)
BUDGET_FIELD = "steps"          # the config field left out of the checkpoint key


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of training step ``step`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def cpu_state(model: torch.nn.Module) -> dict:
    """The model's state dict as detached CPU copies (a cache payload)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


# --- checkpoints ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Resume:
    """What a trainer hands to :func:`optimise` so the run can checkpoint and resume: the
    run's config and device (the checkpoint key), its model, ``logs`` (a dict of lists that
    ``on_log`` appends to; restored in place), ``schedulers`` (objects with ``state_dict`` /
    ``load_state_dict``), and ``directory`` (default: the cache folder)."""

    config: object
    model: torch.nn.Module
    device: str | torch.device = "cpu"
    logs: dict | None = None
    schedulers: Sequence = ()
    directory: Path | None = None

    def folder(self) -> Path:
        key = config_hash(self.config, self.device, omit=(BUDGET_FIELD,))
        return Path(self.directory or cache_dir()) / "checkpoints" / f"{type(self.config).__name__}-{key}"


_STEP_FILE = re.compile(r"step-(\d{9})(-final)?\.pt$")


def checkpoints(folder: Path) -> list[tuple[int, bool, Path]]:
    """(step, final, path) of the checkpoints in ``folder``, by step."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), bool(m.group(2)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def _plain(x):
    """A checkpoint payload that loads with weights_only: numpy arrays become tagged tensors,
    numpy scalars Python numbers."""
    if isinstance(x, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(x))}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _unplain(x):
    if isinstance(x, dict):
        return x["__ndarray__"].numpy() if set(x) == {"__ndarray__"} else {k: _unplain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_unplain(v) for v in x)
    return x


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


_FRESH = contextvars.ContextVar("mechverify_fresh", default=False)     # set while recomputing


# --- the loop ------------------------------------------------------------------------------------

def optimise(opt, step_loss, *, steps: int, log_every: int, desc: str, progress: bool, lr: float,
             after_backward=None, on_log=None, resume: Resume | None = None, schedule=None,
             checkpoint_every: int | None = None) -> tuple[list[int], list[float]]:
    """Run optimiser steps 1..``steps`` (``step_loss(step)`` -> loss tensor) with a progress bar;
    ``after_backward()`` runs between backward and the update, ``on_log()`` at every logged step.
    ``schedule(step)``, if given, sets every parameter group's step size at each step.  With ``resume`` the run checkpoints and continues from its last usable
    checkpoint (module doc).  Returns (logged steps, mean loss since the previous log); raises
    FloatingPointError when a logged loss is not finite (``lr`` names the step size in it)."""
    every = CHECKPOINT_EVERY if checkpoint_every is None else int(checkpoint_every)
    if every < 1:
        raise ValueError(f"checkpoint_every must be >= 1; got {checkpoint_every}")
    lrs: list[float] = []                   # schedule(step) at steps 1.., when scheduled
    lr_in_loss = False                      # did step_loss ever change a step size?
    log_steps, losses, window, start = [], [], [], 0
    device = torch.device(resume.device) if resume is not None else None
    folder = resume.folder() if resume is not None else None
    if resume is not None and not _FRESH.get():
        state = _usable_checkpoint(folder, steps, schedule)
        if state is not None:
            start = _restore(state, opt, resume, device)
            log_steps, losses, window = list(state["log_steps"]), list(state["losses"]), list(state["window"])
            lrs, lr_in_loss = list(state["lrs"]), bool(state["lr_in_loss"])
    written: list[Path] = []

    def save(step: int, final: bool):
        payload = {"step": step, "model": cpu_state(resume.model), "optimizer": _plain(opt.state_dict()),
                   "schedulers": [s.state_dict() for s in resume.schedulers], "budget": steps,
                   "logs": _plain(resume.logs or {}), "log_steps": _plain(log_steps), "losses": losses, "window": window,
                   "lrs": lrs, "lr_in_loss": lr_in_loss, "rng": _rng_state(device)}
        payload["schedulers"] = _plain(payload["schedulers"])
        path = folder / f"step-{step:09d}{'-final' if final else ''}.pt"
        write_atomic(path, encode(payload))
        for old in written:                       # this session keeps only its newest checkpoint
            old.unlink(missing_ok=True)
        written[:] = [path]
        if final:                                 # an end of run: earlier partial checkpoints are spent
            written.clear()
            for s, fin, p in checkpoints(folder):
                if s < step and not fin:
                    p.unlink(missing_ok=True)

    bar = tqdm(range(start + 1, steps + 1), desc=desc, initial=start, total=steps,
               disable=None if progress else True, leave=False)
    if start:
        bar.set_postfix(resumed=start)
    for step in bar:
        if schedule is not None:
            lrs.append(float(schedule(step)))
            for g in opt.param_groups:
                g["lr"] = lrs[-1]
        before = [g["lr"] for g in opt.param_groups]
        loss = step_loss(step)
        lr_in_loss = lr_in_loss or before != [g["lr"] for g in opt.param_groups]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        window.append(loss.item())
        if step % log_every == 0 or step == steps:
            log_steps.append(step)
            losses.append(float(np.mean(window)))
            window = []
            if on_log is not None:
                on_log()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if resume is not None and step % every == 0 and step != steps:
            save(step, final=False)
    if resume is not None and start < steps:
        save(steps, final=True)
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"training diverged (loss {losses[-1]}); lower lr (now {lr})")
    return log_steps, losses


def _usable_checkpoint(folder: Path, steps: int, schedule):
    """The state of the newest checkpoint at a step <= ``steps`` that this run may continue
    from (module doc: same budget, or step sizes that agree on the steps taken)."""
    for step, _, path in reversed(checkpoints(folder)):
        if step > steps:
            continue
        state = read_entry(path)
        if state is None:
            continue
        if state["budget"] == steps:
            return state
        if state["lr_in_loss"]:
            continue
        lrs = list(state["lrs"])
        if schedule is None and not lrs:
            return state
        if schedule is not None and len(lrs) == step and all(float(schedule(t)) == v for t, v in enumerate(lrs, 1)):
            return state
    return None


def _restore(state: dict, opt, resume: Resume, device: torch.device) -> int:
    resume.model.load_state_dict(state["model"])
    opt.load_state_dict(_unplain(state["optimizer"]))
    if len(state["schedulers"]) != len(resume.schedulers):
        raise ValueError("checkpoint and run disagree on the number of schedulers")
    for s, s_state in zip(resume.schedulers, state["schedulers"]):
        s.load_state_dict(_unplain(s_state))
    if resume.logs is not None:
        for k, v in _unplain(state["logs"]).items():
            resume.logs[k][:] = v
    _set_rng_state(state["rng"], device)
    return int(state["step"])


# --- registry and trained ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Trainer:
    train: Callable
    build: Callable | None
    load: Callable | None
    cpu_only: bool


_REGISTRY: dict[type, _Trainer] = {}
_RETRAINED: set = set()          # (config, device) retrained in this process under recompute


def register(config_class: type, *, train: Callable, build: Callable | None = None,
             load: Callable | None = None, cpu_only: bool = False) -> None:
    """Tell the runner how to train and rebuild the runs of ``config_class``: ``train(config,
    progress, device)`` -> payload (``train(config, progress)`` when ``cpu_only``), and either
    ``build(config)`` (the untrained model; the payload's ``state`` is loaded into it) or
    ``load(config, payload)`` (the trained model)."""
    if not isinstance(config_class, type) or not dataclasses.is_dataclass(config_class):
        raise TypeError(f"config_class must be a dataclass; got {config_class!r}")
    if not callable(train):
        raise TypeError(f"train must be callable; got {type(train).__name__}")
    if (build is None) == (load is None):
        raise ValueError("give exactly one of build and load")
    _REGISTRY[config_class] = _Trainer(train, build, load, cpu_only)


def trainer(config) -> _Trainer:
    try:
        return _REGISTRY[type(config)]
    except KeyError:
        raise TypeError(f"config must be a registered run config; got {type(config).__name__}") from None


def train(config, *, progress: bool = True, device: str | torch.device = "cpu") -> dict:
    """Train ``config`` now (no cache lookup; checkpoints are used) and return its payload."""
    t = trainer(config)
    return t.train(config, progress) if t.cpu_only else t.train(config, progress, device)


def trained(config, *, recompute: bool = False, progress: bool = True, device: str | torch.device = "cpu"):
    """(model, payload) of the run ``config``, trained once on ``device`` and then served from
    the cache.  The model is on the CPU, in eval mode, with ``requires_grad`` off.
    ``recompute`` trains again, ignoring entries and checkpoints, at most once per process for a
    given run (runs trained inside this one, e.g. baselines, are recomputed too)."""
    t = trainer(config)
    device = "cpu" if t.cpu_only else device
    key = (config, device_kind(device))
    recompute = (recompute or _FRESH.get()) and key not in _RETRAINED

    def compute():
        token = _FRESH.set(recompute)
        try:
            return train(config, progress=progress, device=device)
        finally:
            _FRESH.reset(token)

    start, computed = time.perf_counter(), []
    payload = cached(config, lambda: computed.append(True) or compute(), recompute=recompute, device=device)
    RUN_LOG.append({"class": f"{type(config).__module__}:{type(config).__qualname__}",
                     "fields": dataclasses.asdict(config), "hash": config_hash(config, device),
                     "code_digest": code_digest(type(config)), "device": device_kind(device), "torch": torch.__version__,
                     "trained": bool(computed), "wall_s": round(time.perf_counter() - start, 3)})
    if recompute:
        _RETRAINED.add(key)
    if t.load is not None:
        model = t.load(config, payload)
    else:
        model = t.build(config)
        model.load_state_dict(payload["state"])
    return model.eval().requires_grad_(False), payload


TRAIN_SEED_ENV = "MECHVERIFY_TRAIN_SEED"
RUN_LOG: list[dict] = []        # every run served by trained(): config, hash, code digest, wall time


def train_seed() -> int:
    """The training-seed index ``k`` from ``$MECHVERIFY_TRAIN_SEED`` (0 when unset); the claim
    harness sets it from ``--train-seed``."""
    raw = os.environ.get(TRAIN_SEED_ENV, "0")
    if not raw.isdigit():
        raise ValueError(f"{TRAIN_SEED_ENV} must be a non-negative integer; got {raw!r}")
    return int(raw)


CATALOGUES: dict[str, Callable] = {}     # module name -> its undecorated runs(scale)


def catalogue(runs_fn):
    """Decorator of a paper's ``runs(scale)``: every run moved to this session's training seed
    (:func:`with_train_seed`), so a claim evaluates exactly the configs that were trained (a run
    whose task is drawn from its seed, e.g. meta_learning's Zipf chain, is measured on its own task).

    A catalogue only builds configs (it is left out of the cache key's code digest, the
    configs' fields are in it); it is registered in :data:`CATALOGUES` for
    :func:`catalogue_runs`."""
    CATALOGUES[runs_fn.__module__] = runs_fn

    @functools.wraps(runs_fn)
    def runs(scale: str = "quick") -> dict:
        return {name: with_train_seed(config) for name, config in runs_fn(scale).items()}
    return runs


def catalogue_runs(scale: str, seed: int) -> list:
    """Every config that a run catalogue of the package lists at ``scale`` for training seed
    ``seed`` (index k of ``--train-seed``), with the runs that training them requests (a
    config's ``sub_runs()``, e.g. the Markov learned baselines).  Imports every module of
    :mod:`mechverify.training` so that all catalogues are registered."""
    check_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    import mechverify.training as package
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    out = []
    for runs_fn in CATALOGUES.values():
        for config in runs_fn(scale).values():
            config = _moved(config, 1000 * seed) if seed else config
            out += [config, *getattr(config, "sub_runs", tuple)()]
    return out


def with_train_seed(config):
    """``config`` for training seed ``k`` (:func:`train_seed`): every ``seed`` field moved by
    1000 k, its own and those of the dataclasses it holds (the topics runs keep their data seed in
    their ``setting``), so seed 0 is the catalogue's run itself and seeds 1, 2, ... are
    independent repetitions of it (initialisation and data stream)."""
    k = train_seed()
    return _moved(config, 1000 * k) if k else config


def _moved(config, shift: int):
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "seed":
            changes["seed"] = value + shift
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = _moved(value, shift)
    return dataclasses.replace(config, **changes) if changes else config


def check_scale(scale: str) -> str:
    """``scale`` of a catalogue: "quick" (the CPU setting of ``make test``) or "paper"."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    return scale


SCALES = ("quick", "paper")
