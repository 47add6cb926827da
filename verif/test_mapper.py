"""Memory in the models: the ideal memory is today's model exactly, a bandwidth only slows and never beats bytes / B;
the mapper's schedules are the tiler's programs (and exact on the emulator); the fast step model against the
program-level model; the mapper never worse than fixed WS, never below the roofline."""

import random

import numpy as np
import pytest

from cdmqta.hw.config import PRESETS, QTAConfig
from cdmqta.hw.isa import Op, decode
from cdmqta.sw.perf import mapper as M
from cdmqta.sw.perf.memory import Memory, load_row_bytes, parse_bandwidth, store_row_bytes
from cdmqta.sw.perf.program import program_cycles
from cdmqta.sw.perf.schedule import Mapping, gemm_schedule, schedule_bytes, schedule_cycles
from cdmqta.sw.runtime.emulator import Emulator
from cdmqta.sw.runtime.tiler import GemmSpec, build_plan, candidates, plan_gemm

CFG64 = QTAConfig(rows=64, cols=64, sp_rows=4096, acc_rows=1024)
CFG_TINY = QTAConfig(rows=3, cols=5, sp_rows=32, sp_banks=1, acc_rows=16, acc_banks=1)


def program_bytes(program, cfg):
    """DRAM bytes of a program's LOADs and STOREs (memory.py's row sizes)."""
    total = 0
    for op, f in map(decode, program):
        if op == Op.LOAD:
            total += f["rows"] * load_row_bytes(cfg, f["to_acc"])
        elif op == Op.STORE:
            total += f["rows"] * store_row_bytes(f["out"], f["cols"])
    return total


def test_ideal_memory_is_todays_model():
    """Memory() and a bandwidth no transfer can use up reproduce the validated model's cycles exactly."""
    rng = random.Random(5)
    for cfg in (PRESETS["8x8"], PRESETS["8x4"], PRESETS["5x3s1"], CFG64):
        for _ in range(3):
            g = GemmSpec(rng.randint(1, 120), rng.randint(1, 120), rng.randint(1, 120), rng.choice(["int8", "int4"]))
            prog = build_plan(g, cfg, *rng.choice(candidates(g, cfg))).program
            today = program_cycles(prog, cfg)
            assert program_cycles(prog, cfg, memory=Memory()) == today
            assert program_cycles(prog, cfg, memory=Memory(bandwidth=1e9)) == today


def test_bandwidth_only_slows_and_respects_bytes_per_cycle():
    rng = random.Random(6)
    for _ in range(6):
        g = GemmSpec(rng.randint(20, 300), rng.randint(4, 300), rng.randint(4, 300))
        prog = plan_gemm(g, CFG64).program
        nbytes = program_bytes(prog, CFG64)
        last = program_cycles(prog, CFG64)
        for bw in (256, 64, 32, 16, 8):
            mem = Memory(bandwidth=bw)
            c = program_cycles(prog, CFG64, memory=mem)
            assert c >= last and c >= nbytes / bw, (g, bw, c, nbytes)
            assert c == program_cycles(prog, CFG64, memory=mem, skip_quiet=False)
            last = c
        lat = program_cycles(prog, CFG64, memory=Memory(bandwidth=8, latency=200, outstanding=2))
        assert lat >= last                    # 2 x 64-byte bursts per 200 cycles: less than 8 B/cycle


@pytest.mark.parametrize("order", ["g2", "h2", "g3"])
def test_grouped_loop_orders_exact_on_the_emulator(order):
    rng = np.random.default_rng(11)
    for cfg in (PRESETS["8x8"], CFG_TINY):
        for m, n, k in ((40, 23, 61), (17, 37, 9), (64, 64, 64)):
            a = rng.integers(-128, 128, (m, k))
            b = rng.integers(-128, 128, (k, n))
            for d in ("ws", "os", "is"):
                chunk = 8 if d == "os" else 4
                plan = build_plan(GemmSpec(m, n, k), cfg, d, order, chunk, 0.5)
                if plan is None:
                    continue
                em = Emulator(cfg, host_words=plan.host_end)
                plan.pack_host(a, b, em.host)
                em.run(plan.program, check=True)
                np.testing.assert_array_equal(plan.read_result(em.host), a @ b, err_msg=f"{order} {d} {m, n, k}")


def test_schedule_is_the_tilers_program():
    """gemm_schedule derives the same LOADs / COMPUTEs / STOREs and bytes as build_plan's program, and its fast model
    equals the program-level model with the ideal memory to 3 cycles or 2 % (irregular small shapes and tiny
    memories; the SD-1.5 shapes: scripts/validate_memory_model.py)."""
    rng = random.Random(8)
    checked = 0
    for cfg in (PRESETS["8x8"], PRESETS["8x4"], CFG_TINY, CFG64):
        for _ in range(3 if cfg.rows < 64 else 1):
            m, n, k = (rng.randint(1, 150) for _ in range(3))
            g = GemmSpec(m, n, k)
            for cand in candidates(g, cfg)[::5] + [("ws", "g2", 8, 0.5), ("os", "h2", 16, 0.5)]:
                plan = build_plan(g, cfg, *cand)
                sched = gemm_schedule(m, n, k, Mapping(*cand), cfg)
                assert (plan is None) == (sched is None), cand
                if plan is None:
                    continue
                nbytes, rows, cmds = schedule_bytes(sched, cfg)
                assert rows == plan.loads and cmds == len(plan.program)
                assert nbytes == program_bytes(plan.program, cfg) + 16 * len(plan.program)
                prog = program_cycles(plan.program, cfg)
                assert abs(schedule_cycles(sched, cfg) - prog) <= max(3, 0.02 * prog), (cfg, g, cand)
                checked += 1
    assert checked >= 15


#: SD-1.5 shapes (N, K as in the step, M cut) at the bench's bandwidths: the fast model within 1 % of the program
#: model on the mapper's choice (scripts/validate_memory_model.py runs 36 shapes x 4 bandwidths).
SD_SAMPLE = [(512, 320, 40), (512, 77, 40), (256, 40, 1024), (77, 4, 768), (4, 320, 77), (256, 320, 640)]


@pytest.mark.parametrize("bw", [64, 32])
def test_fast_model_matches_program_model(bw):
    mem = Memory(bandwidth=bw)
    for m, n, k in SD_SAMPLE:
        r = M.map_gemm(m, n, k, CFG64, mem)
        plan = build_plan(GemmSpec(m, n, k), CFG64, *r.mapping.__dict__.values())
        prog = program_cycles(plan.program, CFG64, memory=mem)
        assert abs(r.cycles - prog) <= 0.01 * prog, (m, n, k, r.mapping, r.cycles, prog)


def test_mapper_never_worse_than_fixed_ws_and_never_below_roofline():
    rng = random.Random(3)
    for _ in range(8):
        m, n, k = (rng.choice([4, 40, 77, 128, 320, 640]) for _ in range(3))
        for bw in (None, 64, 16):
            mem = Memory(bandwidth=bw)
            ours = M.map_gemm(m, n, k, CFG64, mem)
            ws = M.map_gemm(m, n, k, CFG64, mem, dataflows=("ws",))
            assert ours.cycles <= ws.cycles * (1 + M.TOLERANCE)      # the search stops within TOLERANCE
            assert ours.cycles >= ours.roofline_cycles
            assert ours.dram_bytes >= m * k + k * n + 4 * m * n      # operands read once at least, INT32 out
            assert ours.compulsory_bytes == m * k + k * n + m * n


@pytest.mark.parametrize("text,value", [("unlimited", None), ("64", 64.0), ("12.5", 12.5)])
def test_parse_bandwidth(text, value):
    assert parse_bandwidth(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "foo", "nan", "inf5"])
def test_parse_bandwidth_rejects(text):
    with pytest.raises(ValueError, match="bytes/cycle"):
        parse_bandwidth(text)
