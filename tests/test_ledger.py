"""The results ledger: recording a claims report, stale entries, ``--from-ledger``, training seeds."""

import dataclasses
import json
import os
import platform

import numpy as np
import pytest

from mechverify import ledger

pytest_plugins = ["pytester"]

INI = """
[pytest]
mechverify_ledger = ledger.json
"""

TEST = """
import pytest

@pytest.mark.claim(id="toy/converges", paper="toy", provenance="reconstructed", kind="trained",
                   findings={{"paper": "the loss stays at 0.5"}})
def test_converges(record_claim, scale):
    '''The toy loss converges.'''
    record_claim.gate({gate}, loss=0.01, target=0.05)
    record_claim(0.01, 0.05)
    assert scale == "paper" and {holds}
"""


def _project(pytester, gate="True", holds="False"):
    pytester.makeini(INI)
    pytester.makepyfile(test_toy=TEST.format(gate=gate, holds=holds))


def _record(pytester, seed, **kw) -> list[dict]:
    report = pytester.path / f"r{seed}.json"
    pytester.runpytest("--scale", "paper", f"--claims-report={report}", "-p", "no:cacheprovider")
    rows = json.loads(report.read_text())
    ledger.record(rows, scale="paper", seed=seed, path=pytester.path / "ledger.json", root=pytester.path, **kw)
    return rows


def test_record_and_evaluate_from_ledger(pytester):
    _project(pytester)
    rows = _record(pytester, 0)
    assert rows[0]["outcome"] == "finding" and rows[0]["test"] == "test_toy.py::test_converges"
    _record(pytester, 1)
    data = ledger.load(pytester.path / "ledger.json")
    assert [(e["claim"], e["seed"], e["verdict"]) for e in data["entries"]] == [
        ("toy/converges", 0, "finding"), ("toy/converges", 1, "finding")]
    assert ledger.summary(data["entries"], root=pytester.path) == "finding 2/2 (err 0.01)"
    # a stale seed is shown apart, never counted with the current ones
    mixed = [data["entries"][0], {**data["entries"][1], "test_digest": "0" * 64}]
    assert ledger.summary(mixed, root=pytester.path) == "finding 1/1 (err 0.01); stale: seed 1 (finding 1/1 (err 0.01))"
    # each entry says what it ran on (another CPU's kernels can train to another end)
    assert data["entries"][0]["machine"]["platform"] == platform.machine()
    assert data["entries"][0]["machine"]["cpus"] == os.cpu_count()
    # from the ledger no fixture is set up and no body runs: the claims row says where it came from
    report = pytester.path / "from.json"
    pytester.runpytest("--scale", "paper", "--from-ledger", f"--claims-report={report}", "-p", "no:cacheprovider")
    row = json.loads(report.read_text())[0]
    assert row["outcome"] == "finding" and row["source"].startswith("ledger: 2 seed(s)")
    assert row["worst_error"] == 0.01 and row["gate"]["test_converges"]["met"] is True


def test_stale_entries_are_not_used(pytester):
    _project(pytester)
    _record(pytester, 0)
    result = pytester.runpytest("--scale", "paper", "--from-ledger", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(xfailed=1)                 # the ledger's finding, as a strict xfail
    result.stdout.fnmatch_lines(["*evaluated from the ledger*"])
    test_file = pytester.path / "test_toy.py"
    source = test_file.read_text()
    reworded = source.replace("'''The toy loss converges.'''", '"""Reworded."""  # a comment')
    assert reworded != source
    test_file.write_text("# a new first line\n" + reworded)
    entries = ledger.load(pytester.path / "ledger.json")["entries"]
    assert ledger.is_current(entries[0], root=pytester.path)      # a docstring or a comment is not the test
    _project(pytester, holds="True")                  # the claim's test changed
    entries = ledger.load(pytester.path / "ledger.json")["entries"]
    assert not ledger.is_current(entries[0], root=pytester.path)
    assert ledger.summary(entries, root=pytester.path).startswith("stale: ")
    result = pytester.runpytest("--scale", "paper", "--from-ledger", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no current ledger entry for toy/converges*"])


def test_unmet_gate_is_inconclusive_from_the_ledger(pytester):
    _project(pytester, gate="False")
    rows = _record(pytester, 0)
    assert rows[0]["outcome"] == "inconclusive" and rows[0]["gate"]["test_converges"]["met"] is False
    result = pytester.runpytest("--scale", "paper", "--from-ledger", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*1 inconclusive*"])


def test_from_ledger_needs_the_ini_option(pytester):
    pytester.makepyfile(test_toy=TEST.format(gate="True", holds="True"))
    result = pytester.runpytest("--from-ledger", "-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*--from-ledger needs the ini option mechverify_ledger*"])


def test_record_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        ledger.record([], scale="huge", seed=0, path=tmp_path / "l.json")
    with pytest.raises(ValueError, match="seed"):
        ledger.record([], scale="paper", seed=-1, path=tmp_path / "l.json")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="entries"):
        ledger.load(tmp_path / "bad.json")


def test_train_seed_moves_the_seed_and_runs_are_logged(monkeypatch):
    from mechverify.training import runner

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        seed: int = 3

    monkeypatch.delenv(runner.TRAIN_SEED_ENV, raising=False)
    assert runner.with_train_seed(Cfg()) == Cfg()
    monkeypatch.setenv(runner.TRAIN_SEED_ENV, "2")
    assert runner.with_train_seed(Cfg()).seed == 2003
    monkeypatch.setenv(runner.TRAIN_SEED_ENV, "-1")
    with pytest.raises(ValueError, match="MECHVERIFY_TRAIN_SEED"):
        runner.with_train_seed(Cfg())


def test_catalogues_carry_the_training_seed(monkeypatch):
    """Under --train-seed k every catalogue's configs are moved (so a claim measures the run it
    trained, e.g. meta_learning's Zipf chain is drawn from the moved seed), and exactly once."""
    from mechverify.training import meta_learning, runner

    monkeypatch.setenv(runner.TRAIN_SEED_ENV, "2")
    moved = meta_learning.runs("quick")
    monkeypatch.delenv(runner.TRAIN_SEED_ENV)
    plain = meta_learning.runs("quick")
    assert set(moved) == set(plain)
    for name, config in plain.items():
        assert moved[name] == dataclasses.replace(config, seed=config.seed + 2000)
    zipf = [name for name, config in plain.items() if config.corpus == "zipf"]
    assert zipf and not np.array_equal(meta_learning.zipf_chain(moved[zipf[0]]).P,
                                       meta_learning.zipf_chain(plain[zipf[0]]).P)


def test_every_catalogue_run_changes_with_the_training_seed(monkeypatch):
    """No run of any paper's catalogue (either scale) is left unmoved by --train-seed 1: a
    training seed that reached no seed of a run would record the same run three times.  (The
    topics runs keep their data seed in a nested ``setting``; before the seed was moved there,
    their paper-scale seeds 1 and 2 were served seed 0's runs from the cache.)"""
    import importlib

    from mechverify.papers import MODULES
    from mechverify.training import runner

    for module in MODULES:
        runs = importlib.import_module(f"mechverify.training.{module}").runs
        for scale in runner.SCALES:
            monkeypatch.delenv(runner.TRAIN_SEED_ENV, raising=False)
            plain = runs(scale)
            monkeypatch.setenv(runner.TRAIN_SEED_ENV, "1")
            moved = runs(scale)
            assert set(moved) == set(plain), module
            same = [name for name in plain if moved[name] == plain[name]]
            assert not same, f"{module} ({scale}): runs {same} ignore the training seed"


def test_a_run_shared_by_claims_is_stored_once(tmp_path):
    run = {"class": "mechverify.training.gd_icl:LSATrainConfig", "hash": "abc123", "code_digest": "x",
           "fields": {"d": 10}, "wall_s": 1.0}
    rows = [{"id": f"toy/claim-{k}", "kind": "trained", "outcome": "passed", "test": "t.py::test_a",
             "runs": [run], "worst_error": 0.1, "tolerance": 1.0} for k in range(3)]
    (tmp_path / "t.py").write_text("def test_a():\n    pass\n")
    path = tmp_path / "l.json"
    ledger.record(rows, scale="quick", seed=0, path=path, root=tmp_path)
    raw = json.loads(path.read_text())
    assert list(raw["runs"]) == ["abc123"] and all(e["runs"] == ["abc123"] for e in raw["entries"])
    assert all(e["runs"] == [run] for e in ledger.load(path)["entries"])     # inflated on load
    raw["entries"][0]["runs"] = ["missing"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="missing"):
        ledger.load(path)


def _run_record(config, digest=None) -> dict:
    """A ledger run record of ``config`` (as the runner logs it)."""
    from mechverify.training.cache import code_digest

    return {"class": f"{type(config).__module__}:{type(config).__qualname__}", "hash": "h",
            "fields": json.loads(json.dumps(dataclasses.asdict(config), default=repr)),
            "code_digest": digest or code_digest(type(config))}


def test_an_entry_is_stale_when_its_catalogue_run_changes(tmp_path, monkeypatch):
    """The catalogue is not in the code digest (an edit of one entry retrains one run), so the
    ledger checks each run against today's catalogue at the entry's scale and training seed: a
    run no longer listed (or a seed's run under another seed) stales the entry; a run that a
    listed run requests (a Markov baseline) counts as listed."""
    from mechverify.training import markov, runner

    monkeypatch.delenv(runner.TRAIN_SEED_ENV, raising=False)
    (tmp_path / "t.py").write_text("def test_a():\n    pass\n")

    def entry(*runs, seed=0):
        return {"scale": "quick", "seed": seed, "test": "t.py::test_a",
                "test_digest": ledger.test_digest("t.py", tmp_path), "runs": list(runs)}

    main = markov.runs("quick")["main"]
    assert main.sub_runs()
    assert ledger.is_current(entry(*map(_run_record, (main, *main.sub_runs()))), root=tmp_path)
    longer = dataclasses.replace(main, steps=main.steps + 1)
    assert not ledger.is_current(entry(_run_record(main), _run_record(longer)), root=tmp_path)
    assert not ledger.is_current(entry(_run_record(main), seed=1), root=tmp_path)
    assert ledger.is_current(entry(_run_record(runner._moved(main, 1000)), seed=1), root=tmp_path)
    assert not ledger.is_current(entry(_run_record(main, digest="0" * 64)), root=tmp_path)   # code changed
    assert ledger.stale_reason(entry(_run_record(longer)), root=tmp_path) == \
        "a MarkovTrainConfig run is no longer in its catalogue"
    assert ledger.stale_reason(entry(_run_record(main, digest="0" * 64)), root=tmp_path) == \
        "code of MarkovTrainConfig changed"
    (tmp_path / "t.py").write_text("def test_a(:\n")
    assert ledger.stale_reason(entry(_run_record(main)), root=tmp_path) == "test file t.py missing or not parsable"
    assert ledger.in_catalogue({"class": "elsewhere:OtherConfig", "fields": {"x": 1}}, "quick", 0)


def test_catalogue_runs_lists_every_paper_catalogue(monkeypatch):
    """``catalogue_runs(scale, k)`` holds every run of every paper's catalogue under
    --train-seed k, and the runs those request; bad arguments are refused by name."""
    import importlib

    from mechverify.papers import MODULES
    from mechverify.training import runner

    listed = runner.catalogue_runs("quick", 1)
    assert {f"mechverify.training.{m}" for m in MODULES} <= set(runner.CATALOGUES)
    monkeypatch.setenv(runner.TRAIN_SEED_ENV, "1")
    for module in MODULES:
        for config in importlib.import_module(f"mechverify.training.{module}").runs("quick").values():
            assert config in listed and all(sub in listed for sub in getattr(config, "sub_runs", tuple)())
    with pytest.raises(ValueError, match="scale"):
        runner.catalogue_runs("huge", 0)
    with pytest.raises(ValueError, match="seed"):
        runner.catalogue_runs("quick", -1)


def test_record_keeps_trained_rows_only_and_the_cli_round_trips(tmp_path, capsys, monkeypatch):
    """``record`` merges the trained rows that ran (not exact ones, not the ones not run) and
    returns their number; ``python -m mechverify.ledger record`` / ``show`` do the same from the
    command line, and the saved file is sorted (stable diffs)."""
    (tmp_path / "t.py").write_text("def test_a():\n    pass\n")
    base = {"paper": "toy", "test": "t.py::test_a", "runs": [], "worst_error": 0.1, "tolerance": 1.0}
    rows = [{**base, "id": "toy/b-trained", "kind": "trained", "outcome": "passed"},
            {**base, "id": "toy/a-exact", "kind": "exact", "outcome": "passed"},
            {**base, "id": "toy/c-not-run", "kind": "trained", "outcome": "not run"}]
    path = tmp_path / "l.json"
    assert ledger.record(rows, scale="paper", seed=0, path=path, root=tmp_path) == 1
    assert [e["claim"] for e in ledger.load(path)["entries"]] == ["toy/b-trained"]
    assert ledger.summary([]) == "—"
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"
    report = tmp_path / "r.json"
    report.write_text(json.dumps([{**rows[0], "id": "toy/d-trained"}]))
    monkeypatch.chdir(tmp_path)              # test files are found relative to the repository root
    assert ledger.main(["record", str(report), "--scale", "paper", "--seed", "1", "--ledger", str(path)]) == 0
    assert "1 entries recorded" in capsys.readouterr().out
    assert ledger.main(["show", "--scale", "paper", "--ledger", str(path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in shown] == ["toy/b-trained", "toy/d-trained"]
    assert all("passed 1/1" in line for line in shown)
    (tmp_path / "t.py").write_text("def test_a():\n    assert True\n")      # the test changed
    assert ledger.main(["show", "--scale", "paper", "--ledger", str(path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].split() == ["seed", "0", "stale:", "test", "file", "t.py", "changed"]
    assert shown[0].split()[1:] == ["stale:", "seed", "0", "(passed", "1/1", "(err", "0.1))"]
    with pytest.raises(SystemExit):
        ledger.main(["record", str(report), "--seed", "1"])           # --scale is required
    with pytest.raises(SystemExit):
        ledger.main(["record", str(report), "--scale", "paper"])      # --seed is required
    with pytest.raises(SystemExit):
        ledger.main([])                                                 # a command is required
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ledger.main(["--help"])
    assert "The trained-claims ledger" in capsys.readouterr().out
