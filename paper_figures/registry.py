"""The figure registry read by ``python -m mechverify.paper_figures``."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


_FIELDS = ("name", "paper_figure", "claims", "cost", "caption")


def listing() -> list[dict]:
    """Every figure's metadata (name, paper_figure, claims, cost, caption) in registration order,
    read from the ``@figure(...)`` decorators in the paper modules' source without importing them,
    so ``--list`` answers without loading torch or matplotlib.  The decorator's arguments must be
    literals (``tests/test_fast_list.py`` checks this listing against ``FIGURES``)."""
    out = []
    for module in MODULES:
        tree = ast.parse(Path(__file__).with_name(f"{module}.py").read_text(encoding="utf-8"))
        for node in tree.body:
            for dec in getattr(node, "decorator_list", ()):
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "figure":
                    values = [ast.literal_eval(a) for a in dec.args]
                    values += [None] * (len(_FIELDS) - len(values))
                    row = dict(zip(_FIELDS, values))
                    row.update({k.arg: ast.literal_eval(k.value) for k in dec.keywords})
                    out.append(row)
    return out
