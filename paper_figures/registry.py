"""The figure registry read by ``python -m mechverify.paper_figures``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mechverify.papers import MODULES


@dataclass(frozen=True)
class Figure:
    name: str            # "<paper module>/<figure>", e.g. "gd_icl/training"
    paper_figure: str    # the paper figure it is an analogue of
    claims: tuple        # claim ids it shows
    cost: str            # rough cold-cache cost of --quick on 2 CPU cores
    caption: str         # what it shows, with provenance
    make: Callable       # make(out_dir, quick, recompute, device) -> list of paths

    @property
    def paper(self) -> str:
        return self.name.split("/", 1)[0]


FIGURES: dict[str, Figure] = {}


def figure(name: str, paper_figure: str, claims: tuple, cost: str, caption: str):
    """Decorator registering a figure function; ``name`` reads ``<paper module>/<figure>``."""
    if name.split("/", 1)[0] not in MODULES:
        raise ValueError(f"figure name must start with a paper module ({', '.join(MODULES)}); got {name!r}")
    def register(func):
        FIGURES[name] = Figure(name, paper_figure, claims, cost, caption, func)
        return func
    return register
