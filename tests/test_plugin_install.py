"""The plugin from a fresh, non-editable install: build the wheel from a copy of the sources,
install it into a new venv (no pip index; the dependencies are reused from this environment by a
``.pth`` line, so it runs offline), and run a scratch project outside the repository that uses
every part of the harness."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "mechverify", "theory", "constructions", "training", "paper_figures")

SCRATCH_TEST = '''
import numpy as np
import pytest
from hypothesis import given

import mechverify
from mechverify.compare import assert_close, mc_check
from mechverify.strategies import regression_prompts


def test_installed_copy():
    print("MECHVERIFY", mechverify.__file__)


@pytest.mark.claim(id="mine/ols", paper="me-2025", provenance="paper", kind="exact")
@given(regression_prompts(max_d=4, max_n=12))
def test_normal_equations(record_claim, batch):
    X, y = batch.X, batch.y
    w = np.linalg.lstsq(X[0], y[0], rcond=None)[0]
    assert_close(X[0].T @ (X[0] @ w), X[0].T @ (X[0] @ w), record=record_claim)


@pytest.mark.claim(id="mine/mean", paper="me-2025", provenance="reconstructed", kind="statistical")
def test_mean(record_claim, instance_seed):
    mc_check(np.random.default_rng(instance_seed).normal(size=2000), 0.0, effect=0.2, record=record_claim)


@pytest.mark.claim(id="mine/trained", paper="me-2025", provenance="paper", kind="trained",
                   findings={"quick": "measured 0.3 > 0.1 after 10 steps"})
def test_trained(record_claim):
    record_claim.gate(False, loss=0.9, target=0.1, steps=10)


@pytest.mark.claim(id="mine/norms", paper="me-2025", provenance="reconstructed", kind="statistical", recorded=True)
def test_norms(record_claim):
    record_claim(0.5, float("inf"))
'''


@pytest.mark.slow
def test_plugin_from_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(src)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("mechverify-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (numpy, torch, pytest, hypothesis, ...) from this environment, after the venv's own
    (site / "reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    project = tmp_path / "scratch"
    project.mkdir()
    (project / "test_mine.py").write_text(SCRATCH_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    result = subprocess.run([str(python), "-m", "pytest", "-s", "-p", "no:cacheprovider", "--claims-report", "r.json",
                             "--hypothesis-profile", "dev"], cwd=project, env=env, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    installed = next(line.split()[-1] for line in out.splitlines() if "MECHVERIFY" in line)
    assert Path(installed).is_relative_to(venv), installed          # not the repository's editable copy
    rows = {r["id"]: r for r in json.loads((project / "r.json").read_text())}
    assert {cid: r["outcome"] for cid, r in rows.items()} == {
        "mine/ols": "passed", "mine/mean": "passed", "mine/trained": "inconclusive", "mine/norms": "recorded"}
    assert rows["mine/ols"]["n_instances"] == 8 and rows["mine/mean"]["instance_seeds"]
    assert rows["mine/trained"]["gate"]["test_trained"] == {"met": False, "loss": 0.9, "target": 0.1, "steps": 10}
    assert any(line.startswith("=") and " claims " in line for line in out.splitlines()), out

    # the installed package carries its data: the figure table (--list reads it without torch)
    listed = subprocess.run([str(python), "-m", "mechverify.paper_figures", "--list"], cwd=project, env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "gd_icl/training" in listed.stdout and "topics/cstar" in listed.stdout, listed.stdout
