"""Fixtures shared by the trained claims: the runs of the test module's paper.

A claim module ``verify/test_<module>_*.py`` names its paper by ``<module>``
(:mod:`mechverify.papers`), and these fixtures serve that paper's run catalogue,
``mechverify.training.<module>.runs``, at ``--scale``:

* ``configs``: run name -> config;
* ``get_run``: ``get_run(name)`` -> (model, payload), trained (or read from the cache) once per
  test module, even with ``--recompute``; names that share a config share the run.

The claim harness's own fixtures (``record_claim``, ``scale``, ``recompute``, ``device``) come
from :mod:`mechverify.pytest_plugin`.
"""

import importlib
from pathlib import Path

import pytest

from mechverify.papers import MODULES
from mechverify.training.runner import trained


def paper_module(test_file) -> str:
    """The paper module that the claim file ``test_<module>_*.py`` is about."""
    name = Path(test_file).name
    found = [m for m in MODULES if name.startswith(f"test_{m}_")]
    if len(found) != 1:
        raise LookupError(f"{name} does not name one paper module (test_<module>_*.py, <module> in {MODULES})")
    return found[0]


@pytest.fixture(scope="module")
def configs(request, scale):
    """Run name -> config of the test module's paper at ``--scale``."""
    return importlib.import_module(f"mechverify.training.{paper_module(request.path)}").runs(scale)


@pytest.fixture(scope="module")
def get_run(configs, recompute, device):
    """name -> (model, payload) of the test module's paper, trained once per cache and once per
    module even with ``--recompute`` (names that share a config share the run)."""
    memo = {}

    def get(name):
        config = configs[name]
        if config not in memo:
            memo[config] = trained(config, recompute=recompute, device=device)
        return memo[config]
    return get
