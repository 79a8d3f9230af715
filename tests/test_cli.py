"""The command-line entry points."""

import subprocess
import sys
from pathlib import Path

import pytest

from mechverify.paper_figures.__main__ import main

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
    out = subprocess.run([sys.executable, "-m", "mechverify.paper_figures", "--list"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "gd_icl/training" in out


def test_readme_tables_are_current():
    """The README's claims and figures tables are generated from the code (make readme)."""
    from verify.readme_tables import render

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "README tables are stale: run `make readme`"


def _fake_figure(name, caption):
    from mechverify.paper_figures.common import new_figure, save
    from mechverify.paper_figures.registry import Figure

    def make(out_dir, quick=True, recompute=False, device="cpu"):
        fig, axes = new_figure()
        axes[0, 0].plot([0, 1], [1, 0])
        return save(fig, out_dir, name.replace("/", "_"))
    return Figure(name, "Fig. 0 (test)", ("pto/ols-harness",), "~0 s", caption, make)


def test_gallery_collects_every_figure_made(tmp_path, monkeypatch):
    from mechverify.paper_figures.registry import FIGURES

    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path / "cache"))
    for name in ("fake/one", "fake/two"):
        monkeypatch.setitem(FIGURES, name, _fake_figure(name, f"caption of {name} [reconstructed]"))
    tmp_path = tmp_path / "out"
    assert main(["fake/one", "--out", str(tmp_path)]) == 0
    first = (tmp_path / "GALLERY.md").read_text()
    assert "fake/one" in first and "fake/two" not in first and "![fake/one](fake_one.png)" in first
    assert main(["fake/two", "--out", str(tmp_path)]) == 0
    second = (tmp_path / "GALLERY.md").read_text()
    assert "caption of fake/one [reconstructed]" in second and "caption of fake/two" in second
    assert "`pto/ols-harness`" in second
    assert main(["fake/two", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "GALLERY.md").read_text() == second           # deterministic
    (tmp_path / "fake_one.png").unlink()
    assert main(["fake/two", "--out", str(tmp_path)]) == 0
    assert "fake/one" not in (tmp_path / "GALLERY.md").read_text()   # files gone: entry dropped


def test_figure_output_cache(tmp_path, monkeypatch, capsys):
    """A second run copies the figure from the cache (same bytes, no redraw); --redraw draws
    again; a corrupted entry is detected and redrawn."""
    from mechverify.paper_figures.registry import FIGURES

    calls = []
    fake = _fake_figure("fake/cached", "caption")
    monkeypatch.setitem(FIGURES, "fake/cached", fake.__class__(*[getattr(fake, f) for f in
                        ("name", "paper_figure", "claims", "cost", "caption")],
                        lambda *a, **k: calls.append(1) or fake.make(*a, **k)))
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path / "cache"))
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert main(["fake/cached", "--out", str(out_a)]) == 0 and len(calls) == 1
    assert main(["fake/cached", "--out", str(out_b)]) == 0 and len(calls) == 1
    assert "cached" in capsys.readouterr().out.splitlines()[-2]
    for name in ("fake_cached.png", "fake_cached.pdf"):
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes()
    assert main(["fake/cached", "--out", str(out_b), "--redraw"]) == 0 and len(calls) == 2
    (entry,) = (tmp_path / "cache" / "figures").iterdir()
    (entry / "fake_cached.png").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="corrupt"):
        assert main(["fake/cached", "--out", str(out_b)]) == 0
    assert len(calls) == 3 and (out_b / "fake_cached.png").read_bytes() == (out_a / "fake_cached.png").read_bytes()
