"""Validate the program-level cycle model (cdmqta.sw.perf.program.program_cycles) against the RTL's busy_cycles counter.

Runs a suite of random irregular GEMMs (1, primes, non-multiples of the array, beyond one tile, INT8 and INT4, the
three tiler mappings ws / os / is, plain INT32 and requantizing STOREs) on the Verilated SimTop of four array
shapes (8x8 with the default memories, 8x4 with small ones: the same builds as verif/test_e2e_rtl.py; 7x5 with odd
rows and one accumulator bank; 5x3s1 with a one-lane shift chain), records each GEMM's command program and its
cycles, and compares them with the model evaluated on the same program.

    python scripts/validate_cycle_model.py [--shapes 8x8 8x4 7x5 5x3s1] [--n 24] [--json out.json] [--reuse rtl.json]

``--reuse`` re-evaluates the model on programs / cycles recorded by an earlier run (no simulation).
Prints a per-GEMM table (shape, M N K, precision, mapping, epilogue, RTL cycles, model cycles, error %) and
max / mean |error| per shape; writes everything to the JSON file (default: results/cycle_model_validation.json).
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from cdmqta.hw.config import PRESETS, QTAConfig
from cdmqta.hw.isa import Op, decode
from cdmqta.sw.perf import analytic as A
from cdmqta.sw.perf.program import program_cycles, runs_cycles
from cdmqta.sw.rtl.backend import run_jobs, sim_sizes
from cdmqta.sw.runtime.tiler import GemmSpec, plan_gemm

ROOT = Path(__file__).resolve().parent.parent

SR = {"mult": 40503, "shift": 21, "bits": 8, "rounding": "stochastic", "seed": 0xC0FFEE}
NE4 = {"mult": 23111, "shift": 14, "bits": 4, "rounding": "nearest", "seed": 0}


def configs():
    """The four presets (cdmqta.hw.config.PRESETS): the same SimTop builds as the RTL regression."""
    return dict(PRESETS)


def gemm_suite(seed, n=24):
    """``n`` GEMM entries ``[m, n, k, precision, dataflow, seed, name, epilogue]`` (run_job's format): a fixed
    part covering the corner cases, then random irregular shapes cycling through the mappings."""
    rng = random.Random(seed)
    fixed = [[1, 1, 1, "int8", "ws"], [1, 13, 1, "int4", "os"], [17, 1, 29, "int8", "is"],
             [7, 11, 13, "int4", "ws"], [31, 37, 41, "int8", "os"], [23, 19, 11, "int8", "is"],
             [40, 9, 17, "int4", "os"], [19, 13, 29, "int8", "ws", SR], [19, 13, 29, "int8", "os", SR],
             [23, 9, 17, "int4", "is", NE4]]
    out = []
    for i, g in enumerate(fixed):
        ep = g[5] if len(g) > 5 else None
        out.append(g[:5] + [100 + i, None, ep])
    dims = [1, 2, 3, 5, 7, 8, 9, 11, 13, 16, 17, 23, 29, 31, 37]
    flows = ["ws", "os", "is", None]
    for i in range(n - len(fixed)):
        m, nn, k = (rng.choice(dims) for _ in range(3))
        prec = rng.choice(["int8", "int4"])
        ep = rng.choice([None, None, SR, dict(NE4, bits=4 if prec == "int4" else 8)])
        out.append([m, nn, k, prec, flows[i % len(flows)], 200 + i, None, ep])
    return out


def run_rtl(name, gemms, workdir):
    """Simulate ``gemms`` on the SimTop of preset ``name``; returns one record per GEMM (its program, RTL cycles,
    mapping, the number of runs it took and whether it was bit-exact)."""
    cfg = configs()[name]
    cmd_words = sim_sizes(cfg)[1]
    (res,), _ = run_jobs(cfg, [{"kind": "gemms", "gemms": gemms, "record_programs": True}], workdir=workdir)
    exact = res["bit_exact"] and not res["emulator_mismatches"]
    return [{"gemm": g, "dataflow": st["dataflow"], "order": st["order"], "chunk": st["chunk"],
             "program": st["program"], "cycles": st["cycles"], "runs": -(-len(st["program"]) // cmd_words),
             "est_cycles": st["est_cycles"], "bit_exact": exact and st["bit_exact"] is not False,
             "cmd_words": cmd_words} for g, st in zip(gemms, res["stats"])]


def model_cycles(rec, cfg):
    """The model on a recorded program (split like RtlBackend into runs of at most cmd_words commands)."""
    return runs_cycles([int(w, 16) for w in rec["program"]], cfg, rec["cmd_words"])


def evaluate(records):
    """Rows with the model's cycles and the error, and per-shape summaries."""
    cfgs = configs()
    rows, summary = [], {}
    for name, recs in records.items():
        errs = []
        for r in recs:
            g = r["gemm"]
            model = model_cycles(r, cfgs[name])
            err = 100.0 * (model - r["cycles"]) / r["cycles"]
            errs.append(abs(err))
            ep = g[7] or {}
            rows.append({"shape": name, "m": g[0], "n": g[1], "k": g[2], "precision": g[3],
                         "forced": g[4] or "auto", "mapping": r["dataflow"], "order": r["order"], "chunk": r["chunk"],
                         "epilogue": f"int{ep['bits']}-{ep['rounding'][:2]}" if ep else "int32",
                         "commands": len(r["program"]), "runs": r["runs"], "rtl_cycles": r["cycles"],
                         "model_cycles": model, "error_pct": round(err, 3), "bit_exact": r["bit_exact"]})
        summary[name] = {"gemms": len(recs), "max_abs_error_pct": round(max(errs), 3),
                         "mean_abs_error_pct": round(sum(errs) / len(errs), 3),
                         "exact": sum(e == 0 for e in errs)}
    return rows, summary


def table(rows, summary):
    lines = [f"{'shape':5s} {'M':>3s} {'N':>3s} {'K':>3s} {'prec':4s} {'map':>4s} {'epilogue':8s} {'cmds':>4s} "
             f"{'RTL':>6s} {'model':>6s} {'err %':>7s}"]
    for r in rows:
        lines.append(f"{r['shape']:5s} {r['m']:3d} {r['n']:3d} {r['k']:3d} {r['precision']:4s} {r['mapping']:>4s} "
                     f"{r['epilogue']:8s} {r['commands']:4d} {r['rtl_cycles']:6d} {r['model_cycles']:6d} "
                     f"{r['error_pct']:7.2f}")
    for name, s in summary.items():
        lines.append(f"{name}: {s['gemms']} GEMMs, exact {s['exact']}, max |error| {s['max_abs_error_pct']:.2f} %, "
                     f"mean |error| {s['mean_abs_error_pct']:.2f} %")
    return "\n".join(lines)


#: GEMMs for the analytic-vs-program comparison: (array, M, N, K). 8x8 / 8x4: the validation's arrays; 64x64: the
#: bench's array with moderate sizes shaped like SD-1.5 LoRA training GEMMs (base projections, rank-4 LoRA down /
#: up projections and their weight gradients, the 77-token text embedding), so that programs stay cheap to model.
ANALYTIC_GEMMS = [("8x8", 64, 64, 64), ("8x8", 100, 72, 40), ("8x8", 128, 128, 128), ("8x8", 200, 40, 96),
                  ("8x8", 77, 4, 96), ("8x8", 4, 96, 77), ("8x4", 60, 12, 96), ("8x4", 31, 37, 41),
                  ("64x64", 256, 256, 256), ("64x64", 1024, 64, 320), ("64x64", 320, 77, 64),
                  ("64x64", 1024, 4, 320), ("64x64", 1024, 320, 4), ("64x64", 4, 320, 1024), ("64x64", 77, 4, 768)]


def analytic_comparison():
    """The analytic per-GEMM model that ``cdmqta bench`` uses (analytic.gemm_cost "ours": best of ws / os / is by
    analytic.dataflow_cost, unlimited DRAM bandwidth) against the validated program model on the tiler's best program
    for the same GEMM (INT8, INT32 out). Returns rows with both cycle counts and the relative difference."""
    cfgs = dict(configs(), **{"64x64": QTAConfig(rows=64, cols=64, sp_rows=4096, acc_rows=1024)})
    out = []
    for shape, m, n, k in ANALYTIC_GEMMS:
        cfg = cfgs[shape]
        a = A.gemm_cost(m, n, k, "ours", cfg.rows, cfg.cols, tiling=A.tiling_for(cfg))
        plan = plan_gemm(GemmSpec(m, n, k), cfg)
        prog = program_cycles(plan.program, cfg)
        cmds = [decode(w) for w in plan.program]
        rows_in = sum(f["rows"] for op, f in cmds if op == Op.LOAD)
        # the tiler's program in the analytic model's mapping without its LOADs / STOREs (operands resident, results
        # left in the accumulator): the execute unit alone, which is what the analytic model describes
        same = plan if plan.dataflow == a.dataflow else plan_gemm(GemmSpec(m, n, k), cfg, dataflow=a.dataflow)
        no_io = program_cycles([(op, f) for op, f in map(decode, same.program) if op not in (Op.LOAD, Op.STORE)],
                               cfg)
        out.append({"shape": shape, "m": m, "n": n, "k": k, "analytic_mapping": a.dataflow,
                    "analytic_cycles": a.compute_cycles, "program_mapping": plan.dataflow, "program_cycles": prog,
                    "ideal": round(a.ideal_cycles, 1), "rows_loaded": rows_in,
                    "program_no_io_cycles": no_io,
                    "diff_no_io_pct": round(100.0 * (a.compute_cycles - no_io) / no_io, 2),
                    "diff_pct": round(100.0 * (a.compute_cycles - prog) / prog, 2)})
    return out


def analytic_table(rows):
    lines = [f"{'array':5s} {'M':>5s} {'N':>4s} {'K':>5s} {'ideal':>8s} {'analytic':>9s} {'map':>3s} "
             f"{'program':>8s} {'map':>3s} {'loaded':>7s} {'diff %':>7s} {'no I/O':>8s} {'diff %':>7s}"]
    for r in rows:
        lines.append(f"{r['shape']:5s} {r['m']:5d} {r['n']:4d} {r['k']:5d} {r['ideal']:8.0f} {r['analytic_cycles']:9d} "
                     f"{r['analytic_mapping']:>3s} {r['program_cycles']:8d} {r['program_mapping']:>3s} "
                     f"{r['rows_loaded']:7d} {r['diff_pct']:7.2f} {r['program_no_io_cycles']:8d} "
                     f"{r['diff_no_io_pct']:7.2f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shapes",
        nargs="+",
        default=list(configs()),
        help="array shapes to simulate (default: all of {})".format(", ".join(configs())),
    )
    ap.add_argument("--n", type=int, default=24, help="GEMMs per shape (default 24)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the random part of the suite")
    ap.add_argument("--json", default=str(ROOT / "results" / "cycle_model_validation.json"),
                    help="where to write the results")
    ap.add_argument("--reuse", help="JSON written by an earlier run: re-evaluate the model, do not simulate")
    ap.add_argument("--analytic", action="store_true",
                    help="also compare the analytic per-GEMM model of cdmqta bench with the program model")
    args = ap.parse_args(argv)
    for s in args.shapes:
        if s not in configs():
            raise SystemExit(f"unknown shape {s!r}: choose from {sorted(configs())}")
    if args.reuse:
        records = json.loads(Path(args.reuse).read_text())["records"]
    else:
        records = {}
        work = tempfile.mkdtemp(prefix="cdmqta-cycles-")
        for s in args.shapes:
            t = time.perf_counter()
            records[s] = run_rtl(s, gemm_suite(args.seed + len(s) * 7 + configs()[s].cols, args.n), work)
            print(f"{s}: simulated {len(records[s])} GEMMs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.reuse:      # keep the simulation's records even if the evaluation fails (reusable with --reuse)
        (Path(work) / "records.json").write_text(json.dumps({"records": records}))
    rows, summary = evaluate(records)
    print(table(rows, summary))
    result = {"rows": rows, "summary": summary, "records": records}
    if args.analytic:
        result["analytic"] = analytic_comparison()
        print("\nanalytic per-GEMM model (cdmqta bench) vs program model (tiler's best program), INT8:")
        print(analytic_table(result["analytic"]))
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
