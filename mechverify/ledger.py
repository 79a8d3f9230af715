"""The trained-claims ledger: the verdicts of long runs, committed as metrics only.

A paper-scale run takes CPU hours (or GPU minutes), so its verdicts are kept in a small JSON
file (this repository: ``verify/ledger.json``, the ini option ``mechverify_ledger``) instead of
being recomputed by every ``pytest`` run.  One entry per (scale, claim, training seed):

    verdict       passed | finding | inconclusive | recorded | failed | skipped
    worst_error, tolerance, detail, gate    the numbers the claim measured
    runs          each trained run the claim used: config class and fields, cache key, code
                  digest (source closure of the run's module), device, wall time
    machine       platform, CPU count, torch's CPU kernel set (e.g. AVX2) and the GPU if any:
                  the same seed can train to another end on another CPU (entries from before
                  2026-12-06 lack it)
    test_digest   SHA-256 of the claim's test file as code (syntax tree without docstrings)
    date, wall_s  when it was recorded and how long the claim took (training included)

An entry is **current** only while the test file's digest and every run's code digest
(:func:`mechverify.training.cache.code_digest`, recomputed under today's code: the run's module
and everything it imports inside the package) still match, and every run is still one that a
run catalogue lists for the entry's scale and training seed (with the runs those request,
e.g. Markov baselines; :func:`mechverify.training.runner.catalogue_runs`); otherwise it is
**stale**, shown as stale and never used as current.  So an edit of one catalogue entry stales
the claims that use that run and no other.  A run whose config class no catalogue lists is
judged by its code digest alone.  The torch/numpy versions and the device are recorded but do
not make an entry stale: a GPU run stays current on a CPU machine.

    python -m mechverify.ledger record REPORT.json --scale paper --seed 1   # merge a claims report
    python -m mechverify.ledger show [--scale paper]                      # the table, why a seed is stale

A claims report comes from ``pytest verify/ -m trained --scale paper --train-seed 1
--claims-report REPORT.json`` (``make ledger`` runs seeds 0-2 and records them).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import functools
import hashlib
import importlib
import json
import math
import sys
from collections import Counter
from pathlib import Path

LEDGER = Path("verify/ledger.json")      # relative to the repository root (the working directory)
SCALES = ("quick", "paper")
_KEPT = ("outcome", "worst_error", "tolerance", "detail", "gate", "n_instances", "items", "machine")


def load(path: Path = LEDGER) -> dict:
    """The ledger as ``{"entries": [...]}``, each entry's ``runs`` as run records (empty when the
    file does not exist).  On disk a run used by several claims is stored once, in a top-level
    ``runs`` table keyed by its cache key, and entries list the keys."""
    path = Path(path)
    if not path.exists():
        return {"entries": []}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"ledger {path} must hold an object with an 'entries' list")
    table = data.get("runs", {})
    for entry in data["entries"]:
        missing = [key for key in entry.get("runs", []) if key not in table]
        if missing:
            raise ValueError(f"ledger {path}: entry {entry.get('claim')!r} names runs {missing} "
                             "that are not in its 'runs' table")
        entry["runs"] = [table[key] for key in entry.get("runs", [])]
    return {"entries": data["entries"]}


def save(data: dict, path: Path = LEDGER) -> None:
    entries = sorted(data["entries"], key=lambda e: (e["scale"], e["claim"], e["seed"]))
    table = {run["hash"]: run for e in entries for run in e["runs"]}
    stored = [{**e, "runs": [run["hash"] for run in e["runs"]]} for e in entries]
    Path(path).write_text(json.dumps({"runs": table, "entries": stored}, indent=1, sort_keys=True) + "\n",
                          encoding="utf-8")


def test_digest(test_file: str, root: Path = Path(".")) -> str | None:
    """SHA-256 of a claim's test file (its path relative to ``root``, the repository) as code:
    its syntax tree without docstrings, as the cache hashes a run's modules, so rewording a
    docstring or a comment keeps the file's entries current.  None if the file is missing or
    does not parse."""
    from mechverify.training.cache import _without_docstrings

    path = Path(root) / test_file
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    dump = ast.dump(_without_docstrings(tree), annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest()


def record(report: list[dict], *, scale: str, seed: int, path: Path = LEDGER,
           date: str | None = None, root: Path = Path(".")) -> int:
    """Merge the trained rows of a claims report into the ledger (replacing the entries of
    the same scale, claim and seed).  Returns the number of entries written."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    date = date or _dt.date.today().isoformat()
    data = load(path)
    rows = [r for r in report if r.get("kind") == "trained" and r.get("outcome") not in (None, "not run")]
    fresh = {}
    for row in rows:
        test_file = row.get("test", "").split("::", 1)[0]
        if not test_file:
            raise ValueError(f"claims report row {row.get('id')!r} has no 'test' (node id of its test)")
        digest = test_digest(test_file, root)
        if digest is None:
            raise ValueError(f"claims report row {row['id']!r}: its test file {test_file!r} is missing or does not parse")
        entry = {"scale": scale, "claim": row["id"], "seed": seed, "date": date,
                 "verdict": row["outcome"], "wall_s": row.get("wall_s"),
                 "test": row["test"], "test_digest": digest, "runs": row.get("runs", [])}
        entry.update({k: row[k] for k in _KEPT if k in row and k != "outcome"})
        fresh[(scale, row["id"], seed)] = entry
    data["entries"] = [e for e in data["entries"] if (e["scale"], e["claim"], e["seed"]) not in fresh]
    data["entries"] += list(fresh.values())
    save(data, path)
    return len(fresh)


def current_digest(run: dict) -> str | None:
    """The code digest of ``run``'s config class under today's code (None if the class is gone)."""
    from mechverify.training.cache import code_digest

    module, _, qualname = run.get("class", "").partition(":")
    try:
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return code_digest(cls)
    except (ImportError, AttributeError, TypeError):  # a renamed module or class: never current
        return None


def _fields_key(fields) -> str:
    return json.dumps(fields, sort_keys=True, default=repr)


@functools.cache
def _catalogued(scale: str, seed: int) -> dict[str, frozenset]:
    """Config class ("module:qualname") -> the fields (:func:`_fields_key`) of every run that
    the package's catalogues list at ``scale`` for training seed ``seed``."""
    from mechverify.training.runner import catalogue_runs

    out: dict[str, set] = {}
    for config in catalogue_runs(scale, seed):
        name = f"{type(config).__module__}:{type(config).__qualname__}"
        out.setdefault(name, set()).add(_fields_key(json.loads(_fields_key(dataclasses.asdict(config)))))
    return {name: frozenset(keys) for name, keys in out.items()}


def in_catalogue(run: dict, scale: str, seed: int) -> bool:
    """``run`` (a ledger run record) is one that today's catalogues list at ``scale`` and seed
    ``seed``, or of a config class that no catalogue lists."""
    listed = _catalogued(scale, seed).get(run.get("class", ""))
    return listed is None or _fields_key(run.get("fields")) in listed


def stale_reason(entry: dict, root: Path = Path(".")) -> str | None:
    """Why ``entry`` is stale (its test file changed, a run's code changed, or a run is no
    longer in its catalogue, :func:`in_catalogue`), or None while it is current."""
    test_file = entry["test"].split("::", 1)[0]
    digest = test_digest(test_file, root)
    if digest is None or digest != entry["test_digest"]:
        return f"test file {test_file} " + ("changed" if digest is not None else "missing or not parsable")
    for run in entry["runs"]:
        name = run.get("class", "?").rpartition(":")[2]
        if current_digest(run) != run.get("code_digest"):
            return f"code of {name} changed"
        if not in_catalogue(run, entry["scale"], entry["seed"]):
            return f"a {name} run is no longer in its catalogue"
    return None


def is_current(entry: dict, root: Path = Path(".")) -> bool:
    """The test file's digest and every run's code digest still match today's code, and every
    run is still in its catalogue (:func:`stale_reason` says which does not)."""
    return stale_reason(entry, root) is None


def _verdicts(entries: list[dict]) -> str:
    """``passed 2/3, failed 1/3`` and the spread of the worst error."""
    counts = Counter(e["verdict"] for e in entries)
    text = ", ".join(f"{v} {c}/{len(entries)}" for v, c in counts.most_common())
    errors = [e["worst_error"] for e in entries
              if isinstance(e.get("worst_error"), (int, float)) and math.isfinite(e["worst_error"])]
    if errors and min(errors) != max(errors):
        text += f" (err {min(errors):.3g}–{max(errors):.3g})"
    elif errors:
        text += f" (err {errors[0]:.3g})"
    return text


def summary(entries: list[dict], root: Path = Path(".")) -> str:
    """One cell: the verdicts over the current seeds (``passed 3/3``) with the spread of the
    worst error, then the stale seeds apart (``stale: seed 2 (inconclusive 1/1)``), so a stale
    seed is never counted as a current one."""
    if not entries:
        return "—"
    flags = [is_current(e, root) for e in entries]
    current = [e for e, ok in zip(entries, flags) if ok]
    stale = [e for e, ok in zip(entries, flags) if not ok]
    parts = [_verdicts(current)] if current else []
    if stale:
        seeds = ", ".join(str(s) for s in sorted({e["seed"] for e in stale}))
        parts.append(f"stale: seed{'s' if len(stale) > 1 else ''} {seeds} ({_verdicts(stale)})")
    return "; ".join(parts)


def by_claim(data: dict, scale: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in data["entries"]:
        if e["scale"] == scale:
            out.setdefault(e["claim"], []).append(e)
    return out


def current_entries(claim_id: str, scale: str, path: Path = LEDGER, root: Path = Path(".")) -> list[dict]:
    """The current entries of one claim at one scale (stale ones are left out)."""
    return [e for e in by_claim(load(path), scale).get(claim_id, []) if is_current(e, root)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechverify.ledger", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="merge a claims report (JSON) into the ledger")
    rec.add_argument("report", type=Path)
    rec.add_argument("--scale", choices=SCALES, required=True)
    rec.add_argument("--seed", type=int, required=True)
    rec.add_argument("--ledger", type=Path, default=LEDGER)
    show = sub.add_parser("show", help="print the ledger's verdicts per claim")
    show.add_argument("--scale", choices=SCALES, default="paper")
    show.add_argument("--ledger", type=Path, default=LEDGER)
    args = parser.parse_args(argv)
    if args.command == "record":
        n = record(json.loads(args.report.read_text(encoding="utf-8")), scale=args.scale, seed=args.seed,
                   path=args.ledger)
        print(f"{n} entries recorded in {args.ledger}")
        return 0
    rows = by_claim(load(args.ledger), args.scale)
    for claim in sorted(rows):
        print(f"{claim:<40} {summary(rows[claim])}")
        for e in sorted(rows[claim], key=lambda e: e["seed"]):
            reason = stale_reason(e)
            if reason:
                print(f"{'':<40}   seed {e['seed']} stale: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
