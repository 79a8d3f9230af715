"""mechverify: the mechanistic theory of transformers, runnable and checkable.

The repository keeps its folders at the top level; installed, they live under this one
namespace:

``mechverify.theory``         independent numpy/scipy/sympy references (no torch)
``mechverify.constructions``  the architectures, task encoders and hand-built weights
``mechverify.training``       the runner, the run catalogue of each paper, probes
``mechverify.paper_figures``  one module per paper, ``python -m mechverify.paper_figures``
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mechverify")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
