"""Learning-rate schedules of the training runs: linear warmup, then constant or cosine decay.

A config that uses them has the fields ``lr`` (peak step size), ``steps``, ``warmup`` (steps of
linear warmup) and ``decay`` (one of :data:`DECAYS`); it calls :func:`check_schedule` in its
``__post_init__`` and hands ``lambda step: learning_rate(config, step)`` to
:func:`mechverify.training.runner.optimise` as its ``schedule``."""

from __future__ import annotations

import math

from mechverify.theory.checks import check_int

DECAYS = ("constant", "cosine")


def check_schedule(config) -> None:
    """Reject a malformed ``warmup`` or ``decay`` of ``config``, naming the field."""
    check_int("warmup", config.warmup, minimum=0)
    if config.warmup >= config.steps:
        raise ValueError(f"warmup must be < steps = {config.steps}; got {config.warmup}")
    if config.decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}; got {config.decay!r}")


def learning_rate(config, step: int) -> float:
    """The step size of training step ``step`` (1..steps): linear warmup from lr / warmup to lr
    over the first ``warmup`` steps, then constant or cosine decay to 0 at the last step."""
    step = check_int("step", step)
    if step <= config.warmup:
        return config.lr * step / config.warmup
    if config.decay == "constant":
        return config.lr
    progress = (step - config.warmup) / (config.steps - config.warmup)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))
