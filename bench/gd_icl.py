"""Benchmark of the GD-ICL construction (``mechverify.constructions.gd_icl.gd_transformer``).

One batch of B = 1024 Gaussian regression prompts, d = 20 (D = d + 1 = 21 residual
coordinates), 10 layers, float64, at n = 40 and at n = 400 context examples.  Timed:

(a) forward       ``model(Z)`` under ``torch.no_grad`` on pre-embedded prompts Z (B, n+1, D):
                  the whole stack in the numpy CPU kernel (``mechverify.constructions.kernel``)
(a0) torch route  the same call under ``kernel.disabled()``: the moment route in torch
                  (batched matmuls), the forward of earlier releases
(b) numpy GD      ``mechverify.theory.algorithms.regression.gd_predict``, 10 steps, same prompts
(c) scores form   ``model(Z, scores_form=True)``: the same layers through the n x n scores
(d) peak          a 2048 x 2048 x 2048 float64 matmul into a preallocated output, by
                  ``torch.mm`` (MKL) and by ``numpy.matmul`` (OpenBLAS); the faster of the two
                  is the practical float64 peak of this machine with these threads

and, as the record of what was tried for (a), two other exact layouts of the same linear
layer, run through the same residual stack:

(a1) projected    the forward as it was before the "moment" route: Q, K, V projections of all
                  T tokens, S = sum_j v_j k_j^T by einsum, S applied to the queries, W_O, 1/n
(a2) projected+   the same projections, with W_O and 1/n folded into S per prompt so the
                  queries meet one (D x D) matrix in a single bmm

Repetitions: at n = 40 every item runs in one interleaved group (2 warm-ups, up to 15
rounds, ~6 s); at n = 400, (a) and (b) are interleaved (1 warm-up, up to 7 rounds, ~8 s),
(a1) runs once, (a2) is skipped, and (c) runs once, twice if one call takes under 15 s.
``--quick``: fewer rounds, no (a1) at n = 400.

Timer: wall clock (``time.perf_counter``), garbage collector off, warm-up calls first, then
interleaved rounds (one call of each item per round); the tables give the best (minimum)
and the median over the rounds; rates and ratios use the best, and the share of peak of
(a) is also given for its median round (the target is on the median) and per CPU-second
(FLOPs / least process CPU time against the peak matmul's FLOPs per CPU-second), which
other processes sharing the cores disturb less than wall-clock rates.  The minimum is the
estimate least disturbed by other processes sharing the cores.  The tables also give the
least process CPU time of a round (summed over threads): with T threads and the cores to
itself, a call's wall time is about its CPU time / T; far more means it waited for a core.

FLOPs are the ones the code performs: every matmul the call dispatches, counted by
``torch.utils.flop_counter.FlopCounterMode`` (exact: counts are affine in B, so they are
taken at B = 1, 2, 3 and extrapolated), plus the elementwise adds and scalings counted by
hand.  For (a) the count is also broken down by hand and checked against the counter.  A
dispatch mode such as the counter makes the layer take its torch route, so (a) is counted
as (a0); the numpy kernel performs the same products (per prompt: the moment, two D^3
products with the merged weights, the apply) grouped into other calls.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import Timing, cpu_model, load_average, table, time_rounds
from mechverify.constructions import kernel
from mechverify.constructions.gd_icl import gd_transformer
from mechverify.theory.algorithms.regression import gd_predict
from mechverify.theory.tasks.regression import sample_regression

B, D_IN, LAYERS = 1024, 20, 10
LENGTHS = (40, 400)
LR = 0.25          # below 2 / lambda_max of the empirical covariances of these prompts
NOISE, SEED = 0.1, 0
PEAK_N = 2048
REL_TOL = 1e-10    # sanity check of the outputs (not a timing assertion)


# --- the layouts tried for the linear layer (bench-local, for comparison only) -------------

def _projections(layer, Z, n):
    Bz, T, D = Z.shape
    H, dk, dv = layer.n_heads, layer.d_head, layer.d_value
    W = torch.cat([layer.W_Q.reshape(H * dk, D), layer.W_K.reshape(H * dk, D),
                   layer.W_V.reshape(H * dv, D)])
    proj = Z @ W.T
    Q = proj[..., :H * dk].reshape(Bz, T, H, dk)
    K = proj[:, :n, H * dk:2 * H * dk].reshape(Bz, n, H, dk)
    V = proj[:, :n, 2 * H * dk:].reshape(Bz, n, H, dv)
    return Q, K, V


def projected_layer(layer, Z, n):
    """(a1) The layer's previous linear path: einsum over the projected heads."""
    Bz, T, D = Z.shape
    H, dv = layer.n_heads, layer.d_value
    Q, K, V = _projections(layer, Z, n)
    S = torch.einsum("bjhv,bjhk->bhvk", V, K)
    heads = torch.einsum("bhvk,bthk->bthv", S, Q)
    out = heads.reshape(Bz, T, H * dv) @ layer.W_O.permute(1, 0, 2).reshape(D, H * dv).T
    return out / n


def projected_folded_layer(layer, Z, n):
    """(a2) Projections, then P = (W_O / n) S per prompt and one bmm with the queries."""
    Bz, T, D = Z.shape
    H, dk = layer.n_heads, layer.d_head
    Q, K, V = _projections(layer, Z, n)
    S = torch.einsum("bjhv,bjhk->bhvk", V, K)                  # (B, H, dv, dk)
    P = ((layer.W_O / n) @ S).permute(0, 2, 1, 3).reshape(Bz, D, H * dk)
    return torch.bmm(Q.reshape(Bz, T, H * dk), P.transpose(1, 2))


def run_stack(model, Z, layer_fn):
    """``model``'s residual stack with each layer's update computed by ``layer_fn``."""
    n = Z.shape[1] - 1
    for layer in model.layers:
        Z = Z + layer_fn(layer, Z, n)
    return Z


# --- FLOP counts ----------------------------------------------------------------------------

def matmul_flops(call, Z) -> int:
    """Matmul FLOPs of ``call(Z)`` at the full batch, from counts at B = 1, 2, 3."""
    counts = []
    for b in (1, 2, 3):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call(Z[:b])
        counts.append(counter.get_total_flops())
    slope = counts[1] - counts[0]
    if counts[2] - counts[1] != slope:           # not affine in B: count the real batch
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call(Z)
        return counter.get_total_flops()
    return counts[0] + slope * (Z.shape[0] - 1)


def moment_breakdown(n: int) -> dict[str, int]:
    """Hand count of the forward's "moment" route (one head, d_head = d_value = D)."""
    D, T, L = D_IN + 1, n + 1, LAYERS
    return {
        "merged weights W_O W_V, W_K^T W_Q (per layer, batch-free)": L * 2 * (2 * D ** 3),
        "context moment C = sum_j z_j z_j^T": L * 2 * B * n * D * D,
        "fold M = (W^PV / n) C W^KQ per prompt": L * B * 2 * (2 * D ** 3),
        "apply Z M^T to all T tokens": L * 2 * B * T * D * D,
        "residual add (elementwise)": L * B * T * D,
    }


def projected_breakdown(n: int) -> dict[str, int]:
    """Hand count of the projected layout (a1), the structure the issue names."""
    D, T, L = D_IN + 1, n + 1, LAYERS
    return {
        "Q, K, V projections of all T tokens": L * 2 * B * T * D * 3 * D,
        "S = sum_j v_j k_j^T (d_v x d_k)": L * 2 * B * n * D * D,
        "S applied to the queries": L * 2 * B * T * D * D,
        "output projection W_O": L * 2 * B * T * D * D,
        "1/n scaling and residual add (elementwise)": L * 2 * B * T * D,
    }


def numpy_gd_flops(n: int) -> int:
    """Hand count for gd_predict: per step X w, minus y, X^T r, / n, w - lr g; then <w, x_q>."""
    d = D_IN
    return LAYERS * B * (4 * n * d + n + 3 * d) + 2 * B * d


# --- the benchmark --------------------------------------------------------------------------

def _prompts(n: int, model):
    batch = sample_regression(B, n, D_IN, noise=NOISE, seed=SEED)
    X, y, xq = (torch.from_numpy(np.ascontiguousarray(a)) for a in (batch.X, batch.y, batch.x_query))
    with torch.no_grad():
        Z = model.embed(X, y, xq)
    return batch, Z


def _peak(reps: int) -> tuple[float, dict[str, Timing]]:
    """FLOP/s of the faster of torch.mm and numpy.matmul on 2048^3, and both timings."""
    gen = torch.Generator().manual_seed(SEED)
    a = torch.randn(PEAK_N, PEAK_N, dtype=torch.float64, generator=gen)
    b = torch.randn(PEAK_N, PEAK_N, dtype=torch.float64, generator=gen)
    c = torch.empty(PEAK_N, PEAK_N, dtype=torch.float64)
    an, bn, cn = a.numpy(), b.numpy(), c.numpy()
    t = time_rounds({"torch.mm": lambda: torch.mm(a, b, out=c),
                     "numpy.matmul": lambda: np.matmul(an, bn, out=cn)}, reps=reps, warmup=1)
    return 2.0 * PEAK_N ** 3 / min(x.best for x in t.values()), t


def _fresh_memory(Z, reps: int) -> dict:
    """Cost of a fresh (B, T, D) tensor (first-touch page faults) against reusing one."""
    buf = torch.empty_like(Z)
    t = time_rounds({"fresh": lambda: Z.clone(), "reuse": lambda: buf.copy_(Z)}, reps=reps, warmup=1)
    return {"bytes": Z.nbytes, "fresh_clone_s": t["fresh"].best, "copy_into_buffer_s": t["reuse"].best,
            "fault_overhead_s": max(t["fresh"].best - t["reuse"].best, 0.0)}


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / (1.0 + np.abs(b).max()))


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


LABELS = {
    "a": "(a) forward model(Z), numpy kernel",
    "a0": "(a0) forward, torch route",
    "b": "(b) numpy gd_predict",
    "a1": "(a1) projected, einsum (old forward)",
    "a2": "(a2) projected, W_O.S folded, bmm",
    "c": "(c) scores form, n x n",
}


def _measure(n: int, model, quick: bool) -> dict:
    """Time, count and check every item at context length n."""
    batch, Z = _prompts(n, model)
    large = n >= 200
    last = {}

    def keep(key, fn):                 # time fn, keep its latest output for the checks
        def call():
            last[key] = fn()
        return call

    def torch_route(z):
        with kernel.disabled():
            return model(z)

    calls = {
        "a": lambda z: model(z),
        "a0": torch_route,
        "a1": lambda z: run_stack(model, z, projected_layer),
        "a2": lambda z: run_stack(model, z, projected_folded_layer),
        "c": lambda z: model(z, scores_form=True),
    }
    timed = {key: keep(key, lambda f=f: f(Z)) for key, f in calls.items()}
    timed["b"] = keep("b", lambda: gd_predict(batch.X, batch.y, batch.x_query, LR, LAYERS))
    with torch.no_grad():
        if not large:        # everything is cheap: one interleaved group
            order = ("a", "a0", "b", "a1", "a2", "c")
            timings = time_rounds({k: timed[k] for k in order}, reps=5 if quick else 15,
                                  warmup=1 if quick else 2, min_reps=3, budget_s=2.0 if quick else 6.0)
        else:                # seconds per call: (a), (b) interleaved, the slow ones on their own
            timings = time_rounds({k: timed[k] for k in ("a", "a0", "b")}, reps=3 if quick else 7, warmup=1,
                                  min_reps=2, budget_s=4.0 if quick else 8.0)
            if not quick:    # the old layout once; (a2) only at small n
                timings.update(time_rounds({"a1": timed["a1"]}, reps=1, warmup=0))
            # a second call of (c) only where the first took under 15 s
            timings.update(time_rounds({"c": timed["c"]}, reps=1 if quick else 2, warmup=0, budget_s=15.0))
        memory = _fresh_memory(Z, reps=3 if quick else 5)

        # FLOPs performed: matmuls counted by the counter, elementwise passes by hand
        residual = LAYERS * B * (n + 1) * (D_IN + 1)          # one (B, T, D) add per layer
        elementwise = {"a": residual, "a0": residual, "a1": 2 * residual, "a2": residual, "c": 2 * residual}
        flops = {k: matmul_flops(calls[k], Z) + elementwise[k] for k in timings if k != "b"}
        flops["b"] = numpy_gd_flops(n)

    # sanity of what was timed (not a timing assertion)
    pred = (last["a"][:, -1, :] @ model.readout).numpy()
    checks = {"(a) vs (b) predictions": _rel(pred, last["b"])}
    for key in ("a0", "c", "a1", "a2"):
        if key in last:
            checks[f"({key}) vs (a) residual streams"] = _rel(last[key].numpy(), last["a"].numpy())
    problems = [f"n={n}: {k} rel. error {v:.1e} > {REL_TOL:.0e}" for k, v in checks.items() if v > REL_TOL]
    hand = {"a": moment_breakdown(n), "a1": projected_breakdown(n)}
    agree = {k: sum(v for part, v in hand[k].items() if "elementwise" not in part)
             == flops[k] - elementwise[k] for k in hand if k in flops}
    problems += [f"n={n}: hand FLOP count of ({k}) disagrees with the counter"
                 for k, ok in agree.items() if not ok]
    return {"timings": timings, "flops": flops, "checks": checks, "memory": memory,
            "hand": hand, "hand_agrees": agree, "problems": problems}


def _report(n: int, res: dict, peak: float, peak_cpu: float, emit) -> dict:
    """Print the tables for one n; return its JSON record.  ``peak_cpu``: the peak matmul's
    FLOPs per second of process CPU time, for the load-independent share."""
    t, fl = res["timings"], res["flops"]
    rows, items = [], {}
    for key, tm in t.items():
        rate = fl[key] / tm.best
        median_rate = fl[key] / tm.median
        rows.append([LABELS[key], _ms(tm.best), _ms(tm.median), _ms(tm.best_cpu), tm.reps,
                     f"{fl[key] / 1e9:.3f}", f"{rate / 1e9:.2f}", f"{100 * rate / peak:.1f}%",
                     f"{100 * median_rate / peak:.1f}%"])
        items[key] = {"label": LABELS[key], **tm.as_dict(), "flops": fl[key], "flops_per_s": rate,
                      "fraction_of_peak": rate / peak, "median_fraction_of_peak": median_rate / peak}
    ta, tb, tc = t["a"].best, t["b"].best, t["c"].best
    projected_total = sum(res["hand"]["a1"].values())
    mem = res["memory"]
    fresh_tensors = 1                  # the kernel's output; scratch is per block, reused
    ratios = {
        "fraction_of_peak_a": fl["a"] / ta / peak,
        "median_fraction_of_peak_a": fl["a"] / t["a"].median / peak,
        "cpu_time_fraction_of_peak_a": fl["a"] / t["a"].best_cpu / peak_cpu,
        "projected_structure_flops": projected_total,
        "projected_structure_equivalent_fraction_of_peak": projected_total / ta / peak,
        "speedup_a_over_c": tc / ta, "n_over_d": n / D_IN, "flop_ratio_c_over_a": fl["c"] / fl["a"],
        "speedup_a_over_b": tb / ta, "flop_ratio_a_over_b": fl["a"] / fl["b"],
        "estimated_page_fault_share_of_a": min(fresh_tensors * mem["fault_overhead_s"] / ta, 1.0),
    }
    ratios["speedup_a_over_a0"] = t["a0"].best / ta
    if "a1" in t:
        ratios["speedup_a_over_a1"] = t["a1"].best / ta

    emit(f"\n--- n = {n} (T = n + 1 = {n + 1} tokens) ---")
    emit(table(["item", "best ms", "median ms", "cpu ms", "reps", "GFLOP", "GFLOP/s", "of peak",
                "median of peak"], rows))
    for key, title in (("a", "(a) forward, moment route"), ("a1", "(a1) projected structure, same layer")):
        agrees = res["hand_agrees"].get(key)
        note = "" if agrees is None else f" (matmul part {'=' if agrees else '!='} counter)"
        emit("")
        emit(table([f"FLOPs of {title}{note}", "MFLOP"],
                   [[k, f"{v / 1e6:.1f}"] for k, v in res["hand"][key].items()]))
    lines = [
        ["(a) achieved float64 FLOP/s / peak, best round", f"{100 * ratios['fraction_of_peak_a']:.1f}%"],
        ["(a) achieved float64 FLOP/s / peak, median round", f"{100 * ratios['median_fraction_of_peak_a']:.1f}%"],
        ["(a) FLOPs per CPU-second / the peak matmul's (load-independent)",
         f"{100 * ratios['cpu_time_fraction_of_peak_a']:.1f}%"],
        ["(a1)-structure FLOPs / time(a) / peak (equivalent rate, not achieved)",
         f"{100 * ratios['projected_structure_equivalent_fraction_of_peak']:.1f}%"],
        ["speedup of (a) over (c): time(c) / time(a)", f"{ratios['speedup_a_over_c']:.1f}x"],
        ["  n / d", f"{ratios['n_over_d']:.1f}"],
        ["  FLOPs(c) / FLOPs(a)", f"{ratios['flop_ratio_c_over_a']:.1f}"],
        ["speedup of (a) over (b): time(b) / time(a)", f"{ratios['speedup_a_over_b']:.3f}x"],
        ["  FLOPs(a) / FLOPs(b)", f"{ratios['flop_ratio_a_over_b']:.1f}"],
    ]
    lines.append(["speedup of (a) over (a0), the torch route", f"{ratios['speedup_a_over_a0']:.2f}x"])
    if "speedup_a_over_a1" in ratios:
        lines.append(["speedup of (a) over (a1), the old forward", f"{ratios['speedup_a_over_a1']:.2f}x"])
    lines += [
        [f"fresh {mem['bytes'] / 1e6:.0f} MB (B, T, D) tensor vs copy into a buffer, ms",
         f"{_ms(mem['fresh_clone_s'])} vs {_ms(mem['copy_into_buffer_s'])}"],
        [f"est. share of (a) spent faulting in {fresh_tensors} fresh tensor",
         f"{100 * ratios['estimated_page_fault_share_of_a']:.0f}%"],
    ]
    emit("")
    emit(table(["ratio", "value"], lines, align="lr"))
    emit("checks (max rel. error): " + ", ".join(f"{k} {v:.1e}" for k, v in res["checks"].items()))
    return {"items": items, "ratios": ratios, "checks": res["checks"], "memory": mem,
            "flop_breakdown_a": res["hand"]["a"], "flop_breakdown_projected": res["hand"]["a1"],
            "hand_count_agrees_with_counter": res["hand_agrees"]}


def run(quick: bool = False, emit=print) -> dict:
    started = time.perf_counter()
    threads = torch.get_num_threads()
    meta = {
        "B": B, "d": D_IN, "D": D_IN + 1, "layers": LAYERS, "lr": LR, "dtype": "float64",
        "torch": torch.__version__, "numpy": np.__version__, "torch_threads": threads,
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "load_average_start": load_average(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
        "timer": "wall clock perf_counter, gc off, warm-up then interleaved rounds; best = min",
    }
    emit(f"\n=== GD-ICL construction: B={B}, d={D_IN} (D={D_IN + 1}), {LAYERS} layers, float64, "
         f"lr={LR} ===")
    emit(f"torch {torch.__version__}, numpy {np.__version__}, torch threads {threads}, "
         f"CPU {meta['cpu']} x {os.cpu_count()} logical, load average {meta['load_average_start']}, "
         f"THP_MEM_ALLOC_ENABLE={meta['THP_MEM_ALLOC_ENABLE']}")
    emit(f"timer: {meta['timer']}" + ("  [--quick]" if quick else ""))

    peak_start, peak_t0 = _peak(3 if quick else 5)
    emit(f"(d) peak: {PEAK_N}^3 float64 matmul, best of {peak_t0['torch.mm'].reps}: "
         + ", ".join(f"{k} {_ms(v.best)} ms ({2 * PEAK_N ** 3 / v.best / 1e9:.1f} GFLOP/s)"
                     for k, v in peak_t0.items())
         + f" -> peak {peak_start / 1e9:.1f} GFLOP/s")
    model = gd_transformer(D_IN, LAYERS, LR)
    measured = {}
    for n in LENGTHS:
        emit(f"timing n = {n} ..." + (" (the n x n form takes tens of seconds a call)" if n >= 200 else ""))
        measured[n] = _measure(n, model, quick)
    peak_end, peak_t1 = _peak(3)
    peak = max(peak_start, peak_end)
    peak_cpu = max(2.0 * PEAK_N ** 3 / v.best_cpu for tm in (peak_t0, peak_t1) for v in tm.values())
    meta["load_average_end"] = load_average()
    emit(f"(d) peak again at the end: {peak_end / 1e9:.1f} GFLOP/s; peak used below = best of both "
         f"= {peak / 1e9:.1f} GFLOP/s")

    record = {"meta": meta, "peak": {"flops_per_s": peak, "flops_per_cpu_s": peak_cpu, "matmul_n": PEAK_N,
                                     "start": {k: v.as_dict() for k, v in peak_t0.items()},
                                     "end": {k: v.as_dict() for k, v in peak_t1.items()}},
              "lengths": {str(n): _report(n, res, peak, peak_cpu, emit) for n, res in measured.items()}}
    problems = [p for res in measured.values() for p in res["problems"]]
    r400 = record["lengths"]["400"]["ratios"]
    fractions = {f"n={n}": record["lengths"][str(n)]["ratios"]["fraction_of_peak_a"] for n in LENGTHS}
    medians = {f"n={n}": record["lengths"][str(n)]["ratios"]["median_fraction_of_peak_a"] for n in LENGTHS}
    by_cpu = {f"n={n}": record["lengths"][str(n)]["ratios"]["cpu_time_fraction_of_peak_a"] for n in LENGTHS}
    record["targets"] = {
        "forward_median_at_least_30pct_of_peak": {**medians, "best": fractions, "by_cpu_time": by_cpu,
                                                  "met": min(medians.values()) >= 0.30},
        "speedup_over_scores_form_about_n_over_d_at_400": {"speedup": r400["speedup_a_over_c"],
                                                            "n_over_d": r400["n_over_d"]},
    }
    record["problems"] = problems
    record["wall_s"] = time.perf_counter() - started
    emit("\n--- targets ---")
    emit("forward, median round >= 30% of peak float64 FLOP/s: "
         + ", ".join(f"{k} {100 * medians[k]:.1f}% (best round {100 * v:.1f}%)" for k, v in fractions.items())
         + f" -> {'met' if record['targets']['forward_median_at_least_30pct_of_peak']['met'] else 'not met'}"
         + ("  (measured under load: lower bounds)" if (load_average() or [0])[0] > (os.cpu_count() or 1) else ""))
    emit("forward FLOPs per CPU-second / the peak matmul's (less sensitive to other processes): "
         + ", ".join(f"{k} {100 * v:.1f}%" for k, v in by_cpu.items()))
    emit(f"forward beats the n x n form by ~n/d at n=400: {r400['speedup_a_over_c']:.1f}x "
         f"(n/d = {r400['n_over_d']:.0f}, FLOP ratio {r400['flop_ratio_c_over_a']:.1f})")
    busy = meta["load_average_end"] and meta["load_average_end"][0] > (os.cpu_count() or 1)
    emit(f"load average at the end {meta['load_average_end']} on {os.cpu_count()} logical CPUs"
         + ("  (other processes were competing for the cores)" if busy else ""))
    emit(f"gd_icl benchmark: {record['wall_s']:.1f} s")
    if problems:
        raise RuntimeError("outputs disagree: " + "; ".join(problems))
    return record
