"""Steps to the convergence gate of a regression run (Akyürek analogue, sparse regression).

``python -m bench.steps_to_gate RUN [--scale paper] [--steps N] [--lr X] [--warmup N] [--decay cosine] [--every N]``

Trains the named run of the ``--scale`` catalogue (default quick; or that run with the recipe
overridden) single-threaded, with
a held-out evaluation every ``--every`` steps, and prints per evaluation the held-out metric
and the gate of :mod:`mechverify.training.gates` (the same gate the claims use), then the first
step that met it.  RUN: a run of the catalogues, ``aky_big``, ``aky_big_noisy``,
``aky_small`` (:func:`mechverify.training.gd_icl.runs`) or ``sparse_h<H>``
(:func:`mechverify.training.sparse_regression.runs`).
Nothing is cached: it is a measuring tool for recipes, not a way to make runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time


def _run(name: str, scale: str = "quick"):
    """The run ``name`` of the ``scale`` GD-ICL (``aky_*``) or sparse-regression (``h<H>``) catalogue."""
    from mechverify.training import gd_icl, sparse_regression
    table = {k: v for k, v in gd_icl.runs(scale).items() if k.startswith("aky_")}
    table.update({f"sparse_{k}": v for k, v in sparse_regression.runs(scale).items()})
    if name not in table:
        raise ValueError(f"RUN must be one of {sorted(table)}; got {name!r}")
    return table[name]


def _gate_fn(name: str, config):
    from mechverify.training import gates
    if name.startswith("aky_"):
        from mechverify.training.aky import held_out, model_predict, reference_weights, tuned_gd_lr, EVAL_PART
        import numpy as np
        ev = held_out(config, EVAL_PART, 512)
        refs = reference_weights(config, ev, tuned_gd_lr(config))
        ref_risk = {k: float(np.mean((np.einsum("bd,bd->b", w, ev.x_query) - ev.y_query) ** 2)) for k, w in refs.items()}
        target = "gd" if name.startswith("aky_small") else ("ridge" if config.noise > 0 else "ols")

        def gate(model):
            pred = model_predict(model, ev.X, ev.y, ev.x_query)
            return gates.aky_gate({**ref_risk, "model": float(np.mean((pred - ev.y_query) ** 2))}, target)
        return gate
    gates.sparse_gd_risks(config)            # tune GD once, before the clock starts
    return lambda model: gates.sparse_gate(model, config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steps_to_gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--scale", choices=("quick", "paper"), default="quick", help="which catalogue (default quick)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--decay", choices=("constant", "cosine"))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--curriculum", type=int, help="steps of the input-dimension curriculum")
    parser.add_argument("--every", type=int, default=100, help="evaluate every N steps (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the curve to FILE")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be >= 1; got {args.every}")
    import torch
    torch.set_num_threads(args.threads)
    from mechverify.training.sparse_regression import train_sparse

    config = _run(args.run, args.scale)
    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("warmup", args.warmup),
                                   ("decay", args.decay), ("batch", args.batch),
                                   ("curriculum", args.curriculum)) if v is not None}
    config = dataclasses.replace(config, log_every=args.every, **overrides)
    gate = _gate_fn(args.run, config)          # tunes the baselines (cached in the real cache)
    # The training's checkpoints go to a throw-away cache: a trial never resumes from, or
    # leaves, a checkpoint in the user's cache.
    scratch = tempfile.TemporaryDirectory(prefix="steps_to_gate-")
    os.environ["MECHVERIFY_CACHE"] = scratch.name
    curve, start, eval_s = [], time.process_time(), [0.0]

    def on_log(step, model):
        t0 = time.process_time()
        model.eval()
        with torch.no_grad():
            g = gate(model)
        model.train()
        eval_s[0] += time.process_time() - t0          # training CPU time excludes the evaluations
        row = {"step": step, "cpu_s": round(time.process_time() - start - eval_s[0], 1), "passed": g.passed,
               **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in g.numbers.items()}}
        curve.append(row)
        print(json.dumps(row), flush=True)

    try:
        train_sparse(config, progress=False, on_log=on_log)
    finally:
        scratch.cleanup()
    first = next((r for r in curve if r["passed"]), None)
    summary = {"run": args.run, "scale": args.scale, "recipe": {k: getattr(config, k) for k in ("steps", "lr", "warmup", "decay", "batch", "curriculum")},
               "steps_to_gate": first["step"] if first else None, "cpu_s_to_gate": first["cpu_s"] if first else None}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "curve": curve}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
