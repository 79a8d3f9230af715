"""The docs pages agree with the code: one page per entry of ``mechverify.papers.PAPERS``,
every registered claim in its page's §7 table with the kind, the provenance (in bold) and the
test function that the ``claim`` marker in ``verify/`` carries, and every relative link
resolves.  Static (ast) only: no collection, no torch."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mechverify.papers import PAPERS, paper, paper_of_claim
from verify.claims import registry

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| (\d+) \| `([^`]+)` \| (.+?) \| (exact|statistical|trained) \| (.+?) \| "
                 r"`(\w+)` in \[([\w.]+)\]\(\.\./verify/([\w.]+)\) \|$")


def _markers() -> dict[str, dict]:
    """claim id -> {function, file, provenance, kind}, read from the decorators in verify/."""
    out = {}
    for path in sorted((ROOT / "verify").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.claim":
                    kw = {k.arg: k.value for k in dec.keywords}
                    out[ast.literal_eval(kw["id"])] = {
                        "function": node.name, "file": path.name,
                        "provenance": ast.literal_eval(kw["provenance"]), "kind": ast.literal_eval(kw["kind"])}
    return out


def _rows(page: Path) -> dict[str, tuple]:
    rows = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            number, cid, _, kind, provenance, function, shown, target = m.groups()
            assert shown == target, f"{page.name}: link text {shown} points at {target}"
            bold = re.findall(r"\*\*([\w-]+)\*\*", provenance)
            rows[cid] = (int(number), kind, bold, function, target,
                         [t.strip("* ") for t in provenance.split(",")])
    return rows


def test_one_page_per_paper():
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages == {Path(p.docs).name for p in PAPERS}
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for p in PAPERS:
        assert f"]({p.module}.md)" in index


@pytest.mark.parametrize("entry", PAPERS, ids=[p.module for p in PAPERS])
def test_claims_table_matches_markers(entry):
    rows = _rows(ROOT / entry.docs)
    registered = {cid: spec for cid, spec in registry().items() if spec["spec"] == entry.spec}
    assert set(rows) == set(registered), f"{entry.docs} §7 differs from verify/spec_claims.json"
    assert sorted(r[0] for r in rows.values()) == list(range(1, len(rows) + 1))
    markers = _markers()
    for cid, (_, kind, bold, function, target, tags) in rows.items():
        spec = registered[cid]
        assert kind == spec["kind"], cid
        assert tags == spec["tags"], f"{cid}: tags {tags} differ from the registry's {spec['tags']}"
        marker = markers.get(cid)
        if marker is None:          # not implemented yet: nothing to link
            continue
        assert (function, target) == (marker["function"], marker["file"]), cid
        assert bold == [marker["provenance"]], f"{cid}: bold tag {bold} but the marker says {marker['provenance']}"


def test_relative_links_resolve():
    for page in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_paper_lookup():
    assert paper("pto").module == "sparse_regression"
    assert paper("meta_learning_norms.md").key == "metanorm"
    assert paper_of_claim("gd-icl/vo-exact").docs == "docs/gd_icl.md"
    with pytest.raises(ValueError, match="name"):
        paper("sparse")
    with pytest.raises(TypeError, match="name"):
        paper(3)
    with pytest.raises(ValueError, match="claim_id"):
        paper_of_claim("no-slash")
