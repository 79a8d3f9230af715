"""The claim harness, a pytest plugin (entry point ``pytest11: mechverify``).

Installing mechverify registers it in every pytest run of that environment (``-p no:mechverify``
turns it off).  It brings:

* the marker ``@pytest.mark.claim(id=, paper=, provenance=, kind=, findings=, recorded=)``,
  validated at collection (an invalid marker or a duplicate id stops the run).  ``kind`` (exact,
  statistical, trained) is added as a marker, so ``-m "not trained"`` selects by kind.  Without a
  registry any well-formed id (``key/slug``) is accepted; the ini option ``mechverify_registry``
  names a JSON list of ``{"id", "kind", "tags"}`` rows that then fixes the allowed ids, their kind
  and provenance tags.
* the fixture ``record_claim``: ``record_claim(error, tolerance, detail=None)`` logs one checked
  instance (the one with the largest error/tolerance ratio is reported);
  ``record_claim.gate(passed, **numbers)`` is a trained claim's convergence gate (unmet: the test
  stops as *inconclusive*, or fails under ``--strict-gates``); ``record_claim.recorded()`` marks a
  record-only claim (a pass is reported as *recorded*).
* ``findings={"quick": "numbers and why", "paper": {"case": "..."}}``: a claim that does not hold
  at that ``--scale`` is a strict xfail carrying the measured numbers (a string covers every
  parametrization; a dict is keyed by the parametrization id, the text between the brackets).
* the fixture ``instance_seed``: an integer that follows ``--hypothesis-seed`` and the claim.
* the verdicts of the end-of-run claims table and of ``--claims-report FILE`` (JSON): passed,
  finding, inconclusive, recorded, failed, skipped (xpassed for a non-strict xfail that passed).
* the options ``--scale``, ``--recompute``, ``--device``, ``--strict-gates``, ``--from-ledger``
  with fixtures of the same names, and the hypothesis profiles ``ci`` (default, 25 examples),
  ``dev`` (8) and ``thorough`` (300), reproducible by default: seed 0 unless ``--hypothesis-seed``.
* pytest-xdist (``-n 2``): each worker sends its claims rows to the controller, which merges
  them (:func:`merge_rows`) into one table and one report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.core
import pytest
from hypothesis import HealthCheck, settings

PROVENANCES = ("paper", "paper-code", "review", "reconstructed")
KINDS = ("exact", "statistical", "trained")
SCALES = ("quick", "paper")
OUTCOMES = ("passed", "finding", "inconclusive", "recorded", "failed", "skipped", "xpassed")
INCONCLUSIVE_PREFIX = "inconclusive:"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)+")
_FIELDS = ("id", "paper", "provenance", "kind")
_OPTIONAL = ("findings", "recorded")

# --- hypothesis profiles: registered for every run, `ci` loaded unless --hypothesis-profile ----
_common = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=25, **_common)
settings.register_profile("dev", max_examples=8, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile("ci")
# Reproducible by default: seed 0 unless --hypothesis-seed N is given (hypothesis' own plugin
# overwrites this in its pytest_configure).  `derandomize=True` would ignore the seed option.
hypothesis.core.global_force_seed = 0


# --- the claim marker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    provenance: str
    kind: str
    findings: dict = field(default_factory=dict, compare=False)
    recorded: bool = False

    @property
    def key(self) -> str:
        return self.id.split("/", 1)[0]

    def finding(self, scale: str, param_id: str | None) -> str | None:
        """The recorded finding of this claim at ``scale`` for one parametrization, if any."""
        at_scale = self.findings.get(scale)
        if isinstance(at_scale, dict):
            return at_scale.get(param_id) if param_id is not None else None
        return at_scale


def load_registry(path) -> dict[str, dict]:
    """Read a claim registry: a JSON list of rows with at least ``id``, ``kind`` and ``tags``
    (the allowed provenances).  ValueError names the offending row."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"registry {path}: expected a JSON list of claim rows")
    out = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"id", "kind", "tags"} <= row.keys():
            raise ValueError(f"registry {path}: row {i} needs the keys id, kind, tags")
        out[row["id"]] = row
    return out


def _check_findings(cid: str, findings) -> dict:
    if not isinstance(findings, dict):
        raise TypeError(f"claim {cid}: findings must be a dict scale -> text or dict; got {type(findings).__name__}")
    for scale, value in findings.items():
        if scale not in SCALES:
            raise ValueError(f"claim {cid}: findings scale must be one of {SCALES}; got {scale!r}")
        cases = value if isinstance(value, dict) else {None: value}
        for case, text in cases.items():
            if (case is not None and not isinstance(case, str)) or not isinstance(text, str) or not text.strip():
                raise ValueError(f"claim {cid}: findings[{scale!r}] must be a non-empty text or a dict "
                                 f"parametrization id -> non-empty text")
    return findings


def claim_from_marker(marker, registry: dict[str, dict] | None = None) -> Claim:
    """Validate a ``claim`` marker against an optional registry; ValueError/TypeError names the
    offending field."""
    if marker.args:
        raise ValueError("claim marker takes keyword arguments only: id, paper, provenance, kind "
                         "(+ findings, recorded)")
    fields = dict(marker.kwargs)
    missing = set(_FIELDS) - fields.keys()
    extra = fields.keys() - set(_FIELDS) - set(_OPTIONAL)
    if missing or extra:
        raise ValueError(f"claim marker needs id, paper, provenance, kind (optional findings, recorded); "
                         f"missing {sorted(missing)}, unknown {sorted(extra)}")
    cid = fields["id"]
    if not isinstance(cid, str) or not _ID.fullmatch(cid):
        raise ValueError(f"claim id must look like 'key/slug' (letters, digits, . _ -); got {cid!r}")
    if not isinstance(fields["paper"], str) or not fields["paper"]:
        raise ValueError(f"claim {cid}: paper must be a non-empty string")
    if fields["provenance"] not in PROVENANCES:
        raise ValueError(f"claim {cid}: provenance must be one of {PROVENANCES}; got {fields['provenance']!r}")
    if fields["kind"] not in KINDS:
        raise ValueError(f"claim {cid}: kind must be one of {KINDS}; got {fields['kind']!r}")
    if not isinstance(fields.get("recorded", False), bool):
        raise TypeError(f"claim {cid}: recorded must be a bool")
    fields["findings"] = _check_findings(cid, fields.get("findings", {}))
    claim = Claim(**fields)
    if registry is not None:
        spec = registry.get(cid)
        if spec is None:
            raise ValueError(f"claim id {cid!r} is not in the registry")
        if claim.provenance not in spec["tags"]:
            raise ValueError(f"claim {cid}: provenance {claim.provenance!r} is not among the registry's tags "
                             f"{spec['tags']}")
        if claim.kind != spec["kind"]:
            raise ValueError(f"claim {cid}: kind {claim.kind!r} differs from the registry's {spec['kind']!r}")
    return claim


# --- the verdicts ---------------------------------------------------------------------------------

class Inconclusive(pytest.skip.Exception):
    """Raised by an unmet convergence gate: the test stops without a verdict."""


class GateFailed(pytest.fail.Exception):
    """An unmet convergence gate under ``--strict-gates`` (never turned into a finding)."""


_CLAIMS_KEY = pytest.StashKey[dict]()      # claim id -> row of the claims table
_STATE_KEY = pytest.StashKey[dict]()       # claim id -> worst error/tolerance ratio so far
_REGISTRY_KEY = pytest.StashKey[object]()  # the registry dict, or None
_ITEM_CLAIM = pytest.StashKey[Claim]()     # test item -> its claim
_ITEM_RECORDED = pytest.StashKey[bool]()   # test item -> record-only
# An outcome never improves: a claim with one failed parametrization has failed.
_SEVERITY = {"not run": 0, "skipped": 1, "passed": 2, "recorded": 3, "finding": 4, "inconclusive": 5,
             "xpassed": 6, "failed": 7}


def _number(name: str, value):
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "item"):      # numpy / torch scalars
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    raise TypeError(f"gate number {name} must be a real number, bool or str; got {type(value).__name__}")


def _ratio(error: float, tolerance: float) -> float:
    """error / tolerance, the measure by which the worst checked instance is chosen (NaN: inf)."""
    if math.isnan(error):
        return math.inf
    return error / tolerance if tolerance > 0 else (0.0 if error <= 0 else math.inf)


class ClaimRecorder:
    """``record_claim``: what one test measured for its claim (shared by parametrizations)."""

    def __init__(self, row: dict, state: dict, item):
        self.row, self._state, self._item = row, state, item

    def __call__(self, error, tolerance, detail: dict | None = None) -> None:
        """Log one checked instance: its error and the tolerance it is checked against."""
        error, tolerance = float(error), float(tolerance)
        self.row["n_instances"] = self.row.get("n_instances", 0) + 1
        ratio = _ratio(error, tolerance)
        if ratio >= self._state.get("worst_ratio", -math.inf):
            self._state["worst_ratio"] = ratio
            self.row["worst_error"], self.row["tolerance"] = error, tolerance
            if detail is not None:
                self.row["detail"] = detail

    def gate(self, passed: bool, **numbers) -> None:
        """A trained claim's convergence gate.  The numbers (``loss=, target=, delta=, steps=``)
        go into the claims row under ``gate``; an unmet gate stops the test as inconclusive
        (a failure under ``--strict-gates``)."""
        if not isinstance(passed, bool) and not (hasattr(passed, "item") and isinstance(passed.item(), bool)):
            raise TypeError(f"passed must be a bool; got {type(passed).__name__}")
        passed = bool(passed)
        numbers = {name: _number(name, value) for name, value in numbers.items()}
        self.row.setdefault("gate", {})[self._item.name] = {"met": passed, **numbers}
        if passed:
            return
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
        if self._item.config.getoption("--strict-gates"):
            raise GateFailed(f"convergence gate not met ({shown}) and --strict-gates is set", pytrace=False)
        raise Inconclusive(f"{INCONCLUSIVE_PREFIX} convergence gate not met ({shown})")

    def recorded(self) -> None:
        """Mark this test as record-only: it reports a measurement; a pass shows as ``recorded``."""
        self._item.stash[_ITEM_RECORDED] = True


def _new_row(claim: Claim, test: str) -> dict:
    return {"id": claim.id, "paper": claim.paper, "provenance": claim.provenance, "kind": claim.kind,
            "outcome": "not run", "worst_error": None, "tolerance": None, "n_instances": 0,
            "test": test, "wall_s": 0.0}


def _hypothesis_seed(config) -> int:
    """The --hypothesis-seed value as a non-negative integer (0 when not given)."""
    seed = config.getoption("--hypothesis-seed", None)
    if seed is None:
        return 0
    seed = str(seed)
    if seed.isdigit():
        return int(seed)
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little")


def derive_seed(hypothesis_seed: int, key: str) -> int:
    """A 32-bit seed from the hypothesis seed and a stable hash of ``key`` (numpy SeedSequence)."""
    import numpy as np

    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return int(np.random.SeedSequence([hypothesis_seed, digest]).generate_state(1)[0])


# --- hooks ----------------------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("mechverify")
    group.addoption("--claims-report", metavar="FILE", default=None,
                    help="write the claims table of this run as JSON to FILE")
    group.addoption("--scale", choices=SCALES, default="quick",
                    help="size of the trained runs behind trained claims (default: quick, CPU minutes)")
    group.addoption("--recompute", action="store_true",
                    help="ignore the cache of trained runs and train again")
    group.addoption("--device", default="cpu",
                    help="torch device for training runs (cpu, cuda, cuda:1, ...); default cpu")
    group.addoption("--strict-gates", action="store_true",
                    help="an unmet convergence gate fails the test instead of making it inconclusive")
    group.addoption("--from-ledger", action="store_true",
                    help="evaluate trained claims from the results ledger (ini mechverify_ledger) instead of "
                         "training; stale entries are not used")
    group.addoption("--train-seed", type=int, default=0, metavar="K",
                    help="training seed index of the trained runs (0: the catalogue's runs; K > 0: independent "
                         "repetitions, each run's seed moved by 1000 K)")
    parser.addini("mechverify_ledger", "JSON results ledger read by --from-ledger (relative to the ini file)",
                  default="")
    parser.addini("mechverify_registry", "JSON file of allowed claim ids, kinds and provenance tags "
                  "(relative to the ini file); without it any well-formed id is accepted", default="")


_HYPOTHESIS_KEY = pytest.StashKey[tuple]()  # (profile, seed) before this session, restored at the end


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before hypothesis' own plugin applies --hypothesis-profile / --hypothesis-seed: the
    # defaults of every session are profile `ci` and seed 0 (restored afterwards, so an
    # in-process run such as pytester's does not leak its options).
    config.stash[_HYPOTHESIS_KEY] = (settings.get_current_profile_name(), hypothesis.core.global_force_seed)
    if config.getoption("--hypothesis-profile", None) is None:
        settings.load_profile("ci")
    if config.getoption("--hypothesis-seed", None) is None:
        hypothesis.core.global_force_seed = 0
    for line in ("claim(id, paper, provenance, kind, findings=None, recorded=False): a checkable statement "
                 "(mechverify claim harness)",
                 "exact: claim kind exact (added from the claim marker)",
                 "statistical: claim kind statistical (added from the claim marker)",
                 "trained: claim kind trained: needs a trained model (added from the claim marker)"):
        config.addinivalue_line("markers", line)
    config.stash[_CLAIMS_KEY] = {}
    config.stash[_STATE_KEY] = {}
    registry = None
    name = config.getini("mechverify_registry")
    if name:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        path = base / name
        try:
            registry = load_registry(path)
        except (OSError, ValueError) as err:
            raise pytest.UsageError(f"mechverify_registry: cannot read {path}: {err}") from err
    config.stash[_REGISTRY_KEY] = registry
    train_seed = config.getoption("--train-seed", 0)
    if train_seed < 0:
        raise pytest.UsageError(f"--train-seed must be >= 0; got {train_seed}")
    if train_seed:                      # read by the runner (mechverify.training.runner.with_train_seed)
        os.environ["MECHVERIFY_TRAIN_SEED"] = str(train_seed)


def pytest_unconfigure(config):
    if _HYPOTHESIS_KEY in config.stash:
        profile, seed = config.stash[_HYPOTHESIS_KEY]
        settings.load_profile(profile)
        hypothesis.core.global_force_seed = seed


def _function_id(item) -> str:
    """The test function's node id (parametrizations of one function are one claim)."""
    return item.nodeid.split("[", 1)[0]


def _param_id(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    seen: dict[str, str] = {}
    errors = []
    rows = config.stash[_CLAIMS_KEY]
    registry = config.stash[_REGISTRY_KEY]
    scale = config.getoption("--scale")
    for item in items:
        marker = item.get_closest_marker("claim")
        if marker is None:
            continue
        try:
            claim = claim_from_marker(marker, registry)
        except (ValueError, TypeError) as err:
            errors.append(f"{item.nodeid}: {err}")
            continue
        if seen.setdefault(claim.id, _function_id(item)) != _function_id(item):
            errors.append(f"{item.nodeid}: duplicate claim id {claim.id!r} (also {seen[claim.id]})")
            continue
        item.add_marker(claim.kind)
        item.stash[_ITEM_CLAIM] = claim
        item.stash[_ITEM_RECORDED] = claim.recorded
        row = rows.setdefault(claim.id, _new_row(claim, _function_id(item)))
        reason = claim.finding(scale, _param_id(item))
        if reason:
            row.setdefault("findings", {})[item.name] = reason
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"finding at --scale {scale}: {reason}"))
    if errors:
        raise pytest.UsageError("invalid claim markers:\n  " + "\n  ".join(errors))
    trained = [i for i in items if i.stash.get(_ITEM_CLAIM, None) is not None and i.stash[_ITEM_CLAIM].kind == "trained"]
    if config.getoption("--from-ledger") and trained:
        _ledger_path(config)
        items[:] = [LedgerItem.replacing(i) if i in trained else i for i in items]


@pytest.fixture(scope="session")
def scale(request) -> str:
    """``--scale``: "quick" (default) or "paper"."""
    return request.config.getoption("--scale")


@pytest.fixture(scope="session")
def recompute(request) -> bool:
    """``--recompute``: retrain instead of reading the cache."""
    return request.config.getoption("--recompute")


@pytest.fixture(scope="session")
def device(request) -> str:
    """``--device``: where trained claims train."""
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def from_ledger(request) -> bool:
    """``--from-ledger``: evaluate trained claims from the results ledger instead of training."""
    return request.config.getoption("--from-ledger")


def _row_of(item) -> dict:
    claim = item.stash.get(_ITEM_CLAIM, None)
    if claim is None:
        return {}       # a test without a claim marker: measurements go nowhere
    return item.config.stash[_CLAIMS_KEY][claim.id]


@pytest.fixture
def record_claim(request) -> ClaimRecorder:
    """``record_claim(error, tolerance, detail=None)``, ``.gate(passed, **numbers)``, ``.recorded()``."""
    item = request.node
    claim = item.stash.get(_ITEM_CLAIM, None)
    state = request.config.stash[_STATE_KEY].setdefault(claim.id, {}) if claim is not None else {}
    return ClaimRecorder(_row_of(item), state, item)


@pytest.fixture
def instance_seed(request) -> int:
    """An integer seed for the instances of this test: derived from ``--hypothesis-seed`` (0 when
    not given) and the claim id (with the parametrization id; the node id for a test without a
    claim), so a plain run is reproducible and a new hypothesis seed draws new instances.
    Each seed is recorded in the claim's row (``instance_seeds``)."""
    item = request.node
    claim = item.stash.get(_ITEM_CLAIM, None)
    if claim is None:
        key = item.nodeid
    else:
        key = claim.id if _param_id(item) is None else f"{claim.id}[{_param_id(item)}]"
    seed = derive_seed(_hypothesis_seed(request.config), key)
    seeds = _row_of(item).setdefault("instance_seeds", [])
    if seed not in seeds:
        seeds.append(seed)
    return seed


def _is_inconclusive(excinfo) -> bool:
    if excinfo is None or not isinstance(excinfo.value, pytest.skip.Exception):
        return False
    return isinstance(excinfo.value, Inconclusive) or str(excinfo.value.msg).startswith(INCONCLUSIVE_PREFIX)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, GateFailed):
        # a strict-gates failure is a failure even when the claim carries a finding (strict xfail)
        report.outcome = "failed"
        if hasattr(report, "wasxfail"):
            del report.wasxfail
    if report.failed:
        outcome = "failed"
    elif report.skipped:
        outcome = ("finding" if hasattr(report, "wasxfail") else
                   "inconclusive" if _is_inconclusive(call.excinfo) else "skipped")
    elif report.when != "call":
        return report
    elif hasattr(report, "wasxfail"):
        outcome = "xpassed"
    else:
        outcome = "recorded" if item.stash.get(_ITEM_RECORDED, False) else "passed"
    report.claim_outcome = outcome
    claim = item.stash.get(_ITEM_CLAIM, None)
    if claim is not None:
        row = item.config.stash[_CLAIMS_KEY][claim.id]
        row["items"] = {**row.get("items", {}), item.name: outcome}
        row["wall_s"] = round(row.get("wall_s", 0.0) + report.duration, 3)
        # The trained runs of this test file so far (a module-scoped fixture trains once for
        # several claims, so each claim is credited with every run its file has used).
        runner = sys.modules.get("mechverify.training.runner")
        file_runs = item.config.stash[_STATE_KEY].setdefault(("runs", str(item.path)), {})
        if runner is not None and runner.RUN_LOG:
            file_runs.update((r["hash"], r) for r in runner.RUN_LOG)
            runner.RUN_LOG.clear()
        if claim.kind == "trained":
            row.setdefault("machine", machine())
        if claim.kind == "trained" and file_runs:
            known = {r["hash"] for r in row.setdefault("runs", [])}
            row["runs"] += [r for h, r in file_runs.items() if h not in known]
        if _SEVERITY[outcome] > _SEVERITY[row["outcome"]]:
            row["outcome"] = outcome
    return report


def machine() -> dict:
    """What a trained claim ran on.  torch picks its CPU kernels by instruction set, so the same
    seed can train to a different end on another CPU; the ledger keeps this beside each verdict."""
    import platform

    info = {"platform": platform.machine(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


def _ledger_path(config) -> Path:
    name = config.getini("mechverify_ledger")
    if not name:
        raise pytest.UsageError("--from-ledger needs the ini option mechverify_ledger (the ledger's JSON file)")
    return (config.inipath.parent if config.inipath is not None else config.rootpath) / name


class LedgerItem(pytest.Item):
    """A trained claim under ``--from-ledger``: it takes the place of the test (no fixture is set
    up, nothing trains); its verdict and numbers come from the current ledger entries of this
    scale, over every training seed recorded (the most severe verdict wins)."""

    @classmethod
    def replacing(cls, item):
        new = cls.from_parent(item.parent, name=item.name)
        new.own_markers = list(item.own_markers)
        new.keywords.update(item.keywords)
        for key in (_ITEM_CLAIM, _ITEM_RECORDED):
            new.stash[key] = item.stash[key]
        new._nodeid = item.nodeid
        return new

    def reportinfo(self):
        return self.path, None, f"{self.name} (from the ledger)"

    def runtest(self):
        _apply_ledger(self)


def _apply_ledger(pyfuncitem) -> None:
    config = pyfuncitem.config
    claim = pyfuncitem.stash[_ITEM_CLAIM]
    from mechverify.ledger import current_entries

    scale = config.getoption("--scale")
    entries = current_entries(claim.id, scale, _ledger_path(config), config.rootpath)
    verdicts = [e.get("items", {}).get(pyfuncitem.name, e["verdict"]) for e in entries]
    if not verdicts:
        pytest.skip(f"no current ledger entry for {claim.id} at --scale {scale} (missing or stale): "
                    "run it without --from-ledger")
    row = _row_of(pyfuncitem)
    row["source"] = f"ledger: {len(entries)} seed(s), recorded {max(e['date'] for e in entries)}"
    worst = max(entries, key=lambda e: _SEVERITY.get(e["verdict"], 0))
    for key in ("worst_error", "tolerance", "detail", "gate", "n_instances"):
        if key in worst:
            row[key] = worst[key]
    verdict = max(verdicts, key=lambda v: _SEVERITY.get(v, 0))
    text = f"from the ledger ({len(verdicts)} seed(s): {', '.join(sorted(verdicts))})"
    if verdict == "inconclusive":
        raise Inconclusive(f"{INCONCLUSIVE_PREFIX} {text}")
    if verdict == "skipped":
        pytest.skip(text)
    if verdict == "recorded":
        pyfuncitem.stash[_ITEM_RECORDED] = True
    elif verdict != "passed":       # a finding: a strict xfail of this scale turns it into one
        pytest.fail(f"{verdict} {text}", pytrace=False)


# --- pytest-xdist: each worker sends its rows to the controller, which merges them -----------------

def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session):
    config = session.config
    if _is_worker(config) and _CLAIMS_KEY in config.stash:
        rows = {cid: r for cid, r in config.stash[_CLAIMS_KEY].items() if r["outcome"] != "not run"}
        config.workeroutput["mechverify_claims"] = json.dumps(rows, default=repr)


def merge_rows(rows: dict, incoming: dict) -> None:
    """Merge one worker's claims rows into ``rows`` (claim id -> row): the most severe outcome,
    the worst instance by error/tolerance, instance counts and wall time summed, and the union of
    items, gates, findings, instance seeds and trained runs."""
    for cid, new in incoming.items():
        row = rows.get(cid)
        if row is None or row["outcome"] == "not run":
            rows[cid] = new
            continue
        if _SEVERITY[new["outcome"]] > _SEVERITY[row["outcome"]]:
            row["outcome"] = new["outcome"]
        row["n_instances"] += new["n_instances"]
        row["wall_s"] = round(row["wall_s"] + new["wall_s"], 3)
        if new["worst_error"] is not None and (
                row["worst_error"] is None
                or _ratio(new["worst_error"], new["tolerance"]) >= _ratio(row["worst_error"], row["tolerance"])):
            row["worst_error"], row["tolerance"] = new["worst_error"], new["tolerance"]
            if "detail" in new:
                row["detail"] = new["detail"]
        for key in ("items", "gate", "findings"):
            if key in new:
                row[key] = {**row.get(key, {}), **new[key]}
        for key, ident in (("instance_seeds", lambda v: v), ("runs", lambda r: r["hash"])):
            if key in new:
                known = {ident(v) for v in row.setdefault(key, [])}
                row[key] += [v for v in new[key] if ident(v) not in known]
        for key, value in new.items():
            row.setdefault(key, value)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist (controller): a worker finished; merge the claims rows it measured."""
    output = getattr(node, "workeroutput", {}).get("mechverify_claims")
    if output:
        merge_rows(node.config.stash[_CLAIMS_KEY], json.loads(output))


def pytest_report_teststatus(report, config):
    outcome = getattr(report, "claim_outcome", None)
    if outcome == "inconclusive":
        return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    if outcome == "recorded":
        return "recorded", "r", ("RECORDED", {"green": True})
    return None


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _gate_text(row: dict) -> str:
    gates = row.get("gate")
    if not gates:
        return "-"
    name, gate = next(((n, g) for n, g in gates.items() if not g["met"]), next(iter(gates.items())))
    numbers = " ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in gate.items() if k != "met")
    return f"{'met' if gate['met'] else 'UNMET'} {numbers}".strip()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _is_worker(config):          # the controller prints the merged table and writes the report
        return
    rows = [r for r in config.stash[_CLAIMS_KEY].values() if r["outcome"] != "not run"]
    if not rows:
        return
    rows.sort(key=lambda r: r["id"])
    tr = terminalreporter
    tr.section("claims")
    width = max(len(r["id"]) for r in rows)
    tr.write_line(f"{'claim':<{width}}  {'kind':<11} {'provenance':<13} {'outcome':<12} "
                  f"{'worst err':>10} {'tolerance':>10} {'n':>6}  gate")
    for r in rows:
        tr.write_line(f"{r['id']:<{width}}  {r['kind']:<11} {r['provenance']:<13} {r['outcome']:<12} "
                      f"{_fmt(r['worst_error']):>10} {_fmt(r['tolerance']):>10} {r['n_instances']:>6}  "
                      f"{_gate_text(r)}")
    if config.getoption("--from-ledger"):
        tr.write_line(f"trained claims were evaluated from the ledger {config.getini('mechverify_ledger')} "
                      "(no training); see each row's 'source' in --claims-report")
    path = config.getoption("--claims-report")
    if path:
        Path(path).write_text(json.dumps(rows, indent=1, default=repr) + "\n")
        tr.write_line(f"claims report written to {path}")
