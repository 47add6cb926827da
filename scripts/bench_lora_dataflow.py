"""Flexible dataflow vs forced WS on the LoRA GEMMs, measured on the RTL's counters; and a plain GEMM vs ideal.

On an 8x8 accelerator (QTAConfig defaults) under Verilator:
1. the GEMMs of one LoRA training step (H, Y1, Y0, dH, dB, dA, dX0, dXlora; see cdmqta.sw.model.lora) of the demo's
layer
   (in=72, out=40, r=4, T=50) and of a larger one (in=out=128, r=4, T=77): the tiler's own choice against WS
   forced for every GEMM (the fixed-dataflow baseline on the same controller), per GEMM: cycles from the
   hardware's busy counter, utilization = ideal M*N*K/(R*C) / cycles;
2. a plain 64x64x256 GEMM: RTL cycles against ideal M*N*K/(R*C) = 16384 (target: within 10 %).
Every result is also checked bit for bit (against PyTorch and the ISA emulator). The tiler's cost-model estimate
is printed beside each measurement (its error validates the model). Prints a table and writes JSON.

    python scripts/bench_lora_dataflow.py --json bench_lora_dataflow.json
"""

import argparse
import json
import sys
import time

from cdmqta.hw.config import QTAConfig
from cdmqta.sw.rtl.backend import run_job, run_jobs, sim_sizes
from cdmqta.sw.runtime.engines import GoldenBackend

LAYERS = {"demo": dict(tokens=50, in_features=72, out_features=40, rank=4),
          "large": dict(tokens=77, in_features=128, out_features=128, rank=4)}


def lora_gemms(tokens, in_features, out_features, rank):
    t, i, o, r = tokens, in_features, out_features, rank
    return {"H": (t, r, i), "Y1": (t, o, r), "Y0": (t, o, i), "dH": (t, r, o), "dB": (o, r, t), "dA": (r, i, t),
            "dX0": (t, i, o), "dXlora": (t, i, r)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=8, help="array rows (default 8)")
    p.add_argument("--cols", type=int, default=8, help="array columns (default 8)")
    p.add_argument("--layers", default="demo,large", help="comma-separated LoRA layers: demo, large")
    p.add_argument("--backend", choices=("rtl", "golden"), default="rtl",
                   help="rtl (cycles from the RTL counters, default) or golden (cost model only)")
    p.add_argument("--json", default="bench_lora_dataflow.json", help="output JSON file")
    args = p.parse_args(argv)

    cfg = QTAConfig(rows=args.rows, cols=args.cols)
    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    for name in layers:
        if name not in LAYERS:
            raise SystemExit(f"unknown layer {name!r}: choose from {', '.join(LAYERS)}")

    jobs, index = [], []
    for layer in layers:
        shapes = lora_gemms(**LAYERS[layer])
        for mode in ("flexible", "ws"):
            jobs.append({"kind": "gemms", "gemms": [[m, n, k, "int8", None if mode == "flexible" else "ws", 7, g]
                                                     for g, (m, n, k) in shapes.items()]})
            index.append((layer, mode))
    jobs.append({"kind": "gemms", "gemms": [[64, 64, 256, "int8", d, 5, f"gemm64x64x256_{d or 'flexible'}"]
                                             for d in (None, "ws", "os")]})
    index.append(("gemm", "plain"))

    t0 = time.perf_counter()
    if args.backend == "rtl":
        results, timing = run_jobs(cfg, jobs)
    else:
        results = [run_job(GoldenBackend(cfg, host_words=sim_sizes(cfg)[0]), j) for j in jobs]
        timing = {"build_s": 0.0, "sim_s": time.perf_counter() - t0}
    out = {"config": cfg.to_dict(), "backend": args.backend, "seconds": timing, "lora": {}, "gemm": [],
           "all_bit_exact": all(r["bit_exact"] and not r["emulator_mismatches"] for r in results)}
    for (layer, mode), res in zip(index, results):
        rows = [{k: s[k] for k in ("name", "m", "n", "k", "dataflow", "cycles", "ideal", "utilization",
                                   "est_cycles", "bit_exact")} for s in res["stats"]]
        if layer == "gemm":
            out["gemm"] = rows
        else:
            out["lora"].setdefault(layer, {})[mode] = rows

    src = "RTL counters" if args.backend == "rtl" else "cost model"
    print(f"{cfg.rows}x{cfg.cols} array, cycles from the {src}; est = the tiler's cost model")
    for layer, modes in out["lora"].items():
        lay = LAYERS[layer]
        print(f"\nLoRA layer {layer}: T={lay['tokens']} in={lay['in_features']} out={lay['out_features']} "
              f"r={lay['rank']}")
        print(f"{'GEMM':7s} {'M':>4s} {'N':>4s} {'K':>4s} | {'flex':>4s} {'cycles':>7s} {'est':>6s} {'util':>6s} | "
              f"{'WS cycles':>9s} {'util':>6s} | speed-up")
        tot = {"flexible": 0, "ws": 0}
        ideal = 0.0
        for f, w in zip(modes["flexible"], modes["ws"]):
            tot["flexible"] += f["cycles"]
            tot["ws"] += w["cycles"]
            ideal += f["ideal"]
            print(f"{f['name']:7s} {f['m']:4d} {f['n']:4d} {f['k']:4d} | {f['dataflow']:>4s} {f['cycles']:7d} "
                  f"{f['est_cycles']:6d} {f['utilization']:6.3f} | {w['cycles']:9d} {w['utilization']:6.3f} | "
                  f"{w['cycles'] / f['cycles']:.2f}x")
        modes["total"] = {"flexible_cycles": tot["flexible"], "ws_cycles": tot["ws"], "ideal": ideal,
                          "flexible_utilization": ideal / tot["flexible"], "ws_utilization": ideal / tot["ws"],
                          "speedup": tot["ws"] / tot["flexible"]}
        t = modes["total"]
        print(f"{'step':7s} {'':14s} | {'':4s} {t['flexible_cycles']:7d} {'':6s} {t['flexible_utilization']:6.3f} | "
              f"{t['ws_cycles']:9d} {t['ws_utilization']:6.3f} | {t['speedup']:.2f}x")
    print("\nplain GEMM 64x64x256, ideal M*N*K/(R*C) =", int(64 * 64 * 256 / cfg.macs))
    for g in out["gemm"]:
        print(f"{g['name']:28s} {g['dataflow']:>3s} {g['cycles']:7d} cycles  est {g['est_cycles']:6d}  "
              f"cycles/ideal {g['cycles'] / g['ideal']:.3f}  utilization {g['utilization']:.3f}")
    print(f"\nall bit-exact: {'yes' if out['all_bit_exact'] else 'NO'}; build {timing['build_s']:.0f} s, "
          f"run {timing['sim_s']:.0f} s")
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    return 0 if out["all_bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
