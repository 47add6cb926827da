"""``cdmqta demo``: one quantized LoRA training step on the generated accelerator, checked bit for bit.

Generates the accelerator (QTAConfig defaults: 8x8, INT8 with the INT4 mode, WS+OS), builds it with Verilator
(cached), and runs one training step of a LoRA layer whose sizes are not multiples of the array (in=72, out=40,
r=4, T=50 tokens) through the golden model (:mod:`cdmqta.sw.model.lora`) with every GEMM and requantization executed on
the RTL (:mod:`cdmqta.sw.rtl.backend`). Every integer output is compared with the PyTorch golden run of the same
step; per GEMM it prints the dataflow the tiler chose, the cycles (RTL counters), the utilization
(ideal M*N*K/(R*C) over cycles) and whether it is bit-exact. Exit status 1 if anything differs. While it runs,
stderr says what it is doing (loading, converting to Verilog, building, simulating) with the elapsed time, unless
``--quiet`` or stderr is not a terminal.

``--scaling delayed`` runs the steps with delayed max-abs scaling (:mod:`cdmqta.sw.model.lora`: the scale of H and
dH from an amax history, the requantization fused into the GEMM's STOREs, max |acc| from the amax registers) and,
in the same simulation, the same steps with current scaling, and reports the cycles delayed scaling saves per
step. It needs at least 2 steps (default 2): the first step has no history and scales as current.
"""

import json
import time

from cdmqta.errors import UsageError
from cdmqta.hw.config import QTAConfig
from cdmqta.paths import check_outputs
from cdmqta.progress import SILENT, Reporter

LAYER = dict(tokens=50, in_features=72, out_features=40, rank=4)


def add_arguments(parser):
    parser.add_argument("--rows", type=int, default=8, help="PE array rows R (default: 8)")
    parser.add_argument("--cols", type=int, default=8, help="PE array columns C (default: 8)")
    parser.add_argument("--int4-weights", action="store_true",
                        help="quantize the frozen base weight W0 to INT4 (mode int8-w4) instead of INT8")
    parser.add_argument("--seed", type=int, default=0, help="seed of the layer, input and gradient (default: 0)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps with host SGD updates (default: 1; 2 with --scaling delayed)")
    parser.add_argument("--scaling", choices=("current", "delayed"), default="current",
                        help="requantization scale of H and dH: current (default: this step's max |acc|, an INT32 "
                             "round trip through the host) or delayed (from the amax history of earlier steps, "
                             "requantized in the GEMM's STOREs; also runs current scaling on the same steps and "
                             "reports the cycles saved; needs --steps >= 2)")
    parser.add_argument("--backend", choices=("rtl", "golden"), default="rtl",
                        help="rtl: Verilator via cocotb (default); golden: the ISA emulator (no simulator)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr, only the results")


def _job(args):
    return {"kind": "lora", "tokens": LAYER["tokens"], "in": LAYER["in_features"], "out": LAYER["out_features"],
            "rank": LAYER["rank"], "quant": "int8-w4" if args.int4_weights else "int8", "steps": args.steps,
            "seed": args.seed, "scaling": args.scaling}


def run_demo(config, job, backend="rtl", progress=None, jobs=None):
    """Run ``job`` on ``backend``; returns (result dict of :func:`cdmqta.sw.runtime.jobs.run_job`, timings).
    ``progress``: a :class:`cdmqta.progress.Reporter` told about each step (None: silent). With ``jobs`` (a list)
    every job runs (in one simulation) and the first value is the list of results."""
    if jobs is not None:
        return _run_many(config, jobs, backend, progress)
    res, timing = _run_many(config, [job], backend, progress)
    return res[0], timing


def _run_many(config, jobs, backend, progress):
    progress = SILENT if progress is None else progress
    # torch and the runtime take seconds to import: only running the demo needs them, not ``cdmqta demo --help``
    if backend == "golden":
        with progress.step("loading torch and the runtime"):
            from cdmqta.sw.runtime.engines import GoldenBackend
            from cdmqta.sw.runtime.jobs import run_job
        t = time.perf_counter()
        with progress.step("running the step on the ISA emulator"):
            res = [run_job(GoldenBackend(config), job) for job in jobs]
        return res, {"build_s": 0.0, "sim_s": time.perf_counter() - t}
    with progress.step("loading torch, the runtime and the simulator"):
        from cdmqta.sw.rtl.backend import run_jobs  # and the simulator stack only for --backend rtl
    return run_jobs(config, jobs, progress=progress)


def step_cycles(stats):
    """Cycles of each training step of a LoRA job's stats (GEMMs and requantizations; a step starts at "H")."""
    steps = []
    for s in stats:
        if s["name"] == "H" and s["kind"] == "gemm":
            steps.append(0)
        steps[-1] += s["cycles"]
    return steps


def report(config, args, res, timing, total_s):
    gemms = [s for s in res["stats"] if s["kind"] == "gemm"]
    requants = [s for s in res["stats"] if s["kind"] == "requant"]
    return {
        "all_bit_exact": bool(res["bit_exact"]),
        "backend": args.backend,
        "cycles_from": "rtl counters" if args.backend == "rtl" else "tiler cost model",
        "config": config.to_dict(),
        "layer": dict(LAYER, quant=res["job"]["quant"], steps=res["job"]["steps"], seed=res["job"]["seed"]),
        "seconds": {"total": round(total_s, 2), "build": round(timing["build_s"], 2), "run": round(timing["sim_s"], 2)},
        "diffs": res["diffs"],
        "emulator_mismatches": res.get("emulator_mismatches", []),
        "gemms": [{"name": s["name"], "m": s["m"], "n": s["n"], "k": s["k"], "dataflow": s["dataflow"],
                   "cycles": s["cycles"], "utilization": round(s["utilization"], 4), "bit_exact": s["bit_exact"]}
                  for s in gemms],
        "requants": [{"name": s["name"], "m": s["m"], "n": s["n"], "bits": int(s["precision"][3:]),
                      "cycles": s["cycles"], "bit_exact": s["bit_exact"]} for s in requants],
        "scaling": res["job"].get("scaling", "current"),
        "step_cycles": step_cycles(res["stats"]),
    }


def main(args):
    delayed = args.scaling == "delayed"
    if args.steps is None:
        args.steps = 2 if delayed else 1
    if args.steps < 1:
        raise UsageError(f"--steps={args.steps} must be >= 1")
    if delayed and args.steps < 2:
        raise UsageError(f"--steps={args.steps} with --scaling delayed: the first step has no amax history (it "
                         f"scales as current), use --steps >= 2")
    config = QTAConfig(rows=args.rows, cols=args.cols)
    check_outputs(files={"--json": args.json})
    job = _job(args)
    print(f"cdm-qta demo: {config.rows}x{config.cols} array, LoRA layer in={job['in']} out={job['out']} "
          f"r={job['rank']} T={job['tokens']}, {job['quant']}, {job['steps']} step(s), {args.scaling} scaling, "
          f"backend {args.backend}", flush=True)
    t0 = time.perf_counter()
    jobs = [job, dict(job, scaling="current")] if delayed else [job]
    results, timing = run_demo(config, None, args.backend, Reporter(quiet=args.quiet), jobs=jobs)
    res = results[0]
    out = report(config, args, res, timing, time.perf_counter() - t0)
    if delayed:
        cur = report(config, args, results[1], timing, 0.0)
        out["current"] = {"step_cycles": cur["step_cycles"], "all_bit_exact": cur["all_bit_exact"],
                          "diffs": cur["diffs"], "emulator_mismatches": cur["emulator_mismatches"]}
        out["cycles_saved"] = [c - d for c, d in zip(cur["step_cycles"], out["step_cycles"])]
        out["all_bit_exact"] = out["all_bit_exact"] and cur["all_bit_exact"]
        out["emulator_mismatches"] = out["emulator_mismatches"] + cur["emulator_mismatches"]
        out["diffs"] = out["diffs"] + [f"current-scaling run: {d}" for d in cur["diffs"]]

    if args.backend == "rtl":
        print(f"build {out['seconds']['build']:.1f} s (cached after the first run), simulation "
              f"{out['seconds']['run']:.1f} s")
    print(f"{'GEMM':8s} {'M':>4s} {'N':>4s} {'K':>4s} {'dataflow':>8s} {'cycles':>7s} {'util':>6s}  bit-exact")
    for g in out["gemms"]:
        print(f"{g['name']:8s} {g['m']:4d} {g['n']:4d} {g['k']:4d} {g['dataflow']:>8s} {g['cycles']:7d} "
              f"{g['utilization']:6.3f}  {'yes' if g['bit_exact'] else 'NO'}")
    for r in out["requants"]:
        print(f"requant {r['name']:>3s} {r['m']:4d} {r['n']:4d}  INT{r['bits']:<4d} {'':>5s}{r['cycles']:7d} "
              f"{'':6s}  {'yes' if r['bit_exact'] else 'NO'}")
    cyc = sum(g["cycles"] for g in out["gemms"])
    ideal = sum(g["m"] * g["n"] * g["k"] for g in out["gemms"]) / config.macs
    print(f"GEMMs: {cyc} cycles, ideal {ideal:.0f}, utilization {ideal / cyc:.3f} ({out['cycles_from']})")
    if delayed:
        for i, (d, c) in enumerate(zip(out["step_cycles"], out["current"]["step_cycles"])):
            print(f"step {i + 1}: delayed {d} cycles, current {c} cycles: saved {c - d} ({(c - d) / c:.1%})"
                  + ("  (no amax history yet: scales as current)" if i == 0 else ""))
    for d in out["diffs"] + [f"RTL and ISA emulator differ on {m}" for m in out["emulator_mismatches"]]:
        print(f"MISMATCH: {d}")
    print("all bit-exact: " + ("yes" if out["all_bit_exact"] else "NO"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if out["all_bit_exact"] and not out["emulator_mismatches"] else 1
