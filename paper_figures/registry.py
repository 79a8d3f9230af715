"""The figure registry read by ``python -m mechverify.paper_figures``.

What each figure is (the paper figure it stands for, its claims, cost and caption) is one table,
``figures.toml`` beside this file; the paper modules only register the function that draws it,
with ``@figure("<paper module>/<figure>")``.  ``--list`` reads the table alone, so it answers
without importing torch or matplotlib."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mechverify.papers import MODULES

TABLE = Path(__file__).with_name("figures.toml")


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


@cache
def _table() -> dict[str, dict]:
    table = tomllib.loads(TABLE.read_text(encoding="utf-8"))
    for name, row in table.items():
        if name.split("/", 1)[0] not in MODULES:
            raise ValueError(f"{TABLE.name}: figure name must start with a paper module "
                             f"({', '.join(MODULES)}); got {name!r}")
        missing = {"paper_figure", "claims", "cost", "caption"} - set(row)
        if missing:
            raise ValueError(f"{TABLE.name}: figure {name!r} lacks {', '.join(sorted(missing))}")
    return table


def figure(name: str):
    """Decorator registering the function that draws figure ``name`` of ``figures.toml``."""
    if name not in _table():
        raise ValueError(f"figure {name!r} is not in {TABLE.name}; add its row there first")
    row = _table()[name]

    def register(func):
        FIGURES[name] = Figure(name, row["paper_figure"], tuple(row["claims"]), row["cost"], row["caption"], func)
        return func
    return register


def listing() -> list[dict]:
    """Every figure's metadata (name, paper_figure, claims, cost, caption) in the table's order,
    without importing the figure modules (``tests/test_fast_list.py`` checks it against
    ``FIGURES``)."""
    return [{"name": name, **row, "claims": tuple(row["claims"])} for name, row in _table().items()]
