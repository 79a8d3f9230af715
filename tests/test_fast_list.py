"""``--list`` of the figure CLI and of the sweep CLI answers without importing torch or
matplotlib (checked in a fresh interpreter), and the figure listing read from the source agrees
with the registry filled by importing the figure modules."""

import subprocess
import sys

import pytest

PROBE = """
import sys
from {module} import main
assert main(["--list"]) == 0
heavy = sorted(m for m in ("torch", "matplotlib", "numpy", "scipy") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("module", ["mechverify.paper_figures.__main__", "mechverify.training.sweep"])
def test_list_imports_no_torch_or_matplotlib(module):
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []", out
    assert len(out.strip().splitlines()) > 5          # it listed something


def test_static_listing_matches_the_registry():
    from mechverify.paper_figures.__main__ import load_all
    from mechverify.paper_figures.registry import FIGURES, listing

    load_all()
    assert [(r["name"], r["paper_figure"], tuple(r["claims"]), r["cost"], r["caption"]) for r in listing()] == [
        (f.name, f.paper_figure, tuple(f.claims), f.cost, f.caption) for f in FIGURES.values()]
