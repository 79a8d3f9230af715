"""Shared pytest setup of this repository: float64 exactness settings.

The claim harness (the ``claim`` marker, ``record_claim``, ``instance_seed``, the claims table,
``--claims-report``, ``--scale``, ``--recompute``, ``--device``, ``--strict-gates``,
``--from-ledger``) and the hypothesis profiles come from the mechverify pytest plugin
(``mechverify.pytest_plugin``, loaded through its ``pytest11`` entry point).  The repository's
claim registry, ``verify/spec_claims.json``, is named by ``mechverify_registry`` in
pyproject.toml.

Hypothesis profiles (``--hypothesis-profile NAME``):
  ci        default; 25 instances per claim
  dev       8 instances, for quick iteration
  thorough  300 instances
``--hypothesis-seed N`` draws a new, reproducible set of instances under any profile.
"""

import torch

# Exactness checks run in float64 with TF32 off.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
