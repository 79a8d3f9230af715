"""The claim registry and the claim marker's rules.

``spec_claims.json`` lists every claim of ``shared/specs/*.md`` (§7 tables, extracted once):
id, spec file, statement, kind and provenance tags.  A test marked
``@pytest.mark.claim(id=..., paper=..., provenance=..., kind=...)`` must name a registered
id, a provenance among that claim's tags and the claim's kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROVENANCES = ("paper", "paper-code", "review", "reconstructed")
KINDS = ("exact", "statistical", "trained")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    provenance: str
    kind: str

    @property
    def key(self) -> str:
        return self.id.split("/", 1)[0]


@cache
def registry() -> dict[str, dict]:
    rows = json.loads((Path(__file__).with_name("spec_claims.json")).read_text(encoding="utf-8"))
    return {row["id"]: row for row in rows}


def claim_from_marker(marker) -> Claim:
    """Validate a ``claim`` marker; ValueError names the offending field."""
    if marker.args:
        raise ValueError("claim marker takes keyword arguments only: id, paper, provenance, kind")
    fields = dict(marker.kwargs)
    missing = {"id", "paper", "provenance", "kind"} - fields.keys()
    extra = fields.keys() - {"id", "paper", "provenance", "kind"}
    if missing or extra:
        raise ValueError(f"claim marker needs exactly id, paper, provenance, kind; missing {sorted(missing)}, "
                         f"unknown {sorted(extra)}")
    claim = Claim(**fields)
    spec = registry().get(claim.id)
    if spec is None:
        raise ValueError(f"claim id {claim.id!r} is not in any spec (verify/spec_claims.json)")
    if not isinstance(claim.paper, str) or not claim.paper:
        raise ValueError(f"claim {claim.id}: paper must be a non-empty string")
    if claim.provenance not in PROVENANCES:
        raise ValueError(f"claim {claim.id}: provenance must be one of {PROVENANCES}; got {claim.provenance!r}")
    if claim.provenance not in spec["tags"]:
        raise ValueError(f"claim {claim.id}: provenance {claim.provenance!r} is not among the spec's tags {spec['tags']}")
    if claim.kind not in KINDS:
        raise ValueError(f"claim {claim.id}: kind must be one of {KINDS}; got {claim.kind!r}")
    if claim.kind != spec["kind"]:
        raise ValueError(f"claim {claim.id}: kind {claim.kind!r} differs from the spec's {spec['kind']!r}")
    return claim
