"""Generate the README's tables from the code: claims (from the ``claim`` markers and the
spec registry) and figures (from the figure registry), one block per paper in the order of
``mechverify.papers.PAPERS``.

    python -m verify.readme_tables            # print both tables
    python -m verify.readme_tables --write README.md
    python -m verify.readme_tables --check README.md   # exit 1 if README is stale

The README holds each table between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
Each claim row links the test function that checks it; each paper's heading links its page
in ``docs/``.  The status column comes from collection (markers), not from a run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from mechverify.papers import PAPERS
from verify.claims import claim_from_marker, registry

ROOT = Path(__file__).resolve().parent.parent


class _Collector:
    def __init__(self):
        self.rows: dict[str, dict] = {}

    def pytest_collection_modifyitems(self, items):
        for item in items:
            marker = item.get_closest_marker("claim")
            if marker is None:
                continue
            claim = claim_from_marker(marker)
            xfail = item.get_closest_marker("xfail") is not None
            previous = self.rows.get(claim.id, {}).get("status")
            if previous and (previous != "implemented") != xfail:
                status = "implemented; some cases xfail (finding)"
            else:
                status = "xfail (finding)" if xfail else "implemented"
            self.rows[claim.id] = {"paper": claim.paper, "provenance": claim.provenance, "kind": claim.kind,
                                   "test": item.nodeid.split("[")[0], "status": status}


def function_link(nodeid: str) -> str:
    """``verify/test_x.py::test_y`` -> a Markdown link to the file, named by the function."""
    path, _, name = nodeid.partition("::")
    return f"[`{name.split('::')[-1]}`]({path})"


def collect_claims() -> dict[str, dict]:
    collector = _Collector()
    code = pytest.main(["--collect-only", "-p", "no:terminal", str(ROOT / "verify")], plugins=[collector])
    if code not in (0, 5):
        raise RuntimeError(f"collecting verify/ failed (pytest exit {code})")
    return collector.rows


def claims_table() -> str:
    implemented = collect_claims()
    by_spec: dict[str, list] = {}
    for cid, spec in registry().items():
        by_spec.setdefault(spec["spec"], []).append((cid, spec))
    unknown = by_spec.keys() - {p.spec for p in PAPERS}
    if unknown:
        raise ValueError(f"verify/spec_claims.json names specs missing from mechverify.papers.PAPERS: {sorted(unknown)}")
    lines = []
    for p in PAPERS:
        rows = by_spec.get(p.spec, [])
        n_done = sum(cid in implemented for cid, _ in rows)
        lines += [f"**[{p.title}]({p.docs})** ({p.authors}) — `{p.module}`, {n_done}/{len(rows)} implemented",
                  "", "| id | paper | provenance | spec tags | kind | test | status |",
                  "|---|---|---|---|---|---|---|"]
        for cid, spec in rows:
            tags = ", ".join(spec["tags"])
            if cid in implemented:
                r = implemented[cid]
                lines.append(f"| `{cid}` | {r['paper']} | {r['provenance']} | {tags} | {spec['kind']} | "
                             f"{function_link(r['test'])} | {r['status']} |")
            else:
                lines.append(f"| `{cid}` | — | — | {tags} | {spec['kind']} | — | not yet implemented |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def figures_table() -> str:
    from mechverify.paper_figures.__main__ import load_all
    from mechverify.paper_figures.registry import FIGURES

    load_all()
    lines = ["| figure | paper figure | command | claims | cost (--quick, 2 cores) |", "|---|---|---|---|---|"]
    order = {p.module: i for i, p in enumerate(PAPERS)}
    for f in sorted(FIGURES.values(), key=lambda f: order.get(f.paper, len(order))):   # stable within a paper
        claims = ", ".join(f"`{c}`" for c in f.claims)
        lines.append(f"| `{f.name}` | {f.paper_figure} | `python -m mechverify.paper_figures {f.name}` | {claims} | {f.cost} |")
    return "\n".join(lines) + "\n"


def _gate_cell(entries: list[dict]) -> str:
    """The gate numbers of the first entry, each distinct gate once: ``met loss=0.12 target=0.2``
    (the rule's wording is left out: each gate's rule is in the section on convergence gates)."""
    gates = (entries[0].get("gate") or {}) if entries else {}
    cells = []
    for gate in gates.values():
        numbers = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in gate.items() if k not in ("met", "rule"))
        cell = f"{'met' if gate['met'] else 'unmet'} {numbers}".strip()
        if cell not in cells:
            cells.append(cell)
    return "; ".join(cells) or "—"


def trained_table() -> str:
    """Every trained claim: its quick-scale verdict (with the gate's numbers) and its paper-scale
    verdict over the training seeds, both from the ledger (``verify/ledger.json``); an entry
    whose test or run code changed since it was recorded shows as ``stale``."""
    from mechverify import ledger

    data = ledger.load(ROOT / ledger.LEDGER)
    quick, paper = ledger.by_claim(data, "quick"), ledger.by_claim(data, "paper")
    lines = ["| claim | test | quick verdict | quick gate | paper verdict (training seeds) |", "|---|---|---|---|---|"]
    for cid, r in sorted(collect_claims().items()):
        if r["kind"] != "trained":
            continue
        lines.append(f"| `{cid}` | {function_link(r['test'])} | {ledger.summary(quick.get(cid, []), root=ROOT)} | "
                     f"{_gate_cell(quick.get(cid, []))} | {ledger.summary(paper.get(cid, []), root=ROOT)} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    for name, table in (("claims-table", claims_table()), ("trained-table", trained_table()),
                        ("figures-table", figures_table())):
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> block")
        text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.readme_tables")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="README")
    group.add_argument("--check", type=Path, metavar="README")
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text(render(args.write.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    if args.check:
        current = args.check.read_text(encoding="utf-8")
        if render(current) != current:
            print(f"{args.check} tables are stale: run make readme", file=sys.stderr)
            return 1
        return 0
    print(claims_table())
    print(trained_table())
    print(figures_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
