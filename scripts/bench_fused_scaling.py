#!/usr/bin/env python3
"""What fused LoRA GEMMs and delayed scaling save on SD-1.5's K/V LoRA GEMMs, counting only programs that run.

    python scripts/bench_fused_scaling.py [--rows 64 --cols 64] [--ranks 4,8,...] [--json FILE]

For every rank of ``sw/perf/data/sd15-lora-kv.csv`` (the 32 cross-attention K/V LoRA layers of one SD-1.5 U-Net
training step, all reading the same 77 x 768 text embedding), the LoRA GEMMs of the step and the frozen K/V
projections ``Y0 = c . W^T`` of those layers are planned by the
runtime's tiler exactly as the runtime issues them (:mod:`cdmqta.sw.model.lora`, :class:`cdmqta.sw.runtime.engines
.TiledEngine`), in four variants:

- unfused / current: per layer H and dH to INT32, each followed by its requantization program (LOAD the INT32
  rows into the accumulator, STORE through the epilogue), Y1, Y0, dB, dA;
- unfused / delayed: H and dH as one requantizing GEMM each (``gemm_q``: INT8 STOREs, amax register);
- fused / current: one H GEMM of all layers (``c . [A_1; ...; A_32]^T``, INT32) and one requantization program
  per layer, one Y0 GEMM ``c . [W_1; ...; W_32]^T``, one dA GEMM of all layers; Y1, dH (+ requantization), dB per layer;
- fused / delayed: one requantizing H GEMM with a segment (CONFIG, amax register) per layer, dH as gemm_q.

Cycles are the tiler's cost model (:func:`cdmqta.sw.perf.program.program_cycles`, equal to the RTL's
``busy_cycles`` on every validated program; a program runs alone, so host-port transfers are included), DRAM bytes
the data the programs move over the host port (LOAD rows into the scratchpad: ``lanes`` bytes; into the
accumulator and INT32 STOREs: ``4 * cols``; INT8 STOREs: ``cols``). Programs are sequential here: no overlap
between programs is assumed. Writes ``results/bench_fused_scaling.json``.
"""

import argparse
import json
import os
import sys
import time

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import AMAX_SLOTS, Op, OutFormat, decode
from cdmqta.sw.perf.workloads import load_workload
from cdmqta.sw.runtime.tiler import Epilogue, GemmSpec, plan_gemm, plan_requant

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(HERE), "results")
REQ = Epilogue(out="int8", mult=40000, shift=20)       # the parameters do not change cycles or bytes
VARIANTS = ("unfused/current", "unfused/delayed", "fused/current", "fused/delayed")


def program_bytes(program, config):
    """Bytes a program moves over the host port (see the module doc)."""
    total = 0
    for word in program:
        op, f = decode(int(word))
        if op == Op.LOAD:
            total += f["rows"] * (4 * config.cols if f["to_acc"] else config.lanes)
        elif op == Op.STORE:
            total += f["rows"] * f["cols"] * (4 if f["out"] == OutFormat.INT32 else 1)
    return total


_CACHE = {}


class Counter:
    def __init__(self, config):
        self.config, self.cycles, self.bytes, self.programs, self._cache = config, 0, 0, 0, _CACHE

    def _add(self, key, make):
        if key not in self._cache:
            plan = make()
            self._cache[key] = (plan.est_cycles, program_bytes(plan.program, self.config))
        c, b = self._cache[key]
        self.cycles += c
        self.bytes += b
        self.programs += 1

    def gemm(self, m, n, k, epilogue=Epilogue()):
        self._add(("g", m, n, k, epilogue), lambda: plan_gemm(GemmSpec(m, n, k, "int8", epilogue), self.config))

    def requant(self, m, n):
        self._add(("r", m, n), lambda: plan_requant(m, n, REQ, self.config))


def count(rows, variant, config):
    """(cycles, bytes, programs) of one variant on the LoRA rows of one rank and the frozen K/V projections."""
    fused, delayed = variant.startswith("fused"), variant.endswith("delayed")
    by = {}
    for g in rows:
        if g.cls == "frozen":
            by.setdefault(g.name, {})["Y0"] = g
            continue
        layer, _, kind = g.name.rpartition(".")
        by.setdefault(layer, {})[kind] = g
    layers = sorted(by)
    cnt = Counter(config)
    q = Epilogue(out="int8", mult=REQ.mult, shift=REQ.shift)
    hs = [by[n]["H"] for n in layers]
    if fused:
        y0s = [by[n]["Y0"] for n in layers]
        cnt.gemm(y0s[0].m, sum(y.n for y in y0s), y0s[0].k)
        m, k = hs[0].m, hs[0].k
        widths = [h.n for h in hs]
        if delayed:
            for i in range(0, len(widths), AMAX_SLOTS):
                part = widths[i:i + AMAX_SLOTS]
                cnt.gemm(m, sum(part), k, Epilogue(out="int8", segments=tuple(
                    (w, REQ.mult, REQ.shift, "nearest", 0) for w in part)))
        else:
            cnt.gemm(m, sum(widths), k)
            for h in hs:
                cnt.requant(h.m, h.n)
    for n in layers:
        g = by[n]
        if not fused:
            if delayed:
                cnt.gemm(g["H"].m, g["H"].n, g["H"].k, q)
            else:
                cnt.gemm(g["H"].m, g["H"].n, g["H"].k)
                cnt.requant(g["H"].m, g["H"].n)
        cnt.gemm(g["Y1"].m, g["Y1"].n, g["Y1"].k)
        if not fused:
            cnt.gemm(g["Y0"].m, g["Y0"].n, g["Y0"].k)
        if delayed:
            cnt.gemm(g["dH"].m, g["dH"].n, g["dH"].k, q)
        else:
            cnt.gemm(g["dH"].m, g["dH"].n, g["dH"].k)
            cnt.requant(g["dH"].m, g["dH"].n)
        cnt.gemm(g["dB"].m, g["dB"].n, g["dB"].k)
        if not fused:
            cnt.gemm(g["dA"].m, g["dA"].n, g["dA"].k)
    if fused:
        das = [by[n]["dA"] for n in layers]
        cnt.gemm(sum(d.m for d in das), das[0].n, das[0].k)
    return cnt.cycles, cnt.bytes, cnt.programs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--ranks", default="4,8,16,32,64,128", help="comma-separated LoRA ranks (default: all six)")
    p.add_argument("--json", default=os.path.join(RESULTS, "bench_fused_scaling.json"))
    args = p.parse_args(argv)
    config = QTAConfig(rows=args.rows, cols=args.cols)
    ranks = [int(r) for r in args.ranks.split(",")]
    out = {"command": " ".join(["python", "scripts/bench_fused_scaling.py"] + list(argv or sys.argv[1:])),
           "config": config.to_dict(), "ranks": {}}
    print(f"SD-1.5 K/V LoRA GEMMs and frozen K/V projections (32 layers) on {args.rows}x{args.cols}: cycles "
          f"(program model) and host bytes")
    print(f"{'rank':>4} {'variant':16} {'programs':>8} {'cycles':>10} {'vs unfused/current':>18} {'DRAM bytes':>11} "
          f"{'vs u/c':>7}")
    for r in ranks:
        t = time.perf_counter()
        rows = [g for g in load_workload("sd15-lora-kv", rank=r)
                if g.cls == "lora" or (g.cls == "frozen" and g.a_id == "text_emb")]
        res = {v: dict(zip(("cycles", "bytes", "programs"), count(rows, v, config))) for v in VARIANTS}
        base = res["unfused/current"]
        for v in VARIANTS:
            x = res[v]
            print(f"{r:4d} {v:16} {x['programs']:8d} {x['cycles']:10d} {x['cycles'] / base['cycles']:18.3f} "
                  f"{x['bytes']:11d} {x['bytes'] / base['bytes']:7.3f}")
        res["seconds"] = round(time.perf_counter() - t, 1)
        out["ranks"][str(r)] = res
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
