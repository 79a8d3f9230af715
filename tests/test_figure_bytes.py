"""Same seed, same bytes: every registered figure, drawn twice (``redraw``: the figure cache
is bypassed, trained runs come from the run cache), gives identical files.

Marked ``figures`` and left out of the default run (it draws every figure twice: minutes even
with trained runs cached, plus the training of figure-only runs when the cache is cold).
``make figures`` runs it right after building every figure:

    python -m pytest tests/test_figure_bytes.py -m figures
"""

import hashlib

import pytest

from mechverify.paper_figures.__main__ import load_all
from mechverify.paper_figures.output_cache import render
from mechverify.paper_figures.registry import FIGURES

load_all()


def _digests(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.figures
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_two_draws_give_the_same_bytes(name, tmp_path):
    figure = FIGURES[name]
    first, _ = render(figure, tmp_path / "a", redraw=True)
    second, _ = render(figure, tmp_path / "b", redraw=True)
    assert first and _digests(first) == _digests(second)
