"""The mutation-testing tool (``mutation/``): its mutants and its copy of the repository."""

import difflib
import json

from mutation.mutants import mutants

SOURCE = '''"""Docstring with 1 + 2."""
import numpy as np


def f(x: int = 3, ys=(1, 2)) -> float:
    """Doc 5 > 4."""
    if x < 0 or not ys:
        raise ValueError(f"x must be >= {0}; got {x - 1}")
    total = -x * 2.5 + np.max(ys[1:3])
    total += 1
    return total  # pragma: no mutate
'''


def _changed_lines(mutated):
    diff = difflib.ndiff(SOURCE.splitlines(), mutated.splitlines())
    return [line[2:] for line in diff if line.startswith("+ ")]


def test_each_mutant_changes_one_line_and_compiles():
    found = mutants(SOURCE)
    assert found
    for m in found:
        changed = _changed_lines(m.source)
        assert len(changed) == 1, m.id
        compile(m.source, "<m>", "exec")
        assert SOURCE.splitlines()[m.line - 1].strip() == m.line_source


def test_operators():
    described = {(m.line, m.description) for m in mutants(SOURCE)}
    expected = {(5, "3 -> 4"), (5, "1 -> 2"), (7, "< -> <="), (7, "or -> and"), (7, "drop not"),
                (9, "drop unary -"), (9, "* -> /"), (9, "2.5 -> -2.5"), (9, "+ -> -"),
                (9, ".max -> .min"), (9, "swap slice bounds"), (10, "+= -> -="), (10, "1 -> 2")}
    assert expected <= described
    lines = {line for line, _ in described}
    # docstrings, the raise message (f-string), annotations and the pragma line are left alone
    assert not lines & {1, 6, 8, 11}


def test_mutated_segment_is_the_node():
    m = next(m for m in mutants(SOURCE) if m.description == "swap slice bounds")
    assert _changed_lines(m.source) == ["    total = -x * 2.5 + np.max(ys[3:1])"]
    m = next(m for m in mutants(SOURCE) if m.description == "* -> /")
    assert _changed_lines(m.source) == ["    total = (-x / 2.5) + np.max(ys[1:3])"]
    assert m.lines == (9, 9)


def test_equivalent_entries_match_module_mutation_line_and_column():
    from mutation.__main__ import equivalent_reason

    rec = {"operator": "const", "description": "1 -> 2", "line_source": "c = (a - 1) // k + 1"}
    entry = {"module": "m.py", "mutation": "const: 1 -> 2", "line_source": rec["line_source"], "reason": "why"}
    assert equivalent_reason([entry], "m.py", "const:3:20:1 -> 2", rec) == "why"      # no column: any
    assert equivalent_reason([entry], "other.py", "const:3:20:1 -> 2", rec) is None
    assert equivalent_reason([{**entry, "line_source": "x"}], "m.py", "const:3:20:1 -> 2", rec) is None
    pinned = {**entry, "column": 20}
    assert equivalent_reason([pinned], "m.py", "const:3:20:1 -> 2", rec) == "why"
    assert equivalent_reason([pinned], "m.py", "const:3:11:1 -> 2", rec) is None     # the other 1 on the line


def test_to_run_skips_decided_mutants_and_equivalent_survivors():
    from types import SimpleNamespace
    from mutation.__main__ import to_run

    line = "c = (a - 1) // k + 1"
    todo = [SimpleNamespace(id=i) for i in ("const:3:20:1 -> 2", "const:3:11:1 -> 2", "binop:3:7:- -> +", "new")]
    rec = lambda desc, op, status, digest: {"operator": op, "description": desc, "line_source": line,
                                              "status": status, "tests_digest": digest}
    entry = {"const:3:20:1 -> 2": rec("1 -> 2", "const", "survived", "old"),
             "const:3:11:1 -> 2": rec("1 -> 2", "const", "survived", "old"),
             "binop:3:7:- -> +": rec("- -> +", "binop", "killed", "old")}
    equivalent = [{"module": "m.py", "mutation": "const: 1 -> 2", "line_source": line, "reason": "why", "column": 20}]
    ids = lambda ms: [m.id for m in ms]
    # never run, and a survivor whose tests changed; not the equivalent survivor, not a killed one
    assert ids(to_run(todo, entry, "new", equivalent, "m.py")) == ["const:3:11:1 -> 2", "new"]
    assert ids(to_run(todo, entry, "old", equivalent, "m.py")) == ["new"]        # tests unchanged
    assert ids(to_run(todo, entry, "new", [], "m.py")) == ["const:3:20:1 -> 2", "const:3:11:1 -> 2", "new"]


def test_a_constant_under_unary_minus_is_mutated_in_place():
    # The "drop unary -" replacement is the operand node itself; the constant's own mutant must
    # still rewrite only the constant (an earlier generator moved the operand's location onto
    # the minus sign, so "-1.0 -> -(-1.0)" came out as "(-1.0)", an unchanged program).
    source = "y = -1.0\nz = x[:-1]\n"
    found = {m.description: m.source.splitlines() for m in mutants(source) if m.line == 1}
    assert found["drop unary -"][0] == "y = (1.0)"
    assert found["1.0 -> -1.0"][0] == "y = -(-1.0)"
    sliced = [m.source.splitlines()[1] for m in mutants(source) if m.line == 2 and m.operator == "const"]
    assert sliced == ["z = x[:-(2)]"]


def test_tests_are_selected_through_their_support_imports(tmp_path):
    from mutation.__main__ import tests_reaching

    files = {
        "mechverify/__init__.py": "",
        "mechverify/theory/__init__.py": "",
        "mechverify/theory/ref.py": "def f():\n    return 1\n",
        "mechverify/theory/other.py": "",
        "verify/__init__.py": "",
        "verify/support.py": "from mechverify.theory.ref import f\n",
        "verify/test_claim.py": "from verify.support import f\n",      # reaches ref through support
        "tests/test_direct.py": "from mechverify.theory import ref\n",  # imports it directly
        "tests/test_unrelated.py": "from mechverify.theory import other\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert tests_reaching(tmp_path, "mechverify.theory.ref") == ["tests/test_direct.py", "verify/test_claim.py"]


def test_baseline_lines_are_kept_relative_to_the_copy(tmp_path):
    """The baseline cache outlives the copy (a new temporary folder every run): traced lines
    must name files relative to it, or a cached file's tests seem to run no line at all."""
    from mutation.__main__ import Baseline

    a, b = tmp_path / "copy-a", tmp_path / "copy-b"
    rel = "mechverify/theory/ref.py"
    hits = {c: [(str(c / rel), 7), (str(c / rel), 3)] for c in (a, b)}
    views = [Baseline(c, tmp_path / "log", tmp_path / "cache.json").relative(hits[c]) for c in (a, b)]
    assert views[0] == views[1] == [(rel, 3), (rel, 7)]


def test_import_time_lines_are_kept_apart_from_the_test_that_imports(tmp_path):
    """A module first imported inside a test runs its module-level lines (defaults, decorators,
    class bodies) during that test; they must count as import-time lines, which every test of
    the file may reach, not as lines of that one test (a default-argument mutant was otherwise
    tried against the importing test only)."""
    import importlib.util
    import sys
    import threading
    from types import SimpleNamespace

    from mutation.__main__ import _Recorder

    mod = tmp_path / "lazy_mod.py"
    mod.write_text("import dataclasses\n\n\n@dataclasses.dataclass(frozen=True)\nclass C:\n"
                   "    a: int = 1\n\n\ndef f(x=2):\n    return x + 1\n")
    rec = _Recorder(tmp_path / "out.json", {str(mod)})
    try:
        rec.pytest_runtest_logstart("t::importer", None)
        spec = importlib.util.spec_from_file_location("lazy_mod", mod)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.f()
        rec.pytest_runtest_logreport(SimpleNamespace(nodeid="t::importer", duration=0.0, failed=False,
                                                     skipped=False, when="teardown"))
    finally:
        sys.settrace(None)
        threading.settrace(None)
    lines = {line for _, line in rec.tests["t::importer"]["lines"]}
    imported = {line for _, line in rec.imported}
    assert lines == {10}                       # the body of f, called by the test
    assert {4, 5, 6, 9} <= imported            # decorator, class line, class body, def line


def test_a_cached_function_is_charged_to_every_test_that_calls_it(tmp_path):
    """functools caches of the traced modules are emptied before each test, so the body of a
    cached function counts as a line of every test that calls it, not of the first one only
    (a later test that would kill a mutant of the body was otherwise never selected)."""
    import importlib.util
    import sys
    import threading
    from types import SimpleNamespace

    from mutation.__main__ import _Recorder

    mod = tmp_path / "cached_mod.py"
    mod.write_text("from functools import cache\n\n\n@cache\ndef f(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("cached_mod", mod)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cached_mod"] = module
    rec = _Recorder(tmp_path / "out.json", {str(mod)})
    try:
        spec.loader.exec_module(module)
        for test in ("t::first", "t::second"):
            rec.pytest_runtest_logstart(test, None)
            assert module.f(1) == 2
            rec.pytest_runtest_logreport(SimpleNamespace(nodeid=test, duration=0.0, failed=False,
                                                         skipped=False, when="teardown"))
    finally:
        sys.settrace(None)
        threading.settrace(None)
        del sys.modules["cached_mod"]
    assert {line for _, line in rec.tests["t::first"]["lines"]} == {6}
    assert {line for _, line in rec.tests["t::second"]["lines"]} == {6}


def test_report_can_hold_out_the_sample_the_branch_tests_were_written_against():
    from mutation.__main__ import ROOT, report, sample_position
    from mutation.mutants import source_hash

    rel = "theory/checks.py"
    source = (ROOT / rel).read_text(encoding="utf-8")
    found = mutants(source)
    pos = {m.id: sample_position(rel, m.line_source, m.operator, m.description) for m in found}
    low = next(m for m in found if pos[m.id] < 0.5)
    high = next(m for m in found if pos[m.id] >= 0.5)
    recs = {m.id: {"status": status, "status_before": status, "operator": m.operator, "line": m.line,
                   "description": m.description, "line_source": m.line_source}
            for m, status in [(low, "survived"), (high, "killed")]}
    results = {"modules": {rel: {source_hash(source): {"_total": len(found), **recs}}}}
    listed = [e for e in json.loads((ROOT / "mutation" / "equivalent.json").read_text()) if e["module"] == rel]
    assert not any(e["line_source"] in (low.line_source, high.line_source) for e in listed)   # neither is equivalent
    everything, held_out = report(results, [rel]), report(results, [rel], held_out=0.5)
    assert "| 2 | 1 | 0 | 1 | 0 | 50.0 % | 50.0 % |" in everything
    assert "| 1 | 1 | 0 | 0 | 0 | 100.0 % | 100.0 % |" in held_out and "Survivors" not in held_out


def test_report_counts_a_killed_mutant_as_killed_even_when_an_equivalent_entry_matches_it():
    from mutation.__main__ import EQUIVALENT, ROOT, load_json, report
    from mutation.mutants import source_hash

    # theory/symbolic/lsa_optimum.py holds the line "s = sigma if noise else sp.Integer(0)" twice
    # (the same text and column); equivalent.json lists its 0 -> 1 as equivalent (in the gradient
    # identities), and a killed copy of that mutant must still count as killed
    rel = "theory/symbolic/lsa_optimum.py"
    source = (ROOT / rel).read_text(encoding="utf-8")
    found = [m for m in mutants(source) if m.line_source == "s = sigma if noise else sp.Integer(0)"
             and m.description == "0 -> 1"]
    assert len(found) == 2
    assert any(e["module"] == rel and e["line_source"] == found[0].line_source for e in load_json(EQUIVALENT, []))
    recs = {m.id: {"status": status, "status_before": status, "operator": m.operator, "line": m.line,
                   "description": m.description, "line_source": m.line_source}
            for m, status in zip(found, ["killed", "survived"])}
    results = {"modules": {rel: {source_hash(source): {"_total": 360, **recs}}}}
    assert "| 2 | 1 | 0 | 0 | 1 | 100.0 % | 100.0 % |" in report(results, [rel])


def test_the_copy_holds_every_local_package_the_tests_import():
    """A test file that imports a top-level package of the checkout missing from the copy fails
    its baseline there and is silently left out (tests/test_steps_to_gate.py and ``bench`` did)."""
    import ast
    import shutil
    from pathlib import Path

    from mutation.__main__ import ROOT, make_copy

    copy = make_copy()
    try:
        for test in sorted((ROOT / "tests").glob("test_*.py")) + sorted((ROOT / "verify").glob("test_*.py")):
            tree = ast.parse(test.read_text(encoding="utf-8"))
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module.split(".")[0] for n in ast.walk(tree)
                      if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
            if "mechverify" not in names:           # never selected for a module of the package
                continue
            local = {m for m in names if (ROOT / m / "__init__.py").exists()}
            assert all((Path(copy) / m / "__init__.py").exists() for m in local), (test.name, local)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
