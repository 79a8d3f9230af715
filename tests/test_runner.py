"""The runner: interrupted and extended runs end with the same bytes as uninterrupted ones,
the learning-rate rule for extensions, ``trained`` returns frozen eval-mode models, and
``recompute`` retrains a run (and the runs it trains inside) once per process."""

import dataclasses

import numpy as np
import pytest
import torch

import mechverify.training.gd_icl as gd_icl
import mechverify.training.markov as markov
from mechverify.theory.tasks.markov import MarkovTask
from mechverify.training import runner
from mechverify.training.gd_icl import LSATrainConfig, train_lsa
from mechverify.training.markov import MarkovTrainConfig, train_markov
from mechverify.training.runner import Resume, checkpoints, optimise, trained


class Killed(Exception):
    pass


def _equal(a: dict, b: dict) -> bool:
    """Payloads equal bit for bit (tensors, nested dicts, numbers)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            if not _equal(x, y):
                return False
        elif isinstance(x, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or x.numpy().tobytes() != y.numpy().tobytes():
                return False
        elif x != y:
            return False
    return True


def _seen_steps(monkeypatch, module, kill_at=None):
    """Record the steps whose data a run samples (through the module's step_seed); raise
    Killed at step ``kill_at``."""
    seen, real = [], runner.step_seed

    def spy(seed, step):
        if step == kill_at:
            raise Killed(step)
        seen.append(step)
        return real(seed, step)

    monkeypatch.setattr(module, "step_seed", spy)
    return seen


RUNS = {
    "lsa-full": (gd_icl, train_lsa, LSATrainConfig(d=3, n=5, steps=40, batch=16, log_every=5)),
    "lsa-zfb": (gd_icl, train_lsa, LSATrainConfig(d=3, n=5, steps=40, batch=16, lr=0.02, optimizer="sgd",
                                                  parametrization="zfb", init_scale=0.1, dtype="float64",
                                                  log_every=5)),
    "markov-online": (markov, train_markov, MarkovTrainConfig(task=MarkovTask(d=4, L=3), n_train=None, batch=8,
                                                              n_val=8, steps=30, log_every=3, patience=1,
                                                              lr=0.05)),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, monkeypatch, name):
    module, train, config = RUNS[name]
    monkeypatch.setattr(runner, "CHECKPOINT_EVERY", 7)          # not a multiple of log_every
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path / "straight"))
    straight = train(config, progress=False)

    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path / "killed"))
    _seen_steps(monkeypatch, module, kill_at=23)
    with pytest.raises(Killed):
        train(config, progress=False)
    folder = Resume(config, None).folder()
    assert [s for s, _, _ in checkpoints(folder)] == [21]
    seen = _seen_steps(monkeypatch, module)
    resumed = train(config, progress=False)
    assert seen[0] == 22 and seen[-1] == config.steps                  # steps 1..21 were not redone
    assert _equal(straight, resumed)
    assert [(s, final) for s, final, _ in checkpoints(folder)] == [(config.steps, True)]


def test_extension_equals_a_direct_run(tmp_path, monkeypatch):
    """steps 20 -> 40 from the 20-step run's final checkpoint = a direct 40-step run."""
    config = RUNS["lsa-full"][2]
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path / "direct"))
    direct = train_lsa(config, progress=False)
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path / "extended"))
    train_lsa(dataclasses.replace(config, steps=20), progress=False)
    seen = _seen_steps(monkeypatch, gd_icl)
    extended = train_lsa(config, progress=False)
    assert seen == list(range(21, 41))
    assert _equal(direct, extended)


@dataclasses.dataclass(frozen=True)
class Toy:
    steps: int = 10


def _toy_run(tmp_path, steps, *, lr_in_loss=None, schedule=None):
    """A linear model fitted by SGD through optimise with checkpoints; returns the steps run."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ran = []

    def step_loss(step):
        ran.append(step)
        if lr_in_loss is not None:
            opt.param_groups[0]["lr"] = lr_in_loss(step, steps)
        x = torch.full((4, 2), 0.1 * (step % 3))
        return ((model(x) - 1.0) ** 2).mean()

    optimise(opt, step_loss, steps=steps, log_every=5, desc="toy", progress=False, lr=0.1, schedule=schedule,
             resume=Resume(Toy(steps), model, directory=tmp_path))
    return ran


def test_extension_rule_for_learning_rate_schedules(tmp_path):
    """Constant lr, or a schedule= that agrees on the steps taken, extends; a schedule over the
    budget (cosine to 0 at ``steps``), given as schedule= or set inside step_loss, starts over."""
    assert _toy_run(tmp_path / "a", 10) == list(range(1, 11))
    assert _toy_run(tmp_path / "a", 20) == list(range(11, 21))
    warmup = lambda t: 0.01 * min(1.0, t / 5)                       # does not depend on the budget
    assert _toy_run(tmp_path / "b", 10, schedule=warmup)[0] == 1
    assert _toy_run(tmp_path / "b", 20, schedule=warmup)[0] == 11
    for steps in (10, 20):
        cosine = lambda t, s=steps: 0.005 * (1 + np.cos(np.pi * t / s))
        assert _toy_run(tmp_path / "c", steps, schedule=cosine)[0] == 1
    in_loss = lambda t, s: 0.005 * (1 + np.cos(np.pi * t / s))
    assert _toy_run(tmp_path / "d", 10, lr_in_loss=in_loss)[0] == 1
    assert _toy_run(tmp_path / "d", 20, lr_in_loss=in_loss)[0] == 1


def test_trained_returns_frozen_eval_models_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path))
    config = dataclasses.replace(RUNS["lsa-full"][2], steps=4)
    model, payload = trained(config, progress=False)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    again, payload2 = trained(config, progress=False)
    assert _equal(payload, payload2)
    with pytest.raises(TypeError, match="config"):
        trained(Toy())


def test_recompute_trains_once_per_process(tmp_path, monkeypatch):
    """With recompute, a cached run (and a baseline it trains inside, shared by two runs) retrains once."""
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path))
    monkeypatch.setattr(runner, "_RETRAINED", set())
    calls = []
    entry = runner._REGISTRY[MarkovTrainConfig]
    monkeypatch.setitem(runner._REGISTRY, MarkovTrainConfig, dataclasses.replace(
        entry, train=lambda c, *a, **k: calls.append(c) or entry.train(c, *a, **k)))
    c = MarkovTrainConfig(task=MarkovTask(d=4, L=3), n_train=16, n_val=8, steps=2, log_every=1, baselines=(1,),
                          baseline_steps=2)
    trained(c, progress=False)                                   # cached first: recompute must not reuse it
    for _ in range(2):
        trained(c, recompute=True, progress=False)
    trained(dataclasses.replace(c, n_train=8), recompute=True, progress=False)
    assert calls.count(c) == 2 and calls.count(c.baseline(1)) == 2


def test_a_finished_run_continues_from_its_final_checkpoint(tmp_path, monkeypatch):
    """Asked again for the same budget without a cache entry (``train`` bypasses it), a finished
    run continues from its final checkpoint: no step is redone and the bytes are the same."""
    module, train, config = RUNS["lsa-full"]
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path))
    first = train(config, progress=False)
    seen = _seen_steps(monkeypatch, module)
    again = train(config, progress=False)
    assert seen == [] and _equal(first, again)


def test_a_loss_that_turns_nan_midway_is_divergence():
    """The divergence check looks at every logged loss, not only the last or the first."""
    w = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([w], lr=0.1)

    def step_loss(step):
        return (w * (float("nan") if step == 3 else 1.0)).sum()

    with pytest.raises(FloatingPointError, match="diverged"):
        optimise(opt, step_loss, steps=4, log_every=1, desc="toy", progress=False, lr=0.1)
