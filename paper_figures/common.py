"""What every figure module shares: deterministic output (fixed style, no timestamps or version
strings in the files), the gate banner, and the trained runs at the figure's scale."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mechverify.training.runner import trained  # noqa: E402

STYLE = {"figure.dpi": 100, "savefig.dpi": 150, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "svg.hashsalt": "mechverify"}

_NO_METADATA = {"png": {"Software": None},
                "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}}


def run_scale(quick: bool) -> str:
    """The run scale a figure draws: "quick" (CPU-sized, ``--quick``) or "paper" (``--full``)."""
    return "quick" if quick else "paper"


def paper_runs(paper, quick: bool) -> dict:
    """``paper.runs`` at the figure's scale (``paper``: a ``mechverify.training`` module): name -> config."""
    return paper.runs(run_scale(quick))


def trained_run(paper, name: str, quick: bool, recompute: bool, device: str):
    """The run ``name`` of ``paper`` at the figure's scale, trained once and then served from
    the cache (:func:`mechverify.training.runner.trained`): (config, model, payload)."""
    config = paper_runs(paper, quick)[name]
    model, payload = trained(config, recompute=recompute, device=device)
    return config, model, payload


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.0, height: float = 3.2):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def mark_gates(fig, gates: dict) -> bool:
    """Mark ``fig`` *inconclusive* when a run it shows missed its convergence gate
    (``gates``: label -> :class:`mechverify.training.gates.Gate`): a red line of text above
    the panels names the runs and the rule.  Returns True when every gate was met."""
    failed = [label for label, gate in gates.items() if not gate.passed]
    if failed:
        rules = sorted({gates[label].rule for label in failed})
        fig.suptitle(f"INCONCLUSIVE: {', '.join(failed)} missed the convergence gate ({'; '.join(rules)})",
                     color="tab:red", fontsize=8, wrap=True)
    return not failed


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(STYLE):
        fig.tight_layout()
        for fmt in ("png", "pdf"):
            path = out_dir / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, metadata=_NO_METADATA[fmt])
            paths.append(path)
    plt.close(fig)
    return paths
