"""Cache of rendered figures, so a rerun with a warm cache takes seconds.

A figure's files are a deterministic function of the package's code, the figure's name, the
scale (``--quick``/``--full``) and the device (seeds are fixed; trained runs are themselves
cached by config).  The key hashes exactly those: every ``.py`` file of the package folders
(``theory``, ``constructions``, ``training``, ``paper_figures``), the package version, the
name, the scale and the device.  So any code change redraws, and nothing else does.

An entry is a folder ``<cache>/figures/<key>/`` holding the files and ``manifest.json``
(relative path -> SHA-256).  It is written under a temporary name and renamed into place,
so an interrupted write leaves no entry; an entry whose files do not match their checksums
is deleted and the figure redrawn.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from mechverify.training.cache import cache_dir, package_version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("theory", "constructions", "training", "paper_figures")


@lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 over the package's Python sources (paths and contents, sorted)."""
    h = hashlib.sha256()
    for folder in PACKAGE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def figure_key(name: str, quick: bool, device: str) -> str:
    blob = json.dumps({"figure": name, "quick": bool(quick), "device": str(device), "version": package_version(),
                       "source": source_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _restore(entry: Path, out_dir: Path) -> list[Path] | None:
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if any(_sha(entry / rel) != digest for rel, digest in manifest.items()):
            raise ValueError("checksum mismatch")
    except (OSError, ValueError) as err:
        warnings.warn(f"figure cache entry {entry.name} is corrupt ({err}); redrawing", stacklevel=3)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    paths = []
    for rel in manifest:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry / rel, target)
        paths.append(target)
    return paths


def _store(entry: Path, out_dir: Path, paths: list[Path]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=entry.name + ".", suffix=".tmp"))
    try:
        manifest = {}
        for p in paths:
            rel = Path(p).resolve().relative_to(out_dir.resolve()).as_posix()
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, tmp / rel)
            manifest[rel] = _sha(tmp / rel)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def render(figure, out_dir: Path, *, quick: bool = True, recompute: bool = False, redraw: bool = False,
           device: str = "cpu", directory: Path | None = None) -> tuple[list[Path], bool]:
    """Write ``figure``'s files into ``out_dir``: copied from the cache when an entry for the
    current code exists (and neither ``recompute`` nor ``redraw`` is set), else drawn by
    ``figure.make`` and stored.  Returns (paths, whether they came from the cache)."""
    out_dir = Path(out_dir)
    entry = Path(directory or cache_dir()) / "figures" / figure_key(figure.name, quick, device)
    if not (recompute or redraw) and entry.is_dir():
        paths = _restore(entry, out_dir)
        if paths is not None:
            return paths, True
    paths = figure.make(out_dir, quick=quick, recompute=recompute, device=device)
    _store(entry, out_dir, paths)
    return paths, False
