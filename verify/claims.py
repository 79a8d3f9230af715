"""This repository's claim registry.

``spec_claims.json`` lists every claim of the papers' specs (extracted once from their claim tables;
``docs/<paper>.md`` §7 lists the same claims):
id, spec file, statement, kind and provenance tags.  pyproject.toml names it as the
``mechverify_registry`` of the claim harness (:mod:`mechverify.pytest_plugin`), so a test marked
``@pytest.mark.claim(...)`` must name a registered id, a provenance among that claim's tags and
the claim's kind.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from mechverify.pytest_plugin import Claim, claim_from_marker as _claim_from_marker, load_registry

REGISTRY = Path(__file__).with_name("spec_claims.json")


@cache
def registry() -> dict[str, dict]:
    return load_registry(REGISTRY)


def claim_from_marker(marker) -> Claim:
    """Validate a ``claim`` marker against this repository's registry."""
    return _claim_from_marker(marker, registry())
