"""``python -m mechverify.paper_figures``: regenerate the paper figures.

    python -m mechverify.paper_figures --list
    python -m mechverify.paper_figures gd_icl --quick          # every figure of one paper
    python -m mechverify.paper_figures gd_icl/training         # one figure
    python -m mechverify.paper_figures --all --quick --out figures

A figure already drawn by the same code (same scale and device) is copied from the cache
(``mechverify.paper_figures.output_cache``); ``--redraw`` draws it again.  Every run updates
``<out>/GALLERY.md``: each figure made in that folder with its caption, provenance and claims.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from mechverify.paper_figures.registry import FIGURES, listing
from mechverify.papers import MODULES


def load_all() -> None:
    for module in MODULES:
        importlib.import_module(f"mechverify.paper_figures.{module}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechverify.paper_figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="paper modules (e.g. gd_icl) or figures (e.g. gd_icl/training)")
    parser.add_argument("--all", action="store_true", help="every figure of every paper")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", dest="quick", action="store_true", default=True,
                       help="CPU-sized runs (default)")
    scale.add_argument("--full", dest="quick", action="store_false", help="the paper-scale runs")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default: figures)")
    parser.add_argument("--recompute", action="store_true", help="ignore cached trained runs (and figures)")
    parser.add_argument("--redraw", action="store_true",
                        help="draw again instead of copying a cached figure (trained runs still cached)")
    parser.add_argument("--device", default="cpu", help="torch device for training (cpu, cuda, ...)")
    args = parser.parse_args(argv)

    if args.list:        # from the source, without importing the figure modules (torch, matplotlib)
        for f in listing():
            print(f"{f['name']:<28} {f['paper_figure']:<40} cost {f['cost']:<8} claims: {', '.join(f['claims'])}")
        return 0
    load_all()
    from mechverify.paper_figures.gallery import write_gallery
    from mechverify.paper_figures.output_cache import render

    if args.all:
        chosen = list(FIGURES.values())
    else:
        if not args.targets:
            parser.error("name a paper or figure (see --list), or pass --all")
        chosen = []
        for t in args.targets:
            match = [f for f in FIGURES.values() if f.name == t or f.paper == t]
            if not match:
                parser.error(f"unknown figure or paper {t!r}; see --list")
            chosen += [f for f in match if f not in chosen]
    made = {}
    for f in chosen:
        start = time.perf_counter()
        made[f.name], hit = render(f, args.out, quick=args.quick, recompute=args.recompute, redraw=args.redraw,
                                   device=args.device)
        print(f"{f.name}: {', '.join(str(p) for p in made[f.name])} ({time.perf_counter() - start:.1f} s"
              f"{', cached' if hit else ''})")
    print(f"gallery: {write_gallery(args.out, made)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
