#!/usr/bin/env python3
"""The README's performance numbers: both SD-1.5 LoRA workloads, every rank 4..128, on a 64 x 64 array.

    python scripts/bench_sd15.py [--out results/bench_sd15] [--rows 64 --cols 64] [--bandwidth 0] [--no-scalesim]

Writes <workload>.json (what ``cdmqta bench --json`` writes), <workload>.png and summary.md (the tables printed
here). Each file is also reproducible alone with ``cdmqta bench --workload <workload> --json ... --plot ...``.
"""

import argparse
import json
import os
import sys

from cdmqta.sw.apps import bench


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("results", "bench_sd15"), help="output folder")
    p.add_argument("--rows", type=int, default=64, help="array rows (default 64)")
    p.add_argument("--cols", type=int, default=64, help="array columns (default 64)")
    p.add_argument("--bandwidth", type=float, default=0.0, help="DRAM bytes/cycle (default 0 = unlimited)")
    p.add_argument("--no-scalesim", action="store_true", help="skip SCALE-Sim")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    md = []
    for wl in ("sd15-lora-kv", "sd15-lora-all"):
        out = bench.run_bench(wl, None, args.rows, args.cols, args.bandwidth, scalesim=not args.no_scalesim)
        with open(os.path.join(args.out, f"{wl}.json"), "w") as f:
            json.dump(out, f, indent=1, default=str)
            f.write("\n")
        bench.plot(out, os.path.join(args.out, f"{wl}.png"))
        text = bench._fmt_summary(out)
        print(text)
        print()
        md += [f"## {wl}", "", "```", text, "```", ""]
        step = [c for c in out["classes"] if c["rank"] == out["ranks"][0]]
        md += ["```", bench._fmt_table({"classes": step}), "```", ""]
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
