"""``python -m bench [--quick] [--json FILE] [--only NAME] [--threads N] [--thp]``: run the benchmarks."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

from bench import BENCHMARKS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and no implementation variants at large n")
    parser.add_argument("--json", metavar="FILE", help="also write every timing and ratio to FILE")
    parser.add_argument("--only", choices=BENCHMARKS, action="append",
                        help="run only this benchmark (repeatable); default: all")
    parser.add_argument("--thp", action="store_true",
                        help="set THP_MEM_ALLOC_ENABLE=1 before torch loads, so PyTorch backs large "
                             "CPU tensors with transparent huge pages (fewer page faults on fresh "
                             "allocations); off by default so the numbers are what a plain run gets")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch.set_num_threads(N) before running (default: torch's default)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")
    if args.thp:
        if "torch" in sys.modules:
            parser.error("--thp must take effect before torch is imported")
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
        print(f"torch.set_num_threads({args.threads}) (--threads)")
    record = {"argv": sys.argv[1:] if argv is None else list(argv), "quick": args.quick,
              "threads_option": args.threads, "thp_option": args.thp,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmarks": {}}
    t0 = time.perf_counter()
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        record["benchmarks"][name] = module.run(quick=args.quick, emit=print)
    record["wall_s"] = time.perf_counter() - t0
    print(f"\nall benchmarks: {record['wall_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
