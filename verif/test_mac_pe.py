"""MAC, PE and a small array in the Amaranth simulator against Python integers (fast unit tests)."""

import random

import pytest
from amaranth.sim import Simulator

from cdmqta.hw.array import Array
from cdmqta.hw.array_schedule import (
    Beat,
    Tile,
    check,
    gemm_tiles,
    ideal_cycles,
    mac_reference,
    pack_int4,
    schedule,
    sign_extend,
    simulate,
)
from cdmqta.hw.config import QTAConfig
from cdmqta.hw.mac import MAC
from cdmqta.hw.pe import PE

EXTREMES8 = [-128, -127, -1, 0, 1, 126, 127]
NIBBLES = [-8, -7, -1, 0, 1, 6, 7]


def run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def mac_vectors(rng, n):
    v = [(a, b, 0) for a in EXTREMES8 for b in EXTREMES8]
    v += [
        (pack_int4(a0, a1), pack_int4(b0, b1), 1)
        for a0 in NIBBLES
        for a1 in NIBBLES
        for b0 in (-8, 7, -1)
        for b1 in (-8, 7, 0)
    ]
    v += [(rng.randint(-128, 127), rng.randint(-128, 127), rng.randint(0, 1)) for _ in range(n)]
    return v


@pytest.mark.parametrize("acc_width", [32, 36])
def test_mac_int8_int4(acc_width):
    rng = random.Random(acc_width)
    vectors = mac_vectors(rng, 1500)
    addends = [rng.choice([0, 1, -1, (1 << (acc_width - 1)) - 1, -(1 << (acc_width - 1)), rng.randint(-10**6, 10**6)])
               for _ in vectors]
    dut = MAC(acc_width, int4=True)
    seen = []

    async def tb(ctx):
        # operands given in cycle x are multiplied in cycle x+1 and summed with the addend of cycle x+2
        for x, (a, b, int4) in enumerate(vectors + [(0, 0, 0)] * 2):
            if x >= 2:
                ctx.set(dut.addend, addends[x - 2])
                seen.append(ctx.get(dut.sum))
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.int4, int4)
            await ctx.tick()

    run(dut, tb)
    expect = [sign_extend(ad + mac_reference(a, b, i4), acc_width) for (a, b, i4), ad in zip(vectors, addends)]
    assert seen == expect


def test_mac_int8_only_build():
    rng = random.Random(3)
    vectors = [(a, b) for a in EXTREMES8 for b in EXTREMES8] + [
        (rng.randint(-128, 127), rng.randint(-128, 127)) for _ in range(300)
    ]
    dut = MAC(32, int4=False)
    seen = []

    async def tb(ctx):
        for x, (a, b) in enumerate(vectors + [(0, 0)] * 2):
            if x >= 2:
                seen.append(ctx.get(dut.sum))
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.int4, 1)   # ignored without the INT4 mode
            await ctx.tick()

    run(dut, tb)
    assert seen == [a * b for a, b in vectors]


@pytest.mark.parametrize("precision", [0, 1])
def test_pe_ws_and_os(precision):
    """One PE: preload weights by shift, WS psum, OS accumulate with `first`, drain through the chain."""
    rng = random.Random(10 + precision)

    def lane():
        if precision:
            return pack_int4(rng.choice(NIBBLES + [rng.randint(-8, 7)]), rng.choice(NIBBLES + [rng.randint(-8, 7)]))
        return rng.choice(EXTREMES8 + [rng.randint(-128, 127)])

    dut = PE(32, int4=True)
    log = {}

    def ctrl(**kw):
        c = dict(compute=0, shift=0, dataflow=0, precision=precision, sel=0, first=0)
        c.update(kw)
        return c

    w0, w1 = lane(), lane()
    a_ws = [lane() for _ in range(6)]
    psums = [rng.randint(-10**6, 10**6) for _ in range(6)]
    a_os, b_os = [lane() for _ in range(9)], [lane() for _ in range(9)]

    # the beats reaching the PE, one per cycle: (a, b, d, ctrl); psum_in is given per cycle separately
    beats = [(0, 0, w0, ctrl(shift=1, sel=0)),    # w0 -> c[1] (a sel=0 beat shifts into c[1])
             (0, 0, w1, ctrl(shift=1, sel=1))]    # w1 -> c[0]; the next beat uses c[1] (bypass-free)
    ws_start = len(beats)
    beats += [(a, 0, 0, ctrl(compute=1, sel=x % 2)) for x, a in enumerate(a_ws)]   # weight = c[sel]
    beats += [(0, 0, 0, ctrl())]
    beats += [(a_os[t], b_os[t], 0, ctrl(compute=1, dataflow=1, sel=1, first=int(t == 0))) for t in range(9)]
    beats += [(0, 0, 0, ctrl())]                   # H2: no shift right after an OS compute beat of the other sel
    drain_at = len(beats)
    beats += [(0, 0, 5, ctrl(shift=1, sel=0)), (0, 0, 0, ctrl(shift=1, sel=0)), (0, 0, 0, ctrl())]
    idle = (0, 0, 0, ctrl())
    psum_at = {ws_start + x + 1: ps for x, ps in enumerate(psums)}   # stage 2 of beat x is one cycle later

    async def tb(ctx):
        out = {}
        for t, (a, b, d, c) in enumerate(beats):
            na, nb, _, nc = beats[t + 1] if t + 1 < len(beats) else idle
            nnc = beats[t + 2][3] if t + 2 < len(beats) else idle[3]
            ctx.set(dut.a_in, a)
            ctx.set(dut.b_in, b)
            ctx.set(dut.d_in, d)
            ctx.set(dut.ctrl_in, c)
            ctx.set(dut.a_next, na)
            ctx.set(dut.b_next, nb)
            ctx.set(dut.ctrl_next, nc)
            ctx.set(dut.ctrl_nn, nnc)
            ctx.set(dut.psum_in, psum_at.get(t, 0))
            await ctx.tick()
            out[t] = (ctx.get(dut.psum_out), ctx.get(dut.d_out))
        log["ws"] = [out[ws_start + x + 1][0] for x in range(len(a_ws))]
        log["drain"] = out[drain_at][1]
        log["shifted_in"] = out[drain_at + 1][1]

    run(dut, tb)
    weights = [w1, w0]  # c[0] = w1, c[1] = w0
    assert log["ws"] == [
        sign_extend(ps + mac_reference(a, weights[x % 2], precision), 32) for x, (a, ps) in enumerate(zip(a_ws, psums))
    ]
    assert log["drain"] == sum(mac_reference(a, b, precision) for a, b in zip(a_os, b_os))
    assert log["shifted_in"] == 5


def _play(dut, sched, n_cycles):
    """Play ``sched``'s beats into ``dut`` for ``n_cycles`` (bubbles after the last beat) in the Amaranth simulator.

    Returns ({"ws": [(cycle, row)], "drain": [(cycle, row)]}, busy) where busy[c] is ``dut.busy`` at cycle c and
    the last element is the ``cycles`` counter after the run.
    """
    got = {"ws": [], "drain": []}
    busy = []
    fields = ("compute", "shift", "dataflow", "precision", "sel", "first")

    async def tb(ctx):
        for cyc in range(n_cycles):
            if cyc < len(sched.beats):
                bt = sched.beats[cyc]
                ctx.set(dut.a, bt.a)
                ctx.set(dut.b, bt.b)
                ctx.set(dut.d, bt.d)
                ctx.set(dut.ctrl, {f: getattr(bt, f) for f in fields})
            else:
                ctx.set(dut.ctrl, {f: 0 for f in fields})
            for port in ("ws", "drain"):
                if ctx.get(getattr(dut, f"{port}_valid")):
                    got[port].append((cyc, [int(v) for v in ctx.get(getattr(dut, f"{port}_row"))]))
            busy.append(ctx.get(dut.busy))
            await ctx.tick()
        busy.append(ctx.get(dut.cycles))

    run(dut, tb)
    return got, busy


def _rand_tile(rng, df, prec, R, C):
    lim = 7 if prec == "int4" else 127
    kmax = R * (2 if prec == "int4" else 1) if df == "ws" else 11
    m = rng.randint(1, 6) if df == "ws" else rng.randint(1, R)
    k, n = rng.randint(1, kmax), rng.randint(1, C)
    pick = lambda: rng.choice([-lim - 1, lim, rng.randint(-lim - 1, lim)])
    return Tile(
        df, prec, [[pick() for _ in range(k)] for _ in range(m)], [[pick() for _ in range(n)] for _ in range(k)]
    )


@pytest.mark.parametrize("rows,cols,lanes", [(3, 2, 2), (3, 2, 1), (2, 4, 2), (5, 3, 2), (4, 3, 1), (1, 1, 2)])
def test_array_against_schedule(rows, cols, lanes):
    """The Amaranth array emits every predicted row at the predicted cycle, equal to the tile products (a shift
    chain of 1 or 2 lanes; odd row counts leave the two lanes' chains of different lengths)."""
    rng = random.Random(rows * 10 + cols + 100 * lanes)
    tiles = [_rand_tile(rng, rng.choice(["ws", "os"]), rng.choice(["int8", "int4"]), rows, cols) for _ in range(14)]
    sched = schedule(tiles, rows, cols, lanes)
    dut = Array(QTAConfig(rows=rows, cols=cols, shift_lanes=lanes))
    got, busy = _play(dut, sched, sched.cycles + 2)
    ws_model, drain_model = simulate(sched.beats, rows, cols, lanes=lanes)
    assert [r for _, r in got["ws"]] == ws_model
    assert [r for _, r in got["drain"]][: len(drain_model)] == drain_model
    for o in sched.outputs:
        port = got[o.port]
        assert port[o.index][0] == o.cycle, o
    res = sched.results([r for _, r in got["ws"]], [r for _, r in got["drain"]])
    assert res == [t.result() for t in tiles]
    assert busy[sched.cycles - 1] == 1 and busy[sched.cycles] == 0
    assert busy[-1] == sched.cycles - 1


def test_array_int8_only_build():
    """A --no-int4 array runs INT8 tiles of both dataflows exactly."""
    rng = random.Random(77)
    tiles = [_rand_tile(rng, df, "int8", 2, 3) for df in ("ws", "os", "os", "ws", "ws", "os")]
    sched = schedule(tiles, 2, 3)
    dut = Array(QTAConfig(rows=2, cols=3, int4=False))
    got, _ = _play(dut, sched, sched.cycles + 1)
    assert sched.results([r for _, r in got["ws"]], [r for _, r in got["drain"]]) == [t.result() for t in tiles]


def test_schedule_cycles_and_hazard_check():

    a = [[1] * 64 for _ in range(64)]
    for df, lanes, expect in (("ws", 1, 4096 + 8 + 18), ("os", 1, 4096 + 1 + 8 + 18),
                              ("ws", 2, 4096 + 4 + 18), ("os", 2, 4096 + 1 + 4 + 18)):
        tiles, _ = gemm_tiles(a, a, 8, 8, df)
        assert schedule(tiles, 8, 8, lanes).cycles == expect
    # a tall short tile: K = 5 of 8 rows streamed 5 beats per tile; 2 lanes hide the 8-row drain (4 shifts)
    a5 = [[1] * 5 for _ in range(8)]
    b5 = [[1] * 8 for _ in range(5)]
    tiles = [Tile("os", "int8", a5, b5) for _ in range(10)]
    # 1 lane: tile 0 (5 beats), window 1: H2 bubble + 8 drain shifts, windows 2..9 and the tail: 8 shifts each
    assert schedule(tiles, 8, 8, 1).cycles == 5 + 9 + 8 * 8 + 8 + 18
    assert schedule(tiles, 8, 8, 2).cycles == 5 * 10 + 1 + 4 + 18
    assert ideal_cycles(64, 64, 64, 8, 8) == 4096
    # WS after OS: the drain rides on the WS tile's beats except its first one (H2)
    t_os = Tile("os", "int8", [[1, 2], [3, 4]], [[1, 0], [0, 1]])
    t_ws = Tile("ws", "int8", [[1, 1]] * 5, [[1, 2], [3, 4]])
    s = schedule([t_ws, t_os, t_ws], 2, 2)
    assert all(not (b.shift and p.compute and p.dataflow == 1 and p.sel != b.sel) for p, b in zip(s.beats, s.beats[1:]))
    z = [0, 0]
    bad = [Beat(z, z, z, compute=1, dataflow=1, sel=0, first=1), Beat(z, z, z, shift=1, sel=1)]
    with pytest.raises(ValueError, match="H2"):
        check(bad, 2, 2)
    with pytest.raises(ValueError, match="exceeds rows"):
        schedule([Tile("ws", "int8", [[1] * 3], [[1]] * 3)], 2, 2)
