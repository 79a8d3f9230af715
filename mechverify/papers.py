"""The one table of the papers mechverify checks.

Every layer names a paper by the same module name (``mechverify.theory...``,
``mechverify.constructions.<module>``, ``mechverify.training.<module>``,
``mechverify.paper_figures.<module>``, ``bench.<module>``, ``verify/test_<module>_*.py``).
Claim ids keep the prefix of their spec (``pto/...``, ``metanorm/...``).  The README tables,
the figure CLI, the sweeps and the benchmark list all read this table; nothing else lists
the papers.

This module imports nothing but the standard library (no torch, numpy or matplotlib), so
any entry point may read it before heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    module: str       # module name in every layer, e.g. "sparse_regression"
    key: str          # claim-id prefix, e.g. "pto" (ids read "<key>/<slug>")
    title: str        # short title for tables
    authors: str      # who wrote the seed paper(s), with the year
    spec: str         # the spec file the claims were extracted from (``verify/spec_claims.json``)
    bench: bool       # whether ``bench.<module>`` exists

    @property
    def docs(self) -> str:
        """The page documenting the paper, relative to the repository root."""
        return f"docs/{self.module}.md"


PAPERS: tuple[Paper, ...] = (
    Paper("gd_icl", "gd-icl", "In-context learning as gradient descent",
          "von Oswald et al. 2023; Ahn et al. 2023; Zhang, Frei, Bartlett 2024; Akyürek et al. 2023; "
          "Bai et al. 2023", "gd_icl.md", bench=True),
    Paper("sparse_regression", "pto", "Multi-head attention on sparse linear regression",
          "Chen, Zhao, Zou 2024", "sparse_regression_icl.md", bench=True),
    Paper("hmm", "hmm", "Feature decoupling in hidden Markov models",
          "Hao, Ye, Han, Zhang 2025", "hmm_decoupling.md", bench=True),
    Paper("markov", "markov", "Staged learning of sparse attention on Markov chains",
          "Yüksel, Alvarez Lucendo, Flammarion 2026", "staged_markov.md", bench=True),
    Paper("topics", "topics", "How transformers learn topic structure",
          "Li, Li, Risteski 2023", "topic_structure.md", bench=True),
    Paper("meta_learning", "metanorm", "A meta-learning view of causal language models",
          "Wu, Varshney 2024", "meta_learning_norms.md", bench=False),
)

MODULES: tuple[str, ...] = tuple(p.module for p in PAPERS)


def paper(name: str) -> Paper:
    """The paper whose module name, claim-id prefix or spec file is ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str; got {type(name).__name__}")
    for p in PAPERS:
        if name in (p.module, p.key, p.spec):
            return p
    raise ValueError(f"name must be a paper module, claim-id prefix or spec file "
                     f"({', '.join(MODULES)}); got {name!r}")


def paper_of_claim(claim_id: str) -> Paper:
    """The paper a claim id (``<key>/<slug>``) belongs to."""
    if not isinstance(claim_id, str) or "/" not in claim_id:
        raise ValueError(f"claim_id must read '<key>/<slug>'; got {claim_id!r}")
    return paper(claim_id.split("/", 1)[0])
