"""The claim harness (mechverify.pytest_plugin): marker validation against a registry, the
claims table and the JSON report."""

import json

import pytest

pytest_plugins = ["pytester"]

REGISTRY = [
    {"id": "gd-icl/vo-exact", "kind": "exact", "tags": ["paper-code", "reconstructed"]},
    {"id": "gd-icl/zfb-optimum", "kind": "trained", "tags": ["paper"]},
]
GOOD = '''
import pytest

@pytest.mark.claim(id="gd-icl/vo-exact", paper="von-oswald-2023", provenance="paper-code", kind="exact")
def test_a(record_claim):
    record_claim(1e-15, 1e-12)
    record_claim(3e-13, 1e-12)
    record_claim(2e-15, 1e-14)

@pytest.mark.claim(id="gd-icl/zfb-optimum", paper="zfb-2024", provenance="paper", kind="trained")
@pytest.mark.xfail(reason="measured 0.2 > 0.05", strict=True)
def test_b(record_claim):
    record_claim(0.2, 0.05)
    assert False
'''


@pytest.fixture
def run(pytester):
    """Run a test file in a project whose ini names a claim registry."""
    pytester.makefile(".json", registry=json.dumps(REGISTRY))
    pytester.makeini("[pytest]\nmechverify_registry = registry.json\n")

    def _run(source, *args):
        pytester.makepyfile(test_claims=source)
        return pytester.runpytest("-p", "no:cacheprovider", *args)
    return _run


def test_table_and_report(run, pytester):
    result = run(GOOD, "--claims-report", "report.json")
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*claims*", "*gd-icl/vo-exact*exact*paper-code*passed*", "*gd-icl/zfb-optimum*finding*"])
    rows = {r["id"]: r for r in json.loads((pytester.path / "report.json").read_text())}
    a = rows["gd-icl/vo-exact"]
    assert set(a) >= {"id", "paper", "provenance", "kind", "outcome", "worst_error", "tolerance", "n_instances"}
    # the worst instance is the one with the largest error / tolerance ratio (0.3), not the largest error
    assert (a["n_instances"], a["worst_error"], a["tolerance"]) == (3, 3e-13, 1e-12)
    assert rows["gd-icl/zfb-optimum"]["outcome"] == "finding"


def test_kind_is_a_marker(run):
    run(GOOD, "-m", "not trained").assert_outcomes(passed=1, deselected=1)


@pytest.mark.parametrize("marker, message", [
    ('id="gd-icl/vo-exact", paper="p", provenance="folklore", kind="exact"', "provenance must be one of"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="guess"', "kind must be one of"),
    ('id="gd-icl/no-such-claim", paper="p", provenance="paper", kind="exact"', "not in the registry"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper", kind="exact"', "not among the registry's tags"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="trained"', "differs from the registry"),
    ('id="gd-icl/vo-exact", provenance="paper-code", kind="exact"', "missing"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="exact", findings={"huge": "x"}',
     "findings scale must be one of"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="exact", findings={"quick": ""}',
     "non-empty text"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="exact", findings="x"', "findings must be a dict"),
    ('id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="exact", recorded=1', "recorded must be a bool"),
])
def test_invalid_marker_stops_collection(run, marker, message):
    result = run(f"import pytest\n@pytest.mark.claim({marker})\ndef test_x():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_without_registry_any_well_formed_id(pytester):
    source = ('import pytest\n@pytest.mark.claim(id="{}", paper="me-2025", provenance="paper", kind="exact")\n'
              'def test_x(record_claim):\n    record_claim(0.0, 1e-12)\n')
    pytester.makepyfile(test_ok=source.format("momentum/heavy-ball"))
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(test_ok=source.format("no slash"))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*claim id must look like 'key/slug'*"])


def test_unreadable_registry_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nmechverify_registry = missing.json\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mechverify_registry: cannot read*missing.json*"])


def test_duplicate_id_stops_collection(run):
    source = "import pytest\n" + "".join(
        f'@pytest.mark.claim(id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="exact")\n'
        f"def test_{i}():\n    pass\n" for i in range(2))
    result = run(source)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*duplicate claim id*"])


def test_parametrizations_are_one_claim(run, pytester):
    source = '''
import pytest

@pytest.mark.claim(id="gd-icl/vo-exact", paper="p", provenance="paper-code", kind="exact")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_a(record_claim, k):
    record_claim(k / 1e13, 1e-12)
    assert k != 3
'''
    result = run(source, "--claims-report", "r.json")
    result.assert_outcomes(passed=2, failed=1)
    (row,) = json.loads((pytester.path / "r.json").read_text())
    assert (row["outcome"], row["n_instances"], row["worst_error"]) == ("failed", 3, 3e-13)


def test_repository_registry_is_configured(pytestconfig):
    """This run's registry is the one pyproject.toml names, verify/spec_claims.json, and the
    ids of every claim marker in verify/ are in it (else collection would have stopped)."""
    from verify.claims import REGISTRY, registry

    assert pytestconfig.rootpath / pytestconfig.getini("mechverify_registry") == REGISTRY
    rows = registry()
    assert len(rows) > 100 and all(r["kind"] in ("exact", "statistical", "trained") for r in rows.values())
