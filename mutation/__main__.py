"""Mutation testing of the references and constructions: ``python -m mutation`` (``make mutation``).

For each module of ``theory/`` and ``constructions/`` (or the ones named on the command
line), every one-line mutant of ``mutation.mutants`` is written into a *copy* of the
repository under a temporary folder (never into the checkout), and the tests that reach
that module (``tests/*.py``, ``verify/test_*.py`` whose imports lead to it, transitively; of
those, the tests whose unmutated run executes the mutated line, or all of them for a line run at
import time: a default, a decorator, a class body) run against it with ``-x``, the ``dev``
hypothesis profile and ``-m "not trained and not slow"``.  A mutant is *killed* when a test
fails (a timeout counts as killed, reported apart), *survived* when they all pass.

The copy lays the package out as installed (``<tmp>/mechverify/theory``, ...), first on
``sys.path``, so ``mechverify.*`` resolves to it before the editable install's finder; the
run checks this at start (``__file__`` of an imported module, and with ``--self-check`` a
deliberately broken module must fail its tests).  Test processes are forked from one parent
that has imported numpy/torch/scipy/sympy/pytest once (not the package), so a mutant costs
its tests, not the interpreter start.

Results persist in ``mutation/results.json`` keyed on the module's source hash and the
mutant id: a re-run skips mutants already decided for unchanged source (a survivor is
re-tried when the selected tests changed), so the run can stop at any time and resume.
``mutation/equivalent.json`` lists the mutants shown equivalent by reasoning; they are left
out of the kill rate.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from tqdm import tqdm

from mutation.mutants import Mutant, mutants, source_hash

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
EQUIVALENT = HERE / "equivalent.json"
PACKAGE_DIRS = ("theory", "constructions", "training", "paper_figures")
# Priority order of the default run: small central references first; the construction
# modules under refactoring (modules.py, kernel.py) last.
PRIORITY = ("theory/algorithms/regression.py", "theory/algorithms/hmm.py", "theory/tasks/",
            "theory/symbolic/", "theory/algorithms/", "theory/dynamics/", "theory/",
            "constructions/", "constructions/modules.py", "constructions/kernel.py")
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "--hypothesis-profile", "dev",
               "-m", "not trained and not slow", "-W", "ignore::pytest.PytestUnraisableExceptionWarning"]


# ---------------------------------------------------------------- modules and tests

def _installed(rel: str) -> str:
    """A repository path as a path inside the installed package: ``mechverify/ledger.py`` ->
    ``ledger.py`` (the package's own modules); ``theory/...`` and the like stay."""
    return rel[len("mechverify/"):] if rel.startswith("mechverify/") else rel


def module_name(rel: str) -> str:
    """theory/algorithms/hmm.py -> mechverify.theory.algorithms.hmm; mechverify/ledger.py -> mechverify.ledger"""
    return "mechverify." + _installed(rel)[:-3].replace("/", ".")


def default_modules() -> list[str]:
    files = sorted(str(p.relative_to(ROOT)) for d in ("theory", "constructions")
                   for p in (ROOT / d).rglob("*.py") if p.name != "__init__.py")

    def rank(rel):
        best = max((len(p), i) for i, p in enumerate(PRIORITY) if rel.startswith(p))
        return best[1], rel
    return sorted(files, key=rank)


def _imports(path: Path) -> set[str]:
    """Every module a file imports (``from a.b import c`` gives a.b and a.b.c)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_files(root: Path) -> list[str]:
    return sorted([str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")]
                  + [str(p.relative_to(root)) for p in (root / "verify").glob("test_*.py")])


def _source(copy: Path, module: str) -> Path | None:
    """The copy's file of an importable name (mechverify.x.y or verify.x), if any."""
    parts = module.split(".")
    if parts[0] not in ("mechverify", "verify"):
        return None
    base = copy.joinpath(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def import_closure(copy: Path, start: list[Path]) -> set[Path]:
    """The files of the copy that ``start`` imports, transitively (``start`` included): a
    test reaches a module through the support modules and packages it imports, not only
    through its own import lines."""
    seen, stack = set(), list(start)
    while stack:
        p = stack.pop()
        if p in seen or not p.is_file():
            continue
        seen.add(p)
        if p.suffix == ".py":
            for name in _imports(p):
                src = _source(copy, name)
                while src is None and "." in name:  # a name inside a module, or a package
                    name = name.rpartition(".")[0]
                    src = _source(copy, name)
                if src is not None:
                    stack.append(src)
                    # a package import runs its __init__ and the parents' __init__
                    stack.extend(q / "__init__.py" for q in src.parents if copy in q.parents)
    return seen


def tests_reaching(copy: Path, module: str) -> list[str]:
    """The test files whose import closure contains ``module`` (which of their tests execute
    which line is then read from the baseline's trace)."""
    target = _source(copy, module)
    return [t for t in test_files(copy) if target in import_closure(copy, [copy / t])]


# Bumped when the tool's test selection changes, so that every survivor is re-tried with it
# (2: transitive imports and baseline lines relative to the copy; 3: import-time lines kept
# apart, also for a module first imported inside a test; 4: functools caches of the traced
# modules emptied before each baseline test).
SELECTION_VERSION = "4"
NEW_TESTS = "tests/test_branches_"  # the tests added to kill survivors (the "after" stage)


def _is_new(nodeid: str) -> bool:
    return nodeid.startswith(NEW_TESTS)


def tests_digest(root: Path, tests: list[str]) -> str:
    """Hash of the selected test files and the shared test support they run with."""
    support = sorted(p for p in (root / "verify").glob("*.py") if not p.name.startswith("test_"))
    h = hashlib.sha256(SELECTION_VERSION.encode())
    for p in [root / t for t in tests] + support + [root / "conftest.py", root / "mechverify" / "pytest_plugin.py"]:
        if p.exists():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the copy

def make_copy() -> Path:
    """A copy laid out as installed: <tmp>/mechverify/{theory,...}, verify/, tests/, and bench/
    (``tests/test_steps_to_gate.py`` imports it: without it that file fails its baseline in
    the copy and is left out of every module's tests)."""
    tmp = Path(tempfile.mkdtemp(prefix="mechverify-mutation-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "mechverify", tmp / "mechverify", ignore=ignore)
    for d in PACKAGE_DIRS:
        shutil.copytree(ROOT / d, tmp / "mechverify" / d, ignore=ignore)
    for d in ("verify", "tests", "bench"):
        shutil.copytree(ROOT / d, tmp / d, ignore=ignore)
    for f in ("conftest.py", "pyproject.toml", "README.md", "Makefile"):
        shutil.copy2(ROOT / f, tmp / f)
    return tmp


def copy_path(copy: Path, rel: str) -> Path:
    return copy / "mechverify" / _installed(rel)


_STAMP = [0]


def write_source(path: Path, text: str, original_mtime: int | None = None) -> None:
    """Write a module of the copy.  Python trusts a cached .pyc while the source's mtime (whole
    seconds) and size match, so each mutant gets its own mtime (never used before in this run)
    and the original gets its original mtime back, whose .pyc then stays valid."""
    path.write_text(text, encoding="utf-8")
    if original_mtime is None:
        _STAMP[0] += 1
        original_mtime = 2_000_000_000 + _STAMP[0]
    os.utime(path, (original_mtime, original_mtime))


# ---------------------------------------------------------------- running tests in a fork

class _Recorder:
    """pytest plugin for the child: the first failing test, and with ``traced`` files the
    lines of those files each test executes (plus its outcome and time) as JSON."""

    def __init__(self, out: Path, traced: set[str] | None):
        self.out, self.traced = out, traced
        self.first = ""
        self.tests: dict[str, dict] = {}
        self.hits: set = set()
        # Import-time lines (module and class bodies: defaults, decorators, constants) apart from
        # the tests' lines: a module first imported inside a test function (a lazy import) runs
        # them during that one test, yet every test that calls into the module depends on them.
        self.imported: set = set()
        if traced:
            sys.settrace(self._call)
            threading.settrace(self._call)

    def _call(self, frame, event, arg):
        return self._line if frame.f_code.co_filename in self.traced else None

    def _line(self, frame, event, arg):
        if event == "line":
            at_import = not frame.f_code.co_flags & inspect.CO_NEWLOCALS  # module or class body
            (self.imported if at_import else self.hits).add((frame.f_code.co_filename, frame.f_lineno))
        return self._line

    def pytest_runtest_logstart(self, nodeid, location):
        self.hits = set()
        if self.traced:
            self._clear_caches()
        self.tests[nodeid] = {"outcome": "passed", "seconds": 0.0}

    def _clear_caches(self) -> None:
        """Empty the functools caches of the traced modules before each test.  A cached
        function's body otherwise runs only in the first test that calls it, so a later test
        that reads the cached value (and would kill a mutant of the body) is never selected."""
        for mod in list(sys.modules.values()):
            if getattr(mod, "__file__", None) in self.traced:
                for obj in list(vars(mod).values()):
                    if callable(getattr(obj, "cache_clear", None)):
                        obj.cache_clear()

    def pytest_runtest_logreport(self, report):
        rec = self.tests.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        rec["seconds"] += report.duration
        if report.failed:
            rec["outcome"] = "failed"
            self.first = self.first or report.nodeid
        elif report.skipped and report.when != "teardown":
            rec["outcome"] = "skipped"
        if report.when == "teardown":
            rec["lines"] = sorted(self.hits)

    def pytest_collectreport(self, report):
        if report.failed:
            self.first = self.first or f"collecting {report.nodeid}"

    def pytest_sessionfinish(self):
        self.out.write_text(json.dumps({"first": self.first, "tests": self.tests,
                                        "imported": sorted(self.imported)}))


def run_tests(copy: Path, args: list[str], timeout: float, log: Path,
              traced: set[str] | None = None) -> tuple[str, float, dict]:
    """Run pytest on ``args`` (files or node ids) in the copy, in a forked child.

    Returns (outcome, seconds, record): outcome "passed", "failed", "timeout", "empty"
    (nothing collected) or "error" (pytest usage/internal error); record as _Recorder writes."""
    out = copy / ".record.json"
    out.unlink(missing_ok=True)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 3
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy)
            sys.pycache_prefix = str(copy / ".pycache")  # see write_source for why it is never stale
            sys.path[:] = [str(copy)] + [p for p in sys.path if p not in ("", str(ROOT))]
            import pytest
            code = int(pytest.main(["--rootdir", str(copy), "-c", str(copy / "pyproject.toml"),
                                    *PYTEST_ARGS, *args], plugins=[_Recorder(out, traced)]))
        except BaseException:  # noqa: BLE001 - report anything as a failure of the child
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start, {}
        time.sleep(0.05)
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    record = json.loads(out.read_text()) if out.exists() else {}
    outcome = {0: "passed", 1: "failed", 2: "failed", 5: "empty"}.get(code, "error")
    if record.get("first"):  # a test or a collection failed (a node id whose file fails to
        outcome = "failed"   # import is reported as a usage error, exit code 4)
    return outcome, seconds, record


def check_imports_copy(copy: Path, module: str) -> None:
    """Fail unless ``module`` imported the way the tests import it comes from the copy."""
    import subprocess
    code = (f"import sys; sys.path[:] = [{str(copy)!r}] + [p for p in sys.path if p not in ('', {str(ROOT)!r})];"
            f"import importlib; m = importlib.import_module({module!r}); print(m.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True, text=True,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    where = out.stdout.strip()
    if out.returncode or not where.startswith(str(copy)):
        raise SystemExit(f"{module} does not import from the copy ({where or out.stderr[-500:]})")


# ---------------------------------------------------------------- results

def load_json(path: Path, default):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def save_results(results: dict, path: Path | None = None) -> None:
    path = Path(path or results.get("_path") or RESULTS)
    results = {k: v for k, v in results.items() if k != "_path"}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def merge_results(paths: list[Path]) -> dict:
    """One results dict from several runs over disjoint modules (parallel workers); for a module
    in several files the file listed last wins."""
    merged = load_json(RESULTS, {"version": 1, "modules": {}})
    for path in paths:
        merged["modules"].update(load_json(path, {"modules": {}})["modules"])
    return merged


def equivalent_reason(equivalents: list[dict], rel: str, key: str, rec: dict) -> str | None:
    """The reason an entry of ``equivalent.json`` gives for the mutant ``key`` (its id,
    ``operator:line:column:description``), matched on module, mutation and line text, and on the
    column where the entry names one (two mutants of one kind on one line)."""
    column = int(key.split(":")[2])
    for e in equivalents:
        if (e["module"] == rel and e["mutation"] == f"{rec['operator']}: {rec['description']}"
                and e["line_source"] == rec["line_source"] and e.get("column", column) == column):
            return e["reason"]
    return None


def to_run(todo: list, entry: dict, digest: str, equivalents: list[dict], rel: str) -> list:
    """The mutants of ``todo`` to run: those never run on this source, and survivors whose
    selected tests changed (``digest``) unless ``equivalent.json`` lists them (no test can kill
    an equivalent mutant, so re-running it only spends the budget)."""
    def retry(m):
        rec = entry[m.id]
        return (rec["status"] == "survived" and rec["tests_digest"] != digest
                and equivalent_reason(equivalents, rel, m.id, rec) is None)
    return [m for m in todo if m.id not in entry or retry(m)]


def sample_position(rel: str, line_source: str, operator: str, description: str) -> float:
    """Where a mutant falls in [0, 1): the hash of (module, line text, mutation), stable under
    edits elsewhere in the file.  ``--sample F`` runs the mutants below F."""
    key = f"{rel}|{line_source}|{operator}|{description}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def sampled(rel: str, mutant: Mutant, fraction: float) -> bool:
    return fraction >= 1 or sample_position(rel, mutant.line_source, mutant.operator, mutant.description) < fraction


# ---------------------------------------------------------------- report

def report(results: dict, modules: list[str] | None = None, held_out: float = 0.0) -> str:
    """The kill-rate table (and the survivors).  ``held_out = F`` leaves out the mutants of the
    ``--sample F`` sample, those the branch tests were written against, so that the table
    measures the tests on mutants nobody looked at."""
    equivalents = load_json(EQUIVALENT, [])
    rows, survivors = [], []
    totals = dict.fromkeys(("run", "killed", "timeout", "survived", "equivalent", "before"), 0)
    for rel in modules or list(results["modules"]):
        entry = results["modules"].get(rel)
        path = ROOT / rel
        if entry is None or not path.exists():
            continue
        current = source_hash(path.read_text(encoding="utf-8"))
        recs = entry.get(current) or entry[max(entry, key=lambda h: entry[h].get("_time", 0))]
        stale = current not in entry
        ids = None if stale else {m.id for m in mutants(path.read_text(encoding="utf-8"))}
        decided = {k: r for k, r in recs.items() if not k.startswith("_") and (ids is None or k in ids)
                   and sample_position(rel, r["line_source"], r["operator"], r["description"]) >= held_out}
        n = {"killed": 0, "timeout": 0, "survived": 0, "equivalent": 0}
        before = {"killed": 0, "survived": 0}
        for k, r in decided.items():
            # only a survivor can be equivalent: an entry of equivalent.json whose pattern (module,
            # mutation, line text) also matches a killed mutant elsewhere does not discount that one
            reason = r["status"] == "survived" and equivalent_reason(equivalents, rel, k, r)
            if reason:
                n["equivalent"] += 1
                continue
            n[r["status"]] += 1
            before["killed" if r.get("status_before", r["status"]) in ("killed", "timeout") else "survived"] += 1
            if r["status"] == "survived":
                survivors.append(f"  {rel}:{r['line']}  {r['operator']}: {r['description']}   | {r['line_source']}")
        live = n["killed"] + n["timeout"] + n["survived"]
        rate = 100 * (n["killed"] + n["timeout"]) / live if live else float("nan")
        rate0 = 100 * before["killed"] / live if live else float("nan")
        rows.append(f"| `{rel}`{' (stale)' if stale else ''} | {recs.get('_total', '?')} | {len(decided)} | "
                    f"{n['killed']} | {n['timeout']} | {n['survived']} | {n['equivalent']} | "
                    f"{rate0:.1f} % | {rate:.1f} % |")
        for key, value in [("run", len(decided)), ("before", before["killed"])] + list(n.items()):
            totals[key] += value
    live = totals["killed"] + totals["timeout"] + totals["survived"]
    if live:
        rows.append(f"| all | | {totals['run']} | {totals['killed']} | {totals['timeout']} | {totals['survived']} | "
                    f"{totals['equivalent']} | {100 * totals['before'] / live:.1f} % | "
                    f"{100 * (totals['killed'] + totals['timeout']) / live:.1f} % |")
    head = ("| module | mutants | run | killed | timeout | survived | equivalent | kill rate before | kill rate |\n"
            "|---|---|---|---|---|---|---|---|---|")
    text = head + "\n" + "\n".join(rows)
    if survivors:
        text += "\n\nSurvivors:\n" + "\n".join(survivors)
    return text


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="files relative to the repository root "
                    "(default: every module of theory/ and constructions/, in priority order)")
    ap.add_argument("--sample", type=float, default=1.0,
                    help="fraction of each module's mutants to run (deterministic hash sample)")
    ap.add_argument("--budget", type=float, default=float("inf"),
                    help="stop starting new mutants after this many seconds (resume later)")
    ap.add_argument("--timeout-factor", type=float, default=3.0,
                    help="per-mutant timeout = factor x the unmutated tests' time + 20 s")
    ap.add_argument("--self-check", action="store_true",
                    help="first run each module's tests with the module broken (must fail)")
    ap.add_argument("--report", action="store_true", help="print the table from the results file and stop")
    ap.add_argument("--held-out", type=float, default=0.0, metavar="F",
                    help="with --report: leave out the --sample F mutants (those the branch tests were "
                         "written against)")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="results file (default mutation/results.json); parallel workers over disjoint "
                         "modules each take their own, then --merge")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                    help="merge these results files into mutation/results.json and stop")
    args = ap.parse_args(argv)

    if args.merge:
        save_results(merge_results(args.merge), RESULTS)
        print(f"merged {len(args.merge)} files into {RESULTS}")
        return 0
    results = load_json(args.results, {"version": 1, "modules": {}})
    results["_path"] = str(args.results)
    modules = args.modules or default_modules()
    if args.report:
        print(report(results, modules if args.modules else None, args.held_out))
        return 0
    for rel in modules:
        if not (ROOT / rel).is_file() or not rel.endswith(".py"):
            raise SystemExit(f"modules: no such Python file {rel!r}")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    # Imported once in the parent so that each forked test run skips their start-up; the
    # package itself is never imported here.
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import scipy  # noqa: F401
    import sympy  # noqa: F401
    import torch
    torch.set_num_threads(1)

    cache = Path(os.environ.get("MECHVERIFY_CACHE") or Path.home() / ".cache" / "mechverify")
    copy = make_copy()
    os.environ["MECHVERIFY_CACHE"] = str(copy / ".cache")  # nothing of a mutant reaches the real cache
    log = copy / ".pytest.log"
    print(f"copy: {copy}", flush=True)
    baseline = Baseline(copy, log, cache / "mutation-baseline-v5.json")  # v5: every package module traced
    deadline = time.monotonic() + args.budget
    try:
        for rel in modules:
            if time.monotonic() > deadline:
                break
            run_module(rel, copy, log, baseline, results, args, deadline)
        print(report(results, modules), flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return 0


class Baseline:
    """Each test file run once unmutated in the copy, tracing the lines of every module of
    the package (theory/, constructions/, training/, the ledger, ...) each test executes.
    Cached in the cache folder per test file, keyed on the content of the files it imports
    (transitively), so that a resumed run re-runs only the files whose code changed."""

    def __init__(self, copy: Path, log: Path, cache: Path):
        self.copy, self.log, self.cache = copy, log, cache
        self.traced = {str(p) for p in (copy / "mechverify").rglob("*.py")}
        self.files: dict[str, dict] = load_json(cache, {})

    def digest(self, test: str) -> str:
        """Hash of the test file and of every file of the copy it imports, transitively,
        plus the pytest set-up (conftest, pyproject, the plugin)."""
        seen = import_closure(self.copy, [self.copy / test, self.copy / "conftest.py",
                                          self.copy / "pyproject.toml",
                                          self.copy / "mechverify" / "pytest_plugin.py"])
        h = hashlib.sha256()
        for p in sorted(seen):
            h.update(str(p.relative_to(self.copy)).encode() + p.read_bytes())
        return h.hexdigest()[:16]

    def relative(self, hits) -> list:
        """Traced (path, line) pairs with paths relative to the copy: the cache outlives the
        copy, whose folder is new in every run (absolute paths from an earlier run's copy
        never matched, so a cached file's tests looked as if they ran no line at all)."""
        return sorted((str(Path(p).relative_to(self.copy)), line) for p, line in hits)

    def file(self, test: str) -> dict:
        """{"outcome", "seconds", "tests": {nodeid: {...}}, "imported": [...]} for one file."""
        digest = self.digest(test)
        if self.files.get(test, {}).get("digest") != digest:
            outcome, sec, record = run_tests(self.copy, [test], 7200, self.log, self.traced)
            tests = record.get("tests", {})
            for t in tests.values():
                t["lines"] = self.relative(t.get("lines", []))
            self.files[test] = {"digest": digest, "outcome": outcome, "seconds": round(sec, 1),
                                "tests": tests, "imported": self.relative(record.get("imported", []))}
            print(f"  baseline {test}: {outcome} in {sec:.0f} s", flush=True)
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            self.cache.write_text(json.dumps(self.files))
        return self.files[test]


def run_module(rel, copy, log, baseline, results, args, deadline) -> None:
    name = module_name(rel)
    target = str(copy_path(copy, rel).relative_to(copy))
    original = copy_path(copy, rel).read_text(encoding="utf-8")
    mtime = int(copy_path(copy, rel).stat().st_mtime)
    shash = source_hash(original)
    files = tests_reaching(copy, name)
    if not files:
        print(f"{rel}: no test file reaches {name}; skipped", flush=True)
        return
    digest = tests_digest(copy, files)
    entry = results["modules"].setdefault(rel, {}).setdefault(shash, {})
    every = mutants(original)
    entry["_total"] = len(every)
    ids = {m.id for m in every}
    for k in [k for k in entry if not k.startswith("_") and k not in ids]:
        del entry[k]  # made by an older mutant generator: no longer a mutant of this source
    todo = [m for m in every if sampled(rel, m, args.sample)]
    pending = to_run(todo, entry, digest, load_json(EQUIVALENT, []), rel)
    print(f"{rel}: {len(every)} mutants, {len(todo)} sampled, {len(pending)} to run; "
          f"test files: {' '.join(files)}", flush=True)
    if not pending:
        return
    check_imports_copy(copy, name)
    # Which passing test executes which line of the module; import-time lines separately.
    covering: dict[int, list[str]] = {}
    imported: set[int] = set()
    seconds: dict[str, float] = {}
    for f in files:
        b = baseline.file(f)
        if b["outcome"] not in ("passed", "empty", "failed"):
            print(f"  baseline: {f} {b['outcome']}; left out", flush=True)
            continue
        imported.update(line for path, line in b["imported"] if path == target)
        for nodeid, t in b["tests"].items():
            if t["outcome"] != "passed":
                continue  # a test failing (or skipped) unmutated cannot kill anything
            seconds[nodeid] = t["seconds"]
            for path, line in t.get("lines", []):
                if path == target:
                    covering.setdefault(line, []).append(nodeid)
    every_test = sorted(seconds, key=seconds.get)
    if args.self_check:
        write_source(copy_path(copy, rel), "raise RuntimeError('mutation self-check')\n" + original)
        outcome, _, record = run_tests(copy, every_test[:1] or files, 600, log)
        write_source(copy_path(copy, rel), original, mtime)
        if outcome != "failed":
            raise SystemExit(f"self-check: broken {rel} did not fail its tests ({outcome}):\n"
                             + log.read_text()[-3000:])
        print(f"  self-check: broken module fails ({record.get('first')})", flush=True)
    for m in tqdm(pending, desc=rel, unit="mutant", mininterval=5):
        if time.monotonic() > deadline:
            break
        span = range(m.lines[0], m.lines[1] + 1)
        chosen = {t for line in span for t in covering.get(line, [])}
        if not chosen and any(line in imported for line in span):
            chosen = set(every_test)  # module-level code: every test of the files may reach it
        tests = sorted(chosen, key=seconds.get)
        # Two stages: the tests as they were, then (if the mutant survived) the branch tests
        # added against survivors, so one run gives the kill rate before and after them.
        stages = [[t for t in tests if not _is_new(t)], [t for t in tests if _is_new(t)]]
        status_before, status, record, sec = None, "survived", {"first": "not executed by any test"}, 0.0
        for stage in stages:
            if not stage:
                status_before = status_before or status
                continue
            timeout = args.timeout_factor * sum(seconds[t] for t in stage) + 20
            write_source(copy_path(copy, rel), m.source)
            try:
                outcome, s, record = run_tests(copy, stage, timeout, log)
            finally:
                write_source(copy_path(copy, rel), original, mtime)
            sec += s
            if outcome == "error":
                print(f"  {m.id}: pytest error, see the log:\n{log.read_text()[-2000:]}", flush=True)
                status = "error"
                break
            status = {"failed": "killed", "timeout": "timeout", "passed": "survived", "empty": "survived"}[outcome]
            status_before = status_before or status
            if status != "survived":
                break
        if status == "error":
            continue
        entry[m.id] = {"status": status, "operator": m.operator, "line": m.line,
                       "description": m.description, "line_source": m.line_source,
                       "killed_by": record.get("first", ""), "n_tests": len(tests),
                       "seconds": round(sec, 1), "tests_digest": digest,
                       "status_before": status_before}
        entry["_time"] = time.time()
        save_results(results)


if __name__ == "__main__":
    sys.exit(main())
