"""Simulation speed of the array under cocotb + Verilator, and its cycles against the ideal.

    python scripts/bench_array_sim.py [--rows 8 --cols 8 --m 64 --n 64 --k 64] [--json out.json]

Builds :class:`cdmqta.hw.harness.ArrayHarness` (cached by :mod:`cdmqta.sw.rtl.build`), then for each dataflow
(WS, OS) bulk-loads the beat stream of an INT8 GEMM split into tiles by :mod:`cdmqta.hw.array_schedule`, runs it
with no Python in the per-cycle loop, checks the result against torch, and reports: simulated array cycles,
the ideal M*N*K/(R*C), and simulated cycles per second of wall time (the run alone, and including the bulk load
and read-back). This file is also the cocotb test module that the simulator imports.
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from cdmqta.hw.array_schedule import assemble, beat_word, gemm_tiles, ideal_cycles, schedule
from cdmqta.hw.config import QTAConfig
from cdmqta.hw.harness import ArrayHarness
from cdmqta.sw.rtl import build as rtlbuild
from cdmqta.sw.rtl.build import mem_read, mem_write

HERE = Path(__file__).resolve().parent

if os.environ.get("CDMQTA_BENCH_OUT"):

    @cocotb.test()
    async def bench(dut):

        R, C = int(os.environ["CDMQTA_ROWS"]), int(os.environ["CDMQTA_COLS"])
        M, N, K = (int(os.environ[f"CDMQTA_{x}"]) for x in "MNK")
        acc = int(os.environ["CDMQTA_ACC"])
        LANES = int(os.environ.get("CDMQTA_LANES", "2"))
        rng = random.Random(5)
        a = [[rng.randint(-128, 127) for _ in range(K)] for _ in range(M)]
        b = [[rng.randint(-128, 127) for _ in range(N)] for _ in range(K)]
        golden = (torch.tensor(a, dtype=torch.int64) @ torch.tensor(b, dtype=torch.int64)).tolist()

        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        for name in ("start", "n_beats", "beat_we", "res_drain"):
            getattr(dut, name).value = 0
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 1)
        report = {}
        for dataflow in ("ws", "os"):
            tiles, places = gemm_tiles(a, b, R, C, dataflow)
            sched = schedule(tiles, R, C, LANES)
            t0 = time.perf_counter()
            mem_write(dut.beat_mem, [beat_word(bt, R, C) for bt in sched.beats])
            dut.n_beats.value = len(sched.beats)
            dut.start.value = 1
            await RisingEdge(dut.clk)
            dut.start.value = 0
            t1, c1 = time.perf_counter(), time.process_time()
            await RisingEdge(dut.done)
            t2, c2 = time.perf_counter(), time.process_time()
            await RisingEdge(dut.clk)   # let the registers of the `done` edge settle (see verif/tb_array.py)
            cycles = int(dut.run_cycles.value)

            def rows(mem, n, lanes):
                return [[(w >> (acc * j)) & ((1 << acc) - 1) for j in range(lanes)] for w in mem_read(mem, n)]

            sx = lambda v: v - (1 << acc) if v >> (acc - 1) else v
            ws = [[sx(v) for v in r] for r in rows(dut.ws_mem, int(dut.ws_count.value), C)]
            dr = [[sx(v) for v in r] for r in rows(dut.drain_mem, int(dut.drain_count.value), LANES * C)]
            t3 = time.perf_counter()
            got = assemble(sched.results(ws, dr), places, M, N)
            assert got == golden, f"{dataflow}: RTL GEMM differs from torch"
            assert cycles == sched.cycles
            # replay the loaded beats to time the run phase more steadily (median of the runs)
            runs, cpu = [t2 - t1], [c2 - c1]
            for _ in range(int(os.environ.get("CDMQTA_REPEAT", "5")) - 1):
                dut.start.value = 1
                await RisingEdge(dut.clk)
                dut.start.value = 0
                ta, ca = time.perf_counter(), time.process_time()
                await RisingEdge(dut.done)
                runs.append(time.perf_counter() - ta)
                cpu.append(time.process_time() - ca)
                await RisingEdge(dut.clk)
                assert int(dut.run_cycles.value) == cycles
            run_s, cpu_s = sorted(runs)[len(runs) // 2], sorted(cpu)[len(cpu) // 2]
            ideal = ideal_cycles(M, N, K, R, C)
            report[dataflow] = {
                "tiles": len(tiles), "beats": len(sched.beats), "array_cycles": cycles, "ideal_cycles": ideal,
                "cycles_over_ideal": cycles / ideal,
                "runs": len(runs), "run_wall_s": run_s, "sim_cycles_per_s": cycles / run_s,
                "run_cpu_s": cpu_s, "sim_cycles_per_cpu_s": cycles / cpu_s if cpu_s else None,
                "total_wall_s": t3 - t0, "sim_cycles_per_s_with_io": cycles / (t3 - t0),
            }
        Path(os.environ["CDMQTA_BENCH_OUT"]).write_text(json.dumps(report, indent=2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=8, help="array rows (default 8)")
    ap.add_argument("--cols", type=int, default=8, help="array cols (default 8)")
    ap.add_argument("--m", type=int, default=64, help="GEMM M (default 64)")
    ap.add_argument("--n", type=int, default=64, help="GEMM N (default 64)")
    ap.add_argument("--k", type=int, default=64, help="GEMM K (default 64)")
    ap.add_argument("--repeat", type=int, default=5, help="timed replays of each GEMM; the median counts (default 5)")
    ap.add_argument("--json", default="bench_array_sim.json", help="output JSON (default bench_array_sim.json)")
    args = ap.parse_args(argv)

    cfg = QTAConfig(rows=args.rows, cols=args.cols)
    zeros_a, zeros_b = [[0] * args.k for _ in range(args.m)], [[0] * args.n for _ in range(args.k)]
    beats = max(len(schedule(gemm_tiles(zeros_a, zeros_b, args.rows, args.cols, df)[0], args.rows, args.cols,
                             cfg.chain_lanes).beats)
                for df in ("ws", "os"))
    depth = 1 << max(10, (beats - 1).bit_length())
    t0 = time.perf_counter()
    built = rtlbuild.build(ArrayHarness(cfg, depth=depth), "array_harness", cxx_opt="-O2",
                         public=[("array_harness", "*")])
    t_build = time.perf_counter() - t0
    out = Path(args.json).resolve()
    env = {"CDMQTA_BENCH_OUT": out, "CDMQTA_ROWS": args.rows, "CDMQTA_COLS": args.cols, "CDMQTA_M": args.m,
           "CDMQTA_N": args.n, "CDMQTA_K": args.k, "CDMQTA_ACC": cfg.acc_width, "CDMQTA_REPEAT": args.repeat,
           "CDMQTA_LANES": cfg.chain_lanes}
    rtlbuild.run(built, "bench_array_sim", env=env, python_path=[HERE])
    report = json.loads(out.read_text())
    report = {"array": f"{args.rows}x{args.cols}", "gemm": [args.m, args.n, args.k], "precision": "int8",
              "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
              "build_or_cache_s": t_build, "dataflows": report}
    out.write_text(json.dumps(report, indent=2) + "\n")
    for df, r in report["dataflows"].items():
        print(f"{df}: {r['array_cycles']} cycles (ideal {r['ideal_cycles']:.0f}, x{r['cycles_over_ideal']:.3f}), "
              f"{r['sim_cycles_per_s']:,.0f} simulated cycles/s of wall time "
              f"({r['sim_cycles_per_cpu_s'] or 0:,.0f} per CPU second; {r['sim_cycles_per_s_with_io']:,.0f} "
              f"including the bulk load and read-back)")
    print(f"(machine load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
