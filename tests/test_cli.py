"""The command-line entry points."""

import subprocess
import sys
from pathlib import Path

from paper_figures.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def test_list_shows_every_figure(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "gd_icl/training" in out and "gd_icl/risk_vs_length" in out and "gd-icl/zfb-optimum" in out


def test_unknown_figure_is_an_error(capsys):
    try:
        main(["no_such_paper"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "unknown figure or paper 'no_such_paper'" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "paper_figures", "--list"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "gd_icl/training" in out


def test_readme_tables_are_current():
    """The README's claims and figures tables are generated from the code (make readme)."""
    from verify.readme_tables import render

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "README tables are stale: run `make readme`"
