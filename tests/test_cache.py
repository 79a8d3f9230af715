"""The content-hashed cache: keys cover the code a run depends on, the versions and the device;
atomic writes; corrupt entries recomputed."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from mechverify.training.cache import cached, config_hash, source_closure
from mechverify.training.gd_icl import LSATrainConfig


@dataclasses.dataclass(frozen=True)
class Toy:
    a: int = 1


def test_hash_depends_on_fields_only():
    assert config_hash(Toy()) == config_hash(Toy())
    assert config_hash(Toy(1)) != config_hash(Toy(2))
    assert config_hash(LSATrainConfig()) != config_hash(LSATrainConfig(seed=1))
    with pytest.raises(TypeError, match="config"):
        config_hash({"a": 1})


def test_cached_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = cached(Toy(), compute, directory=tmp_path)
    second = cached(Toy(), compute, directory=tmp_path)
    assert torch.equal(first["x"], second["x"]) and len(calls) == 1
    cached(Toy(), compute, directory=tmp_path, recompute=True)
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_entry_is_recomputed(tmp_path, damage):
    cached(Toy(), lambda: {"x": torch.ones(100)}, directory=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        path.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    else:
        path.write_bytes(b"not a cache entry")
    with pytest.warns(UserWarning, match="corrupt"):
        out = cached(Toy(), lambda: {"x": torch.zeros(100)}, directory=tmp_path)
    assert torch.equal(out["x"], torch.zeros(100))
    assert torch.equal(cached(Toy(), lambda: None, directory=tmp_path)["x"], torch.zeros(100))


def test_killed_writer_leaves_no_usable_entry(tmp_path):
    """A writer killed in the middle of its write leaves at most a temp file, never an entry."""
    script = textwrap.dedent(f"""
        import dataclasses, os, sys, time, torch
        import mechverify.training.cache as cache
        @dataclasses.dataclass(frozen=True)
        class Toy:
            a: int = 1
        real_fsync = os.fsync
        def slow_fsync(fd):
            print("writing", flush=True); time.sleep(60)
        os.fsync = slow_fsync
        cache.cached(Toy(), lambda: {{"x": torch.ones(10**6)}}, directory={str(tmp_path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(tmp_path.glob("*.pt"))
    out = cached(Toy(), lambda: {"x": torch.zeros(3)}, directory=tmp_path)
    assert torch.equal(out["x"], torch.zeros(3))


def test_key_covers_device_and_versions():
    c = LSATrainConfig()
    assert config_hash(c, "cpu") != config_hash(c, "cuda")
    assert config_hash(c, "cuda") == config_hash(c, "cuda:1")          # the device type is the key
    assert config_hash(c) != config_hash(c, omit=("steps",))
    with pytest.raises(ValueError, match="device"):
        config_hash(c, "no-such-device")


KEY_SCRIPT = textwrap.dedent("""
    import json, sys
    import mechverify.training.gd_icl as gd_icl, mechverify.training.markov as markov
    from mechverify.training.cache import cached
    assert gd_icl.__file__.startswith(sys.argv[1]), gd_icl.__file__
    out = {}
    for name, config in (("gd_icl", gd_icl.LSATrainConfig()), ("markov", markov.MarkovTrainConfig())):
        calls = []
        cached(config, lambda: calls.append(1) or {"x": 1}, directory=sys.argv[2])
        out[name] = "recomputed" if calls else "reused"
    print(json.dumps(out))
""")


def _package_copy(root):
    """The installed package's folders copied to ``root``/mechverify (an importable tree)."""
    import shutil

    import mechverify
    import mechverify.constructions, mechverify.paper_figures, mechverify.theory, mechverify.training
    pkg = root / "mechverify"
    shutil.copytree(mechverify.__path__[0], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("theory", "constructions", "training", "paper_figures"):
        src = __import__(f"mechverify.{sub}", fromlist=["x"]).__path__[0]
        shutil.copytree(src, pkg / sub, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def test_code_edits_invalidate_exactly_the_runs_that_import_them(tmp_path):
    """In a copy of the package: editing a construction module or a task sampler recomputes the
    runs that import it; editing another paper's training module, a figure module, only a
    docstring/comment or only the run catalogue (whose configs' fields are in the key) reuses them."""
    pkg = _package_copy(tmp_path / "src")
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "OMP_NUM_THREADS": "1"}

    def run():
        out = subprocess.run([sys.executable, "-c", KEY_SCRIPT, str(pkg), str(cache)], env=env, cwd=tmp_path,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def append(rel, text):
        path = pkg / rel
        path.write_text(path.read_text() + text)

    assert run() == {"gd_icl": "recomputed", "markov": "recomputed"}      # empty cache
    assert run() == {"gd_icl": "reused", "markov": "reused"}
    append("constructions/modules.py", "\n\ndef _edited():\n    return 1\n")
    assert run() == {"gd_icl": "recomputed", "markov": "recomputed"}      # both import the modules
    append("theory/tasks/markov.py", "\n\ndef _edited_sampler():\n    return 2\n")
    assert run() == {"gd_icl": "reused", "markov": "recomputed"}          # only Markov samples it
    append("theory/tasks/regression.py", "\n\ndef _edited_sampler():\n    return 3\n")
    markov_samples_regression = "mechverify.theory.tasks.regression" in source_closure("mechverify.training.markov")
    assert run() == {"gd_icl": "recomputed", "markov": "recomputed" if markov_samples_regression else "reused"}
    append("training/hmm.py", "\n\ndef _edited():\n    return 4\n")   # another paper's training module
    append("paper_figures/markov.py", "\n\ndef _edited():\n    return 5\n")
    append("training/topics.py", "\n\ndef _edited():\n    return 6\n")
    assert run() == {"gd_icl": "reused", "markov": "reused"}
    append("constructions/modules.py", "\n# a comment\n\n\ndef _edited_doc():\n    \"\"\"Only a docstring.\"\"\"\n")
    assert run() == {"gd_icl": "recomputed", "markov": "recomputed"}      # a new function is code
    src = (pkg / "constructions/modules.py").read_text().replace('"""Only a docstring."""', '"""Reworded."""')
    (pkg / "constructions/modules.py").write_text(src + "\n# another comment\n")
    assert run() == {"gd_icl": "reused", "markov": "reused"}              # docstrings and comments cost nothing
    src = (pkg / "training/markov.py").read_text()
    edited = src.replace('runs = {"main": main, "online": main,', 'runs = {"main": main, "online": main, "new": main,')
    assert edited != src
    (pkg / "training/markov.py").write_text(edited)
    assert run() == {"gd_icl": "reused", "markov": "reused"}              # the catalogue only builds configs
    (pkg / "training/markov.py").write_text(edited + "\n\ndef _edited():\n    return 7\n")
    assert run() == {"gd_icl": "reused", "markov": "recomputed"}          # the rest of the module is code
