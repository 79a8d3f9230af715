"""The verdicts of the claim harness (mechverify.pytest_plugin), run through pytester: passed,
finding, inconclusive, recorded, failed, skipped; gates, findings per scale, instance seeds."""

import json
import re

import hypothesis.core
import pytest
from hypothesis import settings

from mechverify.pytest_plugin import derive_seed

pytest_plugins = ["pytester"]

HEAD = "import pytest\n"


def claim(cid, **extra):
    more = "".join(f", {k}={v!r}" for k, v in extra.items())
    return f'@pytest.mark.claim(id="{cid}", paper="me-2025", provenance="paper", kind="trained"{more})\n'


@pytest.fixture
def report(pytester):
    """Run a test file; return (result, claims rows by id)."""
    def _run(source, *args):
        pytester.makepyfile(test_verdicts=HEAD + source)
        result = pytester.runpytest("-p", "no:cacheprovider", "--claims-report", "r.json", *args)
        path = pytester.path / "r.json"
        rows = {r["id"]: r for r in json.loads(path.read_text())} if path.exists() else {}
        return result, rows
    return _run


GATES = (claim("t/met") + "def test_met(record_claim):\n"
         "    record_claim.gate(True, loss=0.1, target=0.2, steps=600)\n    record_claim(0.01, 0.1)\n"
         + claim("t/unmet") + "def test_unmet(record_claim):\n"
         "    record_claim.gate(False, loss=0.5, target=0.2, delta=0.05, steps=600)\n    raise AssertionError('never')\n"
         + claim("t/unmet-finding", findings={"quick": "measured 0.5 > 0.2"}) + "def test_unmet_finding(record_claim):\n"
         "    record_claim.gate(False, loss=0.5, target=0.2)\n"
         + claim("t/met-finding", findings={"quick": "measured 0.5 > 0.2"}) + "def test_met_finding(record_claim):\n"
         "    record_claim.gate(True, loss=0.1, target=0.2)\n    record_claim(0.5, 0.2)\n    assert 0.5 <= 0.2\n")


def test_gates(report):
    result, rows = report(GATES)
    result.assert_outcomes(passed=1, xfailed=1)
    assert result.parseoutcomes()["inconclusive"] == 2
    outcomes = {cid: r["outcome"] for cid, r in rows.items()}
    assert outcomes == {"t/met": "passed", "t/unmet": "inconclusive", "t/unmet-finding": "inconclusive",
                        "t/met-finding": "finding"}
    assert rows["t/met"]["gate"] == {"test_met": {"met": True, "loss": 0.1, "target": 0.2, "steps": 600}}
    assert rows["t/unmet"]["gate"]["test_unmet"] == {"met": False, "loss": 0.5, "target": 0.2, "delta": 0.05,
                                                     "steps": 600}
    assert rows["t/met-finding"]["findings"] == {"test_met_finding": "measured 0.5 > 0.2"}
    result.stdout.fnmatch_lines(["*t/unmet *trained*inconclusive*UNMET loss=0.5 target=0.2 delta=0.05 steps=600*",
                                 "*t/unmet-finding*inconclusive*"])
    assert result.ret == pytest.ExitCode.OK


def test_strict_gates_fail_even_with_a_finding(report):
    result, rows = report(GATES, "--strict-gates")
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    assert rows["t/unmet"]["outcome"] == rows["t/unmet-finding"]["outcome"] == "failed"
    result.stdout.fnmatch_lines(["*convergence gate not met (loss=0.5, target=0.2, delta=0.05, steps=600)*"])


def test_gate_rejects_bad_arguments(report):
    result, _ = report(claim("t/a") + "def test_a(record_claim):\n"
                       "    with pytest.raises(TypeError, match='passed'):\n        record_claim.gate('yes')\n"
                       "    with pytest.raises(TypeError, match='gate number loss'):\n"
                       "        record_claim.gate(True, loss=[1.0])\n")
    result.assert_outcomes(passed=1)


def test_numpy_gate_numbers_are_stored_as_python(report):
    result, rows = report("import numpy as np\n" + claim("t/a") + "def test_a(record_claim):\n"
                          "    record_claim.gate(np.bool_(True), loss=np.float32(0.25), steps=np.int64(3))\n")
    result.assert_outcomes(passed=1)
    assert rows["t/a"]["gate"]["test_a"] == {"met": True, "loss": 0.25, "steps": 3}


def test_recorded(report):
    result, rows = report(claim("t/by-call") + "def test_a(record_claim):\n    record_claim.recorded()\n"
                          "    record_claim(0.3, float('inf'))\n"
                          + claim("t/by-marker", recorded=True) + "def test_b(record_claim):\n    pass\n"
                          + claim("t/failing", recorded=True) + "def test_c(record_claim):\n    assert False\n")
    result.assert_outcomes(failed=1)
    assert result.parseoutcomes()["recorded"] == 2
    assert {cid: r["outcome"] for cid, r in rows.items()} == {"t/by-call": "recorded", "t/by-marker": "recorded",
                                                              "t/failing": "failed"}


PER_SCALE = (claim("t/per-case", findings={"quick": {"b": "b fails at quick"}, "paper": "all fail at paper"})
             + '@pytest.mark.parametrize("case", ["a", "b"])\ndef test_cases(case):\n    assert case == "a"\n'
             + claim("t/xpass", findings={"quick": "should fail"}) + "def test_xpass():\n    pass\n")


def test_findings_per_scale_and_case(report):
    result, rows = report(PER_SCALE)
    result.assert_outcomes(passed=1, xfailed=1, failed=1)
    assert rows["t/per-case"]["outcome"] == "finding"
    assert rows["t/per-case"]["findings"] == {"test_cases[b]": "b fails at quick"}
    assert rows["t/xpass"]["outcome"] == "failed"          # a strict xfail that passes
    result.stdout.fnmatch_lines(["*XPASS(strict)*finding at --scale quick: should fail*"])

    result, rows = report(PER_SCALE, "--scale", "paper")
    # at paper scale the string applies to every case: a passes -> strict xpass -> failed
    result.assert_outcomes(xfailed=1, failed=1, passed=1)
    assert rows["t/per-case"]["outcome"] == "failed" and rows["t/xpass"]["outcome"] == "passed"


def test_plain_skip_and_inconclusive_prefix(report):
    result, rows = report(claim("t/skip") + "def test_a():\n    pytest.skip('no GPU')\n"
                          + claim("t/manual") + "def test_b():\n    pytest.skip('inconclusive: run too short')\n")
    assert {cid: r["outcome"] for cid, r in rows.items()} == {"t/skip": "skipped", "t/manual": "inconclusive"}


SEEDS = (claim("t/one") + "def test_one(instance_seed, record_claim):\n    print('SEED', instance_seed)\n"
         + claim("t/two") + '@pytest.mark.parametrize("k", [1, 2])\n'
         "def test_two(instance_seed, k):\n    print('SEED', instance_seed)\n"
         "def test_plain(instance_seed):\n    print('SEED', instance_seed)\n")


def _seeds(result):
    return [int(seed) for seed in re.findall(r"SEED (\d+)", result.stdout.str())]


def test_instance_seed(report):
    first, rows = report(SEEDS, "-s")
    again, rows_again = report(SEEDS, "-s")
    other, rows_other = report(SEEDS, "-s", "--hypothesis-seed", "7")
    named, _ = report(SEEDS, "-s", "--hypothesis-seed", "not-a-number")
    seeds = _seeds(first)
    assert len(seeds) == 4 and len(set(seeds)) == 4                 # per claim and parametrization
    assert _seeds(again) == seeds                                    # reproducible without a seed
    assert not set(_seeds(other)) & set(seeds)                      # a new hypothesis seed, new instances
    assert not set(_seeds(named)) & set(seeds + _seeds(other))
    assert rows["t/one"]["instance_seeds"] == [seeds[0]] and rows["t/two"]["instance_seeds"] == seeds[1:3]
    timeless = [{c: {k: v for k, v in r.items() if k != "wall_s"} for c, r in x.items()} for x in (rows, rows_again)]
    assert timeless[0] == timeless[1] and rows_other["t/one"]["instance_seeds"] != rows["t/one"]["instance_seeds"]
    # the default is hypothesis seed 0, and the key is the claim id (+ parametrization)
    assert seeds[:3] == [derive_seed(0, "t/one"), derive_seed(0, "t/two[1]"), derive_seed(0, "t/two[2]")]
    assert _seeds(other)[0] == derive_seed(7, "t/one")


def test_derive_seed():
    assert derive_seed(0, "a/b") == derive_seed(0, "a/b")
    assert len({derive_seed(s, k) for s in range(5) for k in ("a/b", "a/c", "b/b")}) == 15
    assert all(0 <= derive_seed(s, "a/b") < 2 ** 32 for s in (0, 1, 2 ** 40))


def test_options_and_fixtures(pytester):
    before = (settings.get_current_profile_name(), hypothesis.core.global_force_seed)
    pytester.makepyfile(test_opts='''
import hypothesis.core
from hypothesis import settings

def test_x(scale, recompute, device, from_ledger, pytestconfig):
    print("OPTS", scale, recompute, device, from_ledger, pytestconfig.getoption("--strict-gates"),
          settings.get_current_profile_name(), hypothesis.core.global_force_seed)
''')
    result = pytester.runpytest("-s", "--scale", "paper", "--recompute", "--device", "cuda:1", "--from-ledger",
                                "--strict-gates", "--hypothesis-profile", "thorough")
    result.stdout.fnmatch_lines(["*OPTS paper True cuda:1 True True thorough 0*"])
    result = pytester.runpytest("-s", "--hypothesis-seed", "5")
    result.stdout.fnmatch_lines(["*OPTS quick False cpu False False ci 5*"])
    pytester.runpytest("--scale", "huge").stderr.fnmatch_lines(["*invalid choice*"])
    # an in-process run leaves this session's hypothesis settings as they were
    assert (settings.get_current_profile_name(), hypothesis.core.global_force_seed) == before


def test_plugin_can_be_disabled(pytester):
    pytester.makepyfile(test_x=claim("t/a") + "def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:mechverify", "--claims-report", "r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR      # the option is unknown without the plugin


XDIST = (claim("t/split") + '@pytest.mark.parametrize("k", [1, 2, 3, 4])\n'
         "def test_split(record_claim, k):\n"
         "    record_claim(0.1 * k, 1.0, detail={'k': k})\n    assert k != 4 or k == 4\n"
         + claim("t/worst-fails") + '@pytest.mark.parametrize("k", [1, 2])\n'
         "def test_worst(record_claim, k):\n    record_claim(k, 10.0)\n    assert k == 1\n"
         + claim("t/gated") + '@pytest.mark.parametrize("k", [1, 2])\n'
         "def test_gated(record_claim, k):\n    record_claim.gate(k == 1, loss=0.1 * k)\n")


def test_xdist_workers_merge_into_one_table(pytester):
    """Under pytest-xdist (-n 2, one item per worker at a time) the controller merges the rows:
    instance counts add up, the worst instance wins, the most severe outcome wins, and every
    parametrization's item and gate is kept — the same rows as a serial run."""
    pytester.makepyfile(test_split=HEAD + XDIST)
    rows = {}
    for name, args in (("serial", ()), ("xdist", ("-n", "2", "--dist", "load"))):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--claims-report", f"{name}.json", *args)
        result.stdout.fnmatch_lines(["*claims*", "t/gated*inconclusive*", "t/split*passed*", "t/worst-fails*failed*"])
        rows[name] = {r["id"]: r for r in json.loads((pytester.path / f"{name}.json").read_text())}
    serial, xdist = rows["serial"], rows["xdist"]
    assert set(xdist) == {"t/split", "t/worst-fails", "t/gated"}
    for cid in serial:
        for key in ("outcome", "n_instances", "worst_error", "tolerance", "detail", "items", "gate"):
            assert xdist[cid].get(key) == serial[cid].get(key), (cid, key)
    assert xdist["t/split"]["n_instances"] == 4 and xdist["t/split"]["detail"] == {"k": 4}
    assert xdist["t/worst-fails"]["outcome"] == "failed" and xdist["t/worst-fails"]["worst_error"] == 2.0
    assert xdist["t/gated"]["gate"]["test_gated[2]"]["met"] is False
