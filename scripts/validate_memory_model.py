#!/usr/bin/env python3
"""Validate the fast model behind ``cdmqta bench --bandwidth B`` against the program-level cycle model, memory included.

For every distinct GEMM shape of the SD-1.5 K/V LoRA step at ranks 4 and 128 (M cut to at most ``--max-m`` rows so
that the cycle-level model stays quick; N and K as in the step: head dimensions 40 / 80 / 160, 77 tokens, the
ranks), at each bandwidth: the mapper (cdmqta.sw.perf.mapper, the fast model of cdmqta.sw.perf.schedule) picks a
mapping and predicts its cycles; the tiler (cdmqta.sw.runtime.tiler.build_plan) emits that mapping's program and
the program-level model (cdmqta.sw.perf.program.program_cycles, exact against the RTL with the ideal memory) runs
it with the same memory. Prints per GEMM both cycle counts and the error; writes results/memory_model_validation.json.

    python scripts/validate_memory_model.py [--bandwidths 16 32 64 128] [--max-m 512] [--max-macs 2e8] [--json PATH]

The memory part itself (bandwidth, latency, outstanding reads) is not yet checked against RTL: the AXI memory
interface is not integrated in the accelerator yet.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from cdmqta.hw.config import QTAConfig
from cdmqta.sw.perf import mapper as M
from cdmqta.sw.perf import workloads as W
from cdmqta.sw.perf.memory import Memory
from cdmqta.sw.perf.program import program_cycles
from cdmqta.sw.runtime.tiler import GemmSpec, build_plan

ROOT = Path(__file__).resolve().parent.parent


def shapes(max_m, max_macs, ranks=(4, 128)):
    """Distinct (M cut, N, K, class) of the step at ``ranks``, at most ``max_macs`` MACs each."""
    rows = W.load_workload("sd15-lora-kv")
    out = []
    for g in rows:
        if g.rank and g.rank not in ranks:
            continue
        s = (min(g.m, max_m), g.n, g.k, g.cls)
        if s[0] * s[1] * s[2] <= max_macs and s[:3] not in [x[:3] for x in out]:
            out.append(s)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bandwidths", nargs="+", type=float, default=[16, 32, 64, 128])
    ap.add_argument("--latency", type=int, default=0, help="read latency in cycles (default 0)")
    ap.add_argument("--outstanding", type=int, default=0, help="outstanding read bursts (default 0: no limit)")
    ap.add_argument("--max-m", type=int, default=512, help="cut M to this many rows (default 512)")
    ap.add_argument("--max-macs", type=float, default=2e8, help="skip shapes with more MACs (default 2e8)")
    ap.add_argument("--json", default=str(ROOT / "results" / "memory_model_validation.json"))
    args = ap.parse_args(argv)
    cfg = QTAConfig(rows=64, cols=64, sp_rows=4096, acc_rows=1024)
    sh = shapes(args.max_m, args.max_macs)
    rows = []
    t0 = time.perf_counter()
    print(f"{'B':>5} {'M':>5} {'N':>5} {'K':>5} {'class':9} {'mapping':22} {'fast':>9} {'program':>9} {'err %':>7}")
    for bw in args.bandwidths:
        mem = Memory(bandwidth=bw, latency=args.latency, outstanding=args.outstanding)
        for m, n, k, cls in sh:
            r = M.map_gemm(m, n, k, cfg, mem)
            mp = r.mapping
            plan = build_plan(GemmSpec(m, n, k), cfg, mp.dataflow, mp.order, mp.chunk, mp.split)
            prog = program_cycles(plan.program, cfg, memory=mem)
            err = 100.0 * (r.cycles - prog) / prog
            rows.append({"bandwidth": bw, "latency": args.latency, "outstanding": args.outstanding, "m": m, "n": n,
                         "k": k, "class": cls, "mapping": f"{mp.dataflow}/{mp.order}/{mp.chunk}/{mp.split}",
                         "fast_cycles": r.cycles, "program_cycles": prog, "error_pct": round(err, 3),
                         "roofline_cycles": round(r.roofline_cycles, 1), "dram_bytes": r.dram_bytes,
                         "compulsory_bytes": r.compulsory_bytes})
            print(f"{bw:5g} {m:5d} {n:5d} {k:5d} {cls:9} {rows[-1]['mapping']:22} {r.cycles:9d} {prog:9d} {err:7.2f}",
                  flush=True)
    errs = [abs(r["error_pct"]) for r in rows]
    summary = {"gemms": len(rows), "shapes": len(sh), "bandwidths": args.bandwidths,
               "max_abs_error_pct": max(errs), "mean_abs_error_pct": round(sum(errs) / len(errs), 3),
               "within_1pct": sum(e <= 1.0 for e in errs), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{summary['gemms']} GEMMs ({summary['shapes']} shapes x {len(args.bandwidths)} bandwidths): max |error| "
          f"{summary['max_abs_error_pct']:.2f} %, mean {summary['mean_abs_error_pct']:.2f} %, within 1 %: "
          f"{summary['within_1pct']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
