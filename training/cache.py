"""Content-hashed cache of trained runs and cached tables.

One config (a frozen dataclass) + one device -> one key -> one entry.  The key covers

* the config's class name and fields;
* the **code the run depends on**: the source closure of the config class's module, i.e.
  that module plus every ``mechverify.*`` module it imports (at module level or inside a
  function), followed transitively, plus the ``__init__`` of each package on the way.  Each
  source is hashed as its syntax tree with docstrings removed, so an edit of a comment, a
  docstring or the layout costs nothing, and any other edit of a module in the closure gives
  a new key (the run is trained again).  A paper's run catalogue (the module-level function
  decorated with :func:`mechverify.training.runner.catalogue`) is left out too: it only
  builds configs, whose fields are in the key, so an edit of one catalogue entry retrains
  that run and no other (the ledger checks its entries against the catalogue,
  :func:`mechverify.ledger.is_current`);
* the torch and numpy versions and the device type the run trained on (``cpu``, ``cuda``, ...).

So an edit of ``constructions/modules.py``, of a task sampler or of the runner retrains every
run that imports it, while an edit of another paper's training module, of ``paper_figures/``,
``verify/`` or ``bench/`` retrains nothing (none of those is imported by a run's module).

An entry is a single file ``<Class>-<key>.pt``: a header line with the SHA-256 of the
payload, then the payload (``torch.save`` of plain tensors, numbers, strings, lists and
dicts, loaded back with ``weights_only=True``).  Writes go to a temporary file in the same
folder and are renamed into place, so an interrupted write never leaves a usable entry; an
entry whose checksum or format does not match is reported, deleted and recomputed.  The
runner's checkpoints (:mod:`mechverify.training.runner`) use the same format.

Location: ``$MECHVERIFY_CACHE`` if set, else ``$XDG_CACHE_HOME/mechverify``, else
``~/.cache/mechverify``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

MAGIC = b"mechverify-cache-v2 "
PACKAGE = "mechverify"


def package_version() -> str:
    try:
        return version("mechverify")
    except PackageNotFoundError:
        return "0+unknown"


def cache_dir() -> Path:
    env = os.environ.get("MECHVERIFY_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "mechverify"


# --- the code a run depends on ---------------------------------------------------------------

@functools.cache
def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None


def _source_file(name: str) -> Path | None:
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _imported_modules(name: str, tree: ast.AST, is_package: bool) -> set[str]:
    """The ``mechverify.*`` modules that ``tree`` (module ``name``) imports anywhere."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                    # relative import
                parts = name.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            spec = _spec(base) if _in_package(base) else None
            if spec is not None and spec.submodule_search_locations is not None:
                found.update(f"{base}.{a.name}" for a in node.names if a.name != "*")   # from pkg import module
    return {m for m in found if _in_package(m) and _source_file(m) is not None}


def _is_catalogue(node: ast.stmt) -> bool:
    """A module-level function decorated with ``catalogue`` (``@catalogue`` or ``@runner.catalogue``)."""
    return isinstance(node, ast.FunctionDef) and any(
        (isinstance(d, ast.Name) and d.id == "catalogue") or (isinstance(d, ast.Attribute) and d.attr == "catalogue")
        for d in node.decorator_list)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body[0] = ast.Pass()
    return tree


@functools.cache
def _parsed(name: str) -> tuple[str, frozenset]:
    path = _source_file(name)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = _imported_modules(name, tree, path.name == "__init__.py")
    tree.body = [node for node in tree.body if not _is_catalogue(node)]
    dump = ast.dump(_without_docstrings(tree), annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest(), frozenset(imports)


def source_closure(module_name: str) -> dict[str, str]:
    """Module name -> digest for ``module_name`` and every ``mechverify.*`` module it imports,
    transitively, with the ``__init__`` of each enclosing package.  A module without a source
    file (defined interactively) contributes nothing."""
    if not isinstance(module_name, str) or not module_name:
        raise TypeError(f"module_name must be a non-empty str; got {module_name!r}")
    out, todo = {}, [module_name]
    while todo:
        name = todo.pop()
        if name in out or _source_file(name) is None:
            continue
        digest, imports = _parsed(name)
        out[name] = digest
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(m for m in (*imports, *(p for p in parents if _in_package(p))) if m not in out)
    return dict(sorted(out.items()))


def code_digest(config_class: type) -> str:
    """SHA-256 (hex) of :func:`source_closure` of the module that defines ``config_class``."""
    if not isinstance(config_class, type):
        raise TypeError(f"config_class must be a class; got {type(config_class).__name__}")
    closure = source_closure(config_class.__module__)
    if config_class.__module__ not in closure:                # e.g. a script's __main__
        try:
            closure["<source>"] = hashlib.sha256(inspect.getsource(inspect.getmodule(config_class)).encode()).hexdigest()
        except (OSError, TypeError):
            closure["<source>"] = ""
    return hashlib.sha256(json.dumps(closure, sort_keys=True).encode()).hexdigest()


def device_kind(device) -> str:
    """The device type a run trains on ("cpu", "cuda", ...): part of the key."""
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must name a torch device (cpu, cuda, cuda:1, ...); got {device!r}") from err


def config_hash(config, device="cpu", *, omit: tuple[str, ...] = ()) -> str:
    """SHA-256 (hex, 20 chars) of the config's class and fields (minus the fields in ``omit``),
    :func:`code_digest` of its class, the torch and numpy versions and :func:`device_kind`."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance; got {type(config).__name__}")
    fields = dataclasses.asdict(config)
    for name in omit:
        fields.pop(name, None)
    blob = json.dumps({"class": type(config).__qualname__, "fields": fields, "code": code_digest(type(config)),
                       "torch": torch.__version__, "numpy": np.__version__, "device": device_kind(device)},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# --- entries -----------------------------------------------------------------------------------

def encode(payload) -> bytes:
    """The bytes of an entry: header with the payload's SHA-256, then the payload."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(blob: bytes):
    """The payload, or raise ValueError if the entry is truncated or corrupted."""
    if not blob.startswith(MAGIC):
        raise ValueError("bad header")
    head, sep, body = blob[len(MAGIC):].partition(b"\n")
    if not sep or hashlib.sha256(body).hexdigest().encode() != head:
        raise ValueError("checksum mismatch")
    return torch.load(io.BytesIO(body), weights_only=True)


def read_entry(path: Path):
    """The payload stored at ``path``, or None when absent; a corrupt file is reported,
    deleted and treated as absent."""
    if not path.exists():
        return None
    try:
        return decode(path.read_bytes())
    except Exception as err:  # any unreadable entry is recomputed, never used
        warnings.warn(f"cache entry {path.name} is corrupt ({err}); recomputing", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def entry_path(config, directory: Path | None = None, device="cpu") -> Path:
    """Where ``config``'s entry (trained on ``device``) lives."""
    return Path(directory or cache_dir()) / f"{type(config).__name__}-{config_hash(config, device)}.pt"


def lookup(config, directory: Path | None = None, device="cpu"):
    """The cached payload for ``config`` on ``device``, or None when absent or corrupt."""
    return read_entry(entry_path(config, directory, device))


def store(config, payload, directory: Path | None = None, device="cpu"):
    """Write ``payload`` as ``config``'s entry (atomically) and return it."""
    write_atomic(entry_path(config, directory, device), encode(payload))
    return payload


def cached(config, compute: Callable[[], object], *, recompute: bool = False, directory: Path | None = None,
           device="cpu"):
    """Return the cached payload for ``config`` on ``device``, computing and storing it when
    absent, corrupted, or when ``recompute`` is set."""
    payload = None if recompute else lookup(config, directory, device)
    return store(config, compute(), directory, device) if payload is None else payload
