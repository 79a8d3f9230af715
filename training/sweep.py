"""``python -m mechverify.training.sweep``: many seeds x settings of the named training runs, dispatched
by :func:`mechverify.training.executor.train_many` (local process pool by default, or Ray) and
gathered into the cache, where the claims (``pytest verify/ --scale paper``) and the
figures (``python -m mechverify.paper_figures --full``) then find them.

    python -m mechverify.training.sweep --list
    python -m mechverify.training.sweep sparse_regression/head_count --scale paper --seeds 5
    python -m mechverify.training.sweep gd_icl/vo --seeds 3 --executor ray --ray-address auto
    python -m mechverify.training.sweep hmm markov               # every sweep of these papers

Each sweep is a function ``(scale, seeds, device) -> (configs, train)``; seed 0 of a sweep is
the run the claims use, further seeds are replicates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from functools import partial

from mechverify.papers import MODULES
from mechverify.training.executor import EXECUTORS, train_many
from mechverify.training.hmm import hmm_configs, train_hmm
from mechverify.training.loop import train_lsa
from mechverify.training.markov import markov_runs, train_markov
from mechverify.training.meta_learning import metanorm_configs, train_metanorm
from mechverify.training.presets import SCALES, vo_config, zfb_config
from mechverify.training.sparse_regression import head_count_configs, train_sparse
from mechverify.training.topics import topic_configs, train_two_stage


def _seeded(configs, seeds):
    return [dataclasses.replace(c, seed=s) for c in configs for s in seeds]


def _vo(scale, seeds, device):
    return ([vo_config(L, scale, s) for L in (1, 2, 3) for s in seeds],
            partial(train_lsa, progress=False, device=device))


def _zfb(scale, seeds, device):
    return [zfb_config(scale, s) for s in seeds], partial(train_lsa, progress=False, device=device)


def _head_count(scale, seeds, device):
    return _seeded(head_count_configs(scale).values(), seeds), partial(train_sparse, progress=False, device=device)


def _hmm(scale, seeds, device):
    return _seeded([hmm_configs(scale)], seeds), partial(train_hmm, progress=False, device=device)


def _markov(scale, seeds, device):
    runs = list(dict.fromkeys(markov_runs(scale).values()))          # "online" is "main"
    return _seeded(runs, seeds), partial(train_markov, progress=False, device=device)


def _metanorm(scale, seeds, device):
    return _seeded(metanorm_configs(scale).values(), seeds), partial(train_metanorm, progress=False, device=device)


def _two_stage(scale, seeds, device):
    configs = [dataclasses.replace(c, setting=dataclasses.replace(c.setting, seed=s))
               for c in topic_configs(scale)["two_stage"].values() for s in seeds]
    return configs, partial(train_two_stage, progress=False, device=device)


SWEEPS = {
    "gd_icl/vo": (_vo, "von Oswald setup, 1-3 layers"),
    "gd_icl/zfb": (_zfb, "Zhang-Frei-Bartlett SGD run"),
    "sparse_regression/head_count": (_head_count, "sparse regression, h in {1, 2, 4, 8}"),
    "hmm/mixture": (_hmm, "GPT on mixture-of-HMM prompts"),
    "markov/runs": (_markov, "minimal-model runs: stages, ablations, data sizes (learned baselines train "
                             "inside each run, into the worker's cache)"),
    "meta_learning/runs": (_metanorm, "causal GPTs on Zipf and pydoc_data text, LayerNorm/RMSNorm"),
    "topics/two_stage": (_two_stage, "one-layer MLM from three init scales"),
}


def _expand(targets):
    """Sweep names; a paper module name (``mechverify.papers``) stands for all its sweeps."""
    names = []
    for t in targets:
        names += [n for n in SWEEPS if n.split("/", 1)[0] == t] if t in MODULES else [t]
    return list(dict.fromkeys(names))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechverify.training.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="*", help="sweep names (see --list) or paper modules (all their sweeps)")
    parser.add_argument("--list", action="store_true", help="list the sweeps and exit")
    parser.add_argument("--scale", choices=SCALES, default="paper", help="run size (default: paper)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1 of every setting (default 1)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local", help="default: local process pool")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: CPU count)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--device", default="cpu", help="torch device inside each run (cpu, cuda, ...)")
    parser.add_argument("--recompute", action="store_true", help="train again even when cached")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, doc) in SWEEPS.items():
            print(f"{name:<32} {doc}")
        return 0
    if not args.sweeps:
        parser.error("name at least one sweep (see --list)")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1; got {args.seeds}")
    for name in _expand(args.sweeps):
        if name not in SWEEPS:
            parser.error(f"unknown sweep {name!r}; see --list")
        configs, train = SWEEPS[name][0](args.scale, range(args.seeds), args.device)
        start = time.perf_counter()
        train_many(configs, train, executor=args.executor, max_workers=args.workers, threads=args.threads,
                   recompute=args.recompute, ray_address=args.ray_address)
        print(f"{name}: {len(configs)} runs in the cache ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
