"""Run many independent training runs (seeds x settings) and gather them into the cache.

    payloads = train_many(configs, partial(train_sparse, progress=False))             # local pool
    payloads = train_many(configs, partial(train_sparse, progress=False), executor="ray")

Every config is one run; runs already in the cache are not dispatched.  Executors:

* ``"local"`` (default): a process pool on this machine (``spawn`` start, each worker with
  ``threads`` torch threads);
* ``"serial"``: in this process, one after another;
* ``"ray"``: Ray tasks (optional extra ``mechverify[cluster]``).  Connects to the cluster at
  ``ray_address`` (e.g. ``"auto"`` on a cluster node) or starts a local Ray instance.

Workers return the payload by value (Ray's object store or the pool's pipe) and the driver
writes it into its own cache, so the cluster needs no shared file system.  The training
function must be picklable (a module-level function, or a ``functools.partial`` of one) and
deterministic given its config, so where a run trained does not change its bytes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mechverify.theory.checks import check_int
from mechverify.training.cache import lookup, store

EXECUTORS = ("local", "serial", "ray")


def _run_one(train: Callable, config, threads: int):
    torch.set_num_threads(threads)
    return train(config)


def train_many(configs: Sequence, train: Callable, *, executor: str = "local", max_workers: int | None = None,
               threads: int = 1, recompute: bool = False, progress: bool = True, directory: Path | None = None,
               ray_address: str | None = None, device: str = "cpu") -> list:
    """The payloads of ``configs`` (same order), training the missing ones with ``train(config)``
    on ``executor``; ``max_workers`` defaults to the number of CPUs.  ``device`` is the device
    ``train`` trains on (part of the cache key)."""
    configs = list(configs)
    if not configs:
        raise ValueError("configs must hold at least one config")
    for i, c in enumerate(configs):
        if not dataclasses.is_dataclass(c) or isinstance(c, type):
            raise TypeError(f"configs[{i}] must be a config dataclass instance; got {type(c).__name__}")
    if not callable(train):
        raise TypeError(f"train must be callable; got {type(train).__name__}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
    workers = check_int("max_workers", max_workers if max_workers is not None else (os.cpu_count() or 1))
    threads = check_int("threads", threads)

    payloads = {i: None if recompute else lookup(c, directory, device) for i, c in enumerate(configs)}
    todo = {}                                     # one run per distinct config
    for i, c in enumerate(configs):
        if payloads[i] is None:
            todo.setdefault(c, []).append(i)
    bar = tqdm(total=len(todo), desc=f"runs ({executor})", disable=not progress or not todo)

    def gather(config, payload):
        store(config, payload, directory, device)
        for i in todo[config]:
            payloads[i] = payload
        bar.update()

    if executor == "serial":
        for c in todo:
            gather(c, _run_one(train, c, threads))
    elif executor == "local":
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, train, c, threads): c for c in todo}
            for f in as_completed(futures):
                gather(futures[f], f.result())
    else:
        _run_on_ray(todo, train, threads, workers, ray_address, gather)
    bar.close()
    return [payloads[i] for i in range(len(configs))]


def _run_on_ray(todo: dict, train: Callable, threads: int, workers: int, address: str | None, gather) -> None:
    try:
        import ray
    except ImportError as err:
        raise ImportError("executor='ray' needs the optional extra: pip install 'mechverify[cluster]'") from err
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    remote = ray.remote(num_cpus=threads)(_run_one)
    pending = {remote.remote(train, c, threads): c for c in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            gather(pending.pop(ref), ray.get(ref))
