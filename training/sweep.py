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
import importlib
import sys
import time
from functools import partial

from mechverify.papers import MODULES

# torch and the run catalogues are imported only when a sweep runs: --list answers without them.


def _pick(module, *prefixes):
    """A sweep over the runs of the catalogue ``mechverify.training.<module>`` whose names start
    with one of ``prefixes`` (all runs when none is given), with seed s of each run as replicate s."""
    def sweep(scale, seeds, device):
        from mechverify.training.runner import train

        catalogue = importlib.import_module(f"mechverify.training.{module}")
        runs = [c for name, c in catalogue.runs(scale).items() if not prefixes or name.startswith(prefixes)]
        runs = list(dict.fromkeys(runs))                       # one run under two names trains once
        configs = [_with_seed(c, s) for c in runs for s in seeds]
        return configs, partial(train, progress=False, device=device)
    return sweep


def _with_seed(config, seed):
    if hasattr(config, "seed"):
        return dataclasses.replace(config, seed=seed)
    return dataclasses.replace(config, setting=dataclasses.replace(config.setting, seed=seed))


SWEEPS = {
    "gd_icl/vo": (_pick("gd_icl", "vo_"), "von Oswald setup, 1-3 layers"),
    "gd_icl/zfb": (_pick("gd_icl", "zfb"), "Zhang-Frei-Bartlett SGD run"),
    "sparse_regression/head_count": (_pick("sparse_regression"), "sparse regression, h in {1, 2, 4, 8}"),
    "hmm/mixture": (_pick("hmm"), "GPT on mixture-of-HMM prompts"),
    "markov/runs": (_pick("markov"), "minimal-model runs: stages, ablations, data sizes, figure runs (learned "
                                   "baselines train inside each run, into the worker's cache)"),
    "meta_learning/runs": (_pick("meta_learning"), "causal GPTs on Zipf and pydoc_data text, LayerNorm/RMSNorm"),
    "topics/two_stage": (_pick("topics", "two_stage_"), "one-layer MLM from three init scales"),
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
    parser.add_argument("--scale", default="paper", help="run size: quick or paper (default: paper)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1 of every setting (default 1)")
    parser.add_argument("--executor", default="local", help="local (default: a process pool) or ray")
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
    from mechverify.training.executor import EXECUTORS, train_many
    from mechverify.training.runner import SCALES

    if args.scale not in SCALES:
        parser.error(f"--scale must be one of {SCALES}; got {args.scale!r}")
    if args.executor not in EXECUTORS:
        parser.error(f"--executor must be one of {EXECUTORS}; got {args.executor!r}")
    if not args.sweeps:
        parser.error("name at least one sweep (see --list)")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1; got {args.seeds}")
    for name in _expand(args.sweeps):
        if name not in SWEEPS:
            parser.error(f"unknown sweep {name!r}; see --list")
        configs, run = SWEEPS[name][0](args.scale, range(args.seeds), args.device)
        start = time.perf_counter()
        train_many(configs, run, executor=args.executor, max_workers=args.workers, threads=args.threads,
                   recompute=args.recompute, ray_address=args.ray_address, device=args.device)
        print(f"{name}: {len(configs)} runs in the cache ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
