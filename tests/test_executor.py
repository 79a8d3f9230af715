"""mechverify.training.executor: the local pool, serial runs and Ray give the same bytes, runs already
cached are not dispatched, bad arguments are named.  Ray runs against a local Ray instance
(skipped when the optional extra [cluster] is absent)."""

from functools import partial

import pytest
import torch

from mechverify.training.executor import train_many
from mechverify.training.gd_icl import LSATrainConfig, train_lsa

CONFIGS = [LSATrainConfig(d=3, n=6, steps=6, batch=16, log_every=2, seed=s) for s in (0, 1, 2)]
TRAIN = partial(train_lsa, progress=False)


def _never(config):
    raise AssertionError(f"{config} was dispatched although it is cached")


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _same(a[k], b[k])
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return train_many(CONFIGS, TRAIN, executor="serial", directory=tmp_path_factory.mktemp("serial"), progress=False)


def test_local_pool_matches_serial_and_caches(serial, tmp_path):
    pooled = train_many(CONFIGS + CONFIGS[:1], TRAIN, max_workers=2, directory=tmp_path, progress=False)
    assert len(pooled) == 4
    for a, b in zip(pooled, serial + serial[:1]):
        _same(a, b)
    again = train_many(CONFIGS, _never, directory=tmp_path, progress=False)
    for a, b in zip(again, serial):
        _same(a, b)


def test_ray_matches_serial(serial, tmp_path):
    ray = pytest.importorskip("ray", reason="optional extra [cluster] not installed")
    try:
        gathered = train_many(CONFIGS, TRAIN, executor="ray", max_workers=2, directory=tmp_path, progress=False)
    finally:
        ray.shutdown()
    for a, b in zip(gathered, serial):
        _same(a, b)
    assert len(list(tmp_path.glob("*.pt"))) == len(CONFIGS)


@pytest.mark.parametrize("kwargs, exc, param", [
    (dict(configs=[]), ValueError, "configs"),
    (dict(configs=[{"d": 3}]), TypeError, r"configs\[0\]"),
    (dict(train=3), TypeError, "train"),
    (dict(executor="spark"), ValueError, "executor"),
    (dict(max_workers=0), ValueError, "max_workers"),
    (dict(threads=0), ValueError, "threads"),
])
def test_rejects(kwargs, exc, param, tmp_path):
    args = {"configs": CONFIGS[:1], "train": TRAIN, **kwargs}
    with pytest.raises(exc, match=param):
        train_many(args.pop("configs"), args.pop("train"), directory=tmp_path, progress=False, **args)


def test_sweep_cli(tmp_path, monkeypatch, capsys):
    from mechverify.training.sweep import main

    assert main(["--list"]) == 0
    assert "sparse_regression/head_count" in capsys.readouterr().out
    monkeypatch.setenv("MECHVERIFY_CACHE", str(tmp_path))
    monkeypatch.setitem(__import__("mechverify.training.sweep").training.sweep.SWEEPS, "toy",
                        (lambda scale, seeds, device: ([CONFIGS[s] for s in seeds], TRAIN), "toy"))
    assert main(["toy", "--seeds", "2", "--executor", "serial"]) == 0
    assert "toy: 2 runs in the cache" in capsys.readouterr().out
    assert len(list(tmp_path.glob("*.pt"))) == 2
    with pytest.raises(SystemExit):
        main(["no_such_sweep"])
