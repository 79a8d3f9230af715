"""Staged-Markov benchmark: the reduced ODE of Fig. 10 (H = 3, T = 40, t <= 500) solved by
``mechverify.theory.dynamics.markov.simulate`` (LSODA, rtol 1e-10, analytic Jacobian, stage events)
against the official notebook's integrator, fixed-step forward Euler with dt = 0.005
(1e5 steps), on the same initial state.  Reports the time ratio and the agreement of the
stage times; also LSODA without the analytic Jacobian (finite differences) for reference.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from bench import table, time_rounds
from mechverify.theory.dynamics.markov import euler, fig10_target, initial_state, rhs, simulate


def run(quick: bool, emit) -> dict:
    G = fig10_target()
    reps = 3 if quick else 10
    record = {}
    rows = []
    for flow, t_max in (("replicator", 500.0),) + ((("logit", 500.0),) if not quick else ()):
        y0 = initial_state(G, 3, 1e-6, 0)
        lsoda = lambda: simulate(G, 3, flow, 1e-6, t_max, 0)
        fd = lambda: solve_ivp(lambda t, y: rhs(y, G, 3, flow), (0.0, t_max), y0, method="LSODA",
                               rtol=1e-10, atol=1e-14)
        t = time_rounds({"lsoda": lsoda, "lsoda_fd_jac": fd}, reps=reps)
        te = time_rounds({"euler": lambda: euler(G, 3, flow, 1e-6, t_max, 0, dt=0.005)}, reps=1, warmup=0)
        a, b = lsoda(), euler(G, 3, flow, 1e-6, t_max, 0, dt=0.005)
        ok = np.isfinite(a.stage_times) & np.isfinite(b.stage_times)
        rel = float(np.max(np.abs(a.stage_times[ok] / b.stage_times[ok] - 1))) if ok.any() else float("nan")
        ratio = te["euler"].best / t["lsoda"].best
        record[flow] = {"lsoda_s": t["lsoda"].best, "lsoda_fd_jacobian_s": t["lsoda_fd_jac"].best,
                        "euler_s": te["euler"].best, "euler_over_lsoda": ratio,
                        "stage_times_lsoda": a.stage_times.tolist(), "stage_times_euler": b.stage_times.tolist(),
                        "max_rel_stage_diff": rel, "nfev_lsoda": a.nfev}
        rows.append([flow, f"{t['lsoda'].best * 1e3:.0f}", f"{t['lsoda_fd_jac'].best * 1e3:.0f}",
                     f"{te['euler'].best * 1e3:.0f}", f"{ratio:.1f}",
                     " / ".join(f"{x:.2f}" for x in a.stage_times), " / ".join(f"{x:.2f}" for x in b.stage_times),
                     f"{rel:.1e}"])
    emit("\nReduced ODE, Fig. 10 setting (H = 3, T = 40, eps = 1e-6, t <= 500)")
    emit(table(["flow", "LSODA ms", "LSODA (fd jac) ms", "Euler ms", "Euler/LSODA", "stages LSODA",
                "stages Euler", "max rel diff"], rows))
    return record
