"""cocotb testbench of :class:`cdmqta.hw.harness.ArrayHarness`: random tiles and GEMMs against torch.

Run by verif/test_array_rtl.py through :func:`cdmqta.sw.rtl.build.run`; the shape comes from the environment
(CDMQTA_ROWS, CDMQTA_COLS, CDMQTA_ACC, CDMQTA_DEPTH, CDMQTA_SEED). Every test bulk-loads a beat stream made by
:func:`cdmqta.hw.array_schedule.schedule` into the beat memory (VPI), lets the RTL run to ``done`` with no
Python per cycle, reads the captured rows back (VPI) and checks (1) every result row against torch's integer
matmul, (2) its cycle stamp against the schedule's prediction, (3) the run length.
"""

import os
import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer

from cdmqta.hw.array_schedule import Tile, assemble, beat_word, gemm_tiles, schedule
from cdmqta.sw.rtl.build import mem_read, mem_write

R = int(os.environ.get("CDMQTA_ROWS", "4"))
C = int(os.environ.get("CDMQTA_COLS", "4"))
ACC = int(os.environ.get("CDMQTA_ACC", "32"))
DEPTH = int(os.environ.get("CDMQTA_DEPTH", "4096"))
SEED = int(os.environ.get("CDMQTA_SEED", "1"))
LANES = int(os.environ.get("CDMQTA_LANES", "2"))      # the shift chain's lanes (QTAConfig.chain_lanes)


def sign_extend(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.started = False

    async def reset(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        for name in ("start", "n_beats", "beat_we", "beat_waddr", "beat_wdata", "res_drain", "res_raddr"):
            getattr(dut, name).value = 0
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 1)

    async def play(self, sched):
        """Load the beats, run, return (ws rows, drain rows) as lists of (stamp, [C ints]) and run_cycles."""
        dut = self.dut
        assert len(sched.beats) <= DEPTH, "beat stream longer than the harness memory"
        mem_write(dut.beat_mem, [beat_word(b, R, C) for b in sched.beats])
        dut.n_beats.value = len(sched.beats)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.clk)
        if not int(dut.done.value):
            # watchdog: the stream plus fill, drain and a generous margin, or the test fails with a message
            bound = len(sched.beats) + 4 * (R + C) + 1000
            done = RisingEdge(dut.done)
            if await First(done, Timer(10 * bound, unit="ns")) is not done:
                raise AssertionError(f"watchdog: the array did not finish {len(sched.beats)} beats in {bound} cycles")
        # registers that change on the same clock edge as `done` may not be updated yet when the value-change
        # callback of `done` fires (seen on Icarus): read them one clock later
        await RisingEdge(dut.clk)
        n_ws, n_dr = int(dut.ws_count.value), int(dut.drain_count.value)
        assert (n_ws, n_dr) == (sched.n_ws, sched.n_drain), ((n_ws, n_dr), (sched.n_ws, sched.n_drain))

        def decode(words, lanes):
            return [
                ((w >> (ACC * lanes)) & 0xFFFFFFFF, [sign_extend(w >> (ACC * j), ACC) for j in range(lanes)])
                for w in words
            ]

        ws = decode(mem_read(dut.ws_mem, n_ws), C)
        dr = decode(mem_read(dut.drain_mem, n_dr), LANES * C)
        return ws, dr, int(dut.run_cycles.value)

    async def run_tiles(self, tiles):
        sched = schedule(tiles, R, C, LANES)
        ws, dr, run_cycles = await self.play(sched)
        for o in sched.outputs:
            stamp = (ws if o.port == "ws" else dr)[o.index][0]
            assert stamp == o.cycle, f"{o}: RTL emitted it at cycle {stamp}"
        assert run_cycles == sched.cycles, (run_cycles, sched.cycles)
        return sched, sched.results([r for _, r in ws], [r for _, r in dr])


def rand_mat(rng, rows, cols, precision):
    lim = 7 if precision == "int4" else 127
    return [[rng.choice([-lim - 1, lim, 0, rng.randint(-lim - 1, lim), rng.randint(-lim - 1, lim)])
             for _ in range(cols)] for _ in range(rows)]


def torch_matmul(a, b):
    return (torch.tensor(a, dtype=torch.int64) @ torch.tensor(b, dtype=torch.int64)).tolist()


@cocotb.test()
@cocotb.parametrize(dataflow=["ws", "os"], precision=["int8", "int4"])
async def gemm(dut, dataflow, precision):
    """Whole GEMMs split into tiles (partial tiles at every edge, K beyond one tile) against torch."""
    tb = TB(dut)
    await tb.reset()
    rng = random.Random(SEED * 7 + (dataflow == "os") * 2 + (precision == "int4"))
    kt = R * (2 if precision == "int4" else 1)
    shapes = [(7, 2 * kt + 3, C + 1), (1, 1, 1), (R + 2, 5, max(1, C - 1)), (2 * R + 1, kt, 2 * C)]
    for m, k, n in shapes:
        a, b = rand_mat(rng, m, k, precision), rand_mat(rng, k, n, precision)
        tiles, places = gemm_tiles(a, b, R, C, dataflow, precision)
        sched, results = await tb.run_tiles(tiles)
        got = assemble(results, places, m, n)
        assert got == torch_matmul(a, b), f"{dataflow}/{precision} GEMM {m}x{n}x{k} mismatch"
        dut._log.info("%s %s GEMM m=%d n=%d k=%d: %d tiles, %d cycles", dataflow, precision, m, n, k,
                      len(tiles), sched.cycles)


@cocotb.test()
async def mixed_tiles(dut):
    """Back-to-back tiles switching dataflow and precision on every boundary, no drain in between;
    k of 1 and primes, partial m/n; each tile against torch."""
    tb = TB(dut)
    await tb.reset()
    rng = random.Random(SEED * 101)
    tiles = []
    for x in range(24):
        df = ("ws", "os")[x % 2] if x < 12 else rng.choice(["ws", "os"])
        prec = rng.choice(["int8", "int4"])
        kmax = R * (2 if prec == "int4" else 1) if df == "ws" else 2 * R + 5
        k = rng.choice([1, 2, 3, 5, 7, 11, 13, rng.randint(1, kmax)])
        k = min(k, kmax)
        m = rng.randint(1, R) if df == "os" else rng.choice([1, 2, 3, R, R + 3])
        n = rng.randint(1, C)
        tiles.append(Tile(df, prec, rand_mat(rng, m, k, prec), rand_mat(rng, k, n, prec)))
    sched, results = await tb.run_tiles(tiles)
    for x, (t, res) in enumerate(zip(tiles, results)):
        assert res == torch_matmul(t.a, t.b), f"tile {x} ({t.dataflow}/{t.precision} m={t.m} n={t.n} k={t.k})"
    # back to back: no cycles beyond the protocol's own
    compute = sum(t.m if t.dataflow == "ws" else t.k_lanes for t in tiles)
    dut._log.info("mixed: %d tiles, %d beats (%d compute), %d cycles", len(tiles), len(sched.beats), compute,
                  sched.cycles)


@cocotb.test()
async def readback_port(dut):
    """The fallback read port returns the same words as the VPI bulk read; extremes saturate nothing."""
    tb = TB(dut)
    await tb.reset()
    lim = [[-128] * R for _ in range(3)]
    w = [[-128] * C for _ in range(R)]
    sched, results = await tb.run_tiles([Tile("ws", "int8", lim, w)])
    assert results[0] == [[R * 16384] * C] * 3
    words = mem_read(dut.ws_mem, 3)
    for i in range(3):
        dut.res_drain.value = 0
        dut.res_raddr.value = i
        await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        assert int(dut.res_rdata.value) == words[i]
