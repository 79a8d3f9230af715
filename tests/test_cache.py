"""The content-hashed cache: stable hashes, atomic writes, corrupt entries recomputed."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from mechverify.training.cache import cached, config_hash
from mechverify.training.loop import LSATrainConfig


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
