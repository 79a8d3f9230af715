"""Content-hashed cache of trained runs and figure data.

One config (a frozen dataclass) -> one hash -> one entry.  The hash covers the config's
fields, its class name, the package version and the source of the module that defines
the config class (where its training code lives), so neither a new release nor an edit of
the training code reuses old runs.

An entry is a single file ``<hash>.pt``: a header line with the SHA-256 of the payload,
then the payload (``torch.save`` of plain tensors, numbers, strings, lists and dicts,
loaded back with ``weights_only=True``).  Writes go to a temporary file in the same folder
and are renamed into place, so an interrupted write never leaves a usable entry; an entry
whose checksum or format does not match is reported, deleted and recomputed.

Location: ``$MECHVERIFY_CACHE`` if set, else ``$XDG_CACHE_HOME/mechverify``, else
``~/.cache/mechverify``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

MAGIC = b"mechverify-cache-v1 "


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


def config_hash(config) -> str:
    """SHA-256 (hex, 20 chars) of the config's class and fields, the package version and
    the source of the config's module."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance; got {type(config).__name__}")
    try:
        source = inspect.getsource(inspect.getmodule(type(config)))
    except (OSError, TypeError):  # defined interactively: no source to hash
        source = ""
    blob = json.dumps({"class": type(config).__qualname__, "fields": dataclasses.asdict(config),
                       "version": package_version(),
                       "source": hashlib.sha256(source.encode()).hexdigest()}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _encode(payload) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _decode(blob: bytes):
    """The payload, or raise ValueError if the entry is truncated or corrupted."""
    if not blob.startswith(MAGIC):
        raise ValueError("bad header")
    head, sep, body = blob[len(MAGIC):].partition(b"\n")
    if not sep or hashlib.sha256(body).hexdigest().encode() != head:
        raise ValueError("checksum mismatch")
    return torch.load(io.BytesIO(body), weights_only=True)


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


def entry_path(config, directory: Path | None = None) -> Path:
    """Where ``config``'s entry lives."""
    return Path(directory or cache_dir()) / f"{type(config).__name__}-{config_hash(config)}.pt"


def lookup(config, directory: Path | None = None):
    """The cached payload for ``config``, or None when absent; a corrupt entry is reported,
    deleted and treated as absent."""
    path = entry_path(config, directory)
    if not path.exists():
        return None
    try:
        return _decode(path.read_bytes())
    except Exception as err:  # any unreadable entry is recomputed, never used
        warnings.warn(f"cache entry {path.name} is corrupt ({err}); recomputing", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def store(config, payload, directory: Path | None = None):
    """Write ``payload`` as ``config``'s entry (atomically) and return it."""
    write_atomic(entry_path(config, directory), _encode(payload))
    return payload


def cached(config, compute: Callable[[], object], *, recompute: bool = False, directory: Path | None = None):
    """Return the cached payload for ``config``, computing and storing it when absent,
    corrupted, or when ``recompute`` is set."""
    payload = None if recompute else lookup(config, directory)
    return store(config, compute(), directory) if payload is None else payload
