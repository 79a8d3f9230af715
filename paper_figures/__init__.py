"""Paper figures: one module per paper, one function per figure.

Each figure function takes ``(out_dir, quick, recompute, device)`` and returns the paths it wrote
(PNG and PDF, byte-identical across reruns).  ``FIGURES`` lists them for the CLI.
"""

from mechverify.paper_figures.registry import FIGURES, Figure

__all__ = ["FIGURES", "Figure"]
