#!/usr/bin/env python3
"""The README's performance numbers: the SD-1.5 LoRA step on a 64 x 64 array against the DRAM bandwidth.

    python scripts/bench_sd15.py [--out results/bench_sd15] [--bandwidths unlimited 128 64 32 16] [--no-scalesim]
                                 [--workloads sd15-lora-kv sd15-lora-all]

For every bandwidth (bytes/cycle; ``unlimited`` = operands on chip, compute only) and workload it writes
<workload>-B<bandwidth>.json (what ``cdmqta bench --workload W --bandwidth B --json`` writes), then summary.md (the
tables printed here) and <workload>-bandwidth.png (``cdmqta bench --plot``'s figure: utilization and energy
against B). The all-projections workload runs only where asked (default: unlimited only, its figures before the
memory model).
"""

import argparse
import json
import os
import sys
import time

from cdmqta.sw.apps import bench
from cdmqta.sw.perf.memory import parse_bandwidth


def _row(bw, out):
    """One summary line per rank of a run."""
    lines = []
    for r, s in out["per_rank"].items():
        u = s["roofline_utilization_designs"]
        lines.append(
            f"| {bw} | {r} | {s['step_utilization']:.3f} | {s['roofline_utilization']:.3f} | "
            f"{u['ws_overlap']:.3f} | {u['fixed_ws']:.3f} | "
            f"{s['speedup_vs_fixed_ws']:.3f} [{s['speedup_bound_vs_fixed_ws_roofline']:.3f}] | "
            f"{s['energy_efficiency_vs_fp16_fixed_ws']:.2f} [{s['energy_efficiency_onchip_vs_fp16_fixed_ws']:.2f}] | "
            f"{s['energy_ours_mj']:.0f} | {s['dram_bytes'] / 1e9:.2f} | {s['compulsory_bytes'] / 1e9:.2f} | "
            f"{u['ours_fused_requant']:.3f} | {u['ours_flash']:.3f} | "
            f"{s['energy_mj_designs']['fixed_ws'] / s['energy_mj_designs']['ours_fused_requant']:.2f} | "
            f"{s['energy_mj_designs']['fixed_ws'] / s['energy_mj_designs']['ours_flash']:.2f} |")
    return lines


HEADER = ["| B | rank | step util | roofline util ours | (b) | (a) | speed-up vs (a) [bound (a)/roofline] | "
          "energy eff. vs FP16 (a) [on-chip] | ours mJ | DRAM GB | compulsory GB | roofline util fused-requant | "
          "flash | energy eff. fused-requant | flash |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("results", "bench_sd15"), help="output folder")
    p.add_argument("--bandwidths", nargs="+", default=["unlimited", "128", "64", "32", "16"])
    p.add_argument("--workloads", nargs="+", default=["sd15-lora-kv"])
    p.add_argument("--all-unlimited", action="store_true",
                   help="also run sd15-lora-all with unlimited bandwidth (its compute-only figures)")
    p.add_argument("--no-scalesim", action="store_true", help="skip SCALE-Sim")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    md = []
    runs = [(wl, b) for wl in args.workloads for b in args.bandwidths]
    if args.all_unlimited:
        runs.append(("sd15-lora-all", "unlimited"))
    sweeps = {}
    for wl, b in runs:
        bw = parse_bandwidth(b)
        t = time.perf_counter()
        out = bench.run_bench(wl, None, 64, 64, bw, scalesim=not args.no_scalesim and bw is None)
        tag = "unlimited" if bw is None else f"{bw:g}"
        with open(os.path.join(args.out, f"{wl}-B{tag}.json"), "w") as f:
            json.dump(out, f, indent=1, default=str)
            f.write("\n")
        sweeps.setdefault(wl, {})[bw] = out
        text = bench._fmt_summary(out)
        print(f"{wl} B={tag}: {time.perf_counter() - t:.0f} s\n{text}\n", flush=True)
        md += [f"## {wl}, bandwidth {tag}", "", "```", text, "```", ""]
        step = [c for c in out["classes"] if c["rank"] == out["ranks"][0]]
        md += ["```", bench._fmt_table({"classes": step}), "```", ""]
    for wl, sweep in sweeps.items():
        if len(sweep) > 1:
            bench.plot_bandwidth(sweep, os.path.join(args.out, f"{wl}-bandwidth.png"))
            md += [f"## {wl}: against the bandwidth", ""] + HEADER
            for bw, out in sweep.items():
                md += _row("unlimited" if bw is None else f"{bw:g}", out)
            md.append("")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
