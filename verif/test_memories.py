"""Scratchpad and accumulator memory (hw/memories.py) in the Amaranth simulator against a Python model."""

import random

import pytest
from amaranth.sim import Simulator

from cdmqta.hw.memories import AccumulatorMemory, Scratchpad


@pytest.mark.parametrize("banks", [1, 4])
def test_scratchpad_banks_and_two_read_ports(banks):
    rows, lanes = 32, 3
    dut = Scratchpad(rows=rows, lanes=lanes, banks=banks)
    rng = random.Random(banks)
    model = [0] * rows

    async def bench(ctx):
        for a in range(rows):
            v = rng.getrandbits(8 * lanes)
            model[a] = v
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_addr, a)
            ctx.set(dut.w_data, v)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        for _ in range(100):
            addrs = [rng.randrange(rows), rng.randrange(rows)]
            for p in range(2):
                ctx.set(dut.r[p].en, 1)
                ctx.set(dut.r[p].addr, addrs[p])
            await ctx.tick()
            for p in range(2):
                ctx.set(dut.r[p].en, 0)
            assert [ctx.get(dut.r[p].data) for p in range(2)] == [model[a] for a in addrs]
            # Held while en is low.
            await ctx.tick()
            assert [ctx.get(dut.r[p].data) for p in range(2)] == [model[a] for a in addrs]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("banks,ports,rows", [(1, 1, 16), (2, 1, 16), (1, 2, 17), (2, 2, 16), (4, 2, 16)])
def test_accumulate_on_write_back_to_back(banks, ports, rows):
    """Random execute / load writes against a Python model; with two execute ports the second writes row r - 1
    in the same cycle (a drain lane pair), also into an odd-depth memory whose banks are raised to 2."""
    cols, aw = 3, 32
    dut = AccumulatorMemory(rows=rows, cols=cols, acc_width=aw, banks=banks, ex_ports=ports)
    rng = random.Random(7 + banks + 10 * ports)
    model = [[0] * cols for _ in range(rows)]

    def wrap(v):
        v &= (1 << aw) - 1
        return v - (1 << aw) if v >> (aw - 1) else v

    async def bench(ctx):
        # A random mix of execute writes (accumulate or not, masked), load writes and idle cycles; many
        # back-to-back writes to the same few rows exercise the read-modify-write forwarding.
        for step in range(400):
            kind = rng.choice(["ex", "ex", "ld", "both", "idle"])
            addr = rng.randrange(4) if step % 2 else rng.randrange(rows)
            pair = ports == 2 and addr >= 1 and rng.random() < 0.6 and kind in ("ex", "both")
            vals1 = [rng.randint(-(1 << 20), 1 << 20) for _ in range(cols)]
            vals = [rng.randint(-(1 << 20), 1 << 20) for _ in range(cols)]
            mask = rng.getrandbits(cols)
            accumulate = rng.randint(0, 1)
            ld_addr = rng.randrange(rows)
            ld_vals = [rng.randint(-(1 << 31), (1 << 31) - 1) for _ in range(cols)]
            ctx.set(dut.ex_valid, kind in ("ex", "both"))
            ctx.set(dut.ld_valid, kind in ("ld", "both"))
            ctx.set(dut.ex_addr, addr)
            if ports == 2:
                ctx.set(dut.ex1_valid, pair)
                ctx.set(dut.ex1_addr, addr - 1)
                for c in range(cols):
                    ctx.set(dut.ex1_data[c], vals1[c])
            ctx.set(dut.ex_mask, mask)
            ctx.set(dut.ex_accumulate, accumulate)
            ctx.set(dut.ld_addr, ld_addr)
            for c in range(cols):
                ctx.set(dut.ex_data[c], vals[c])
                ctx.set(dut.ld_data[c], ld_vals[c])
            if kind in ("ex", "both"):
                assert not ctx.get(dut.ld_ready)
                for r, v in ([(addr, vals)] + ([(addr - 1, vals1)] if pair else [])):
                    for c in range(cols):
                        if mask >> c & 1:
                            model[r][c] = wrap(model[r][c] + v[c]) if accumulate else v[c]
            elif kind == "ld":
                assert ctx.get(dut.ld_ready)
                model[ld_addr] = list(ld_vals)
            await ctx.tick()
        ctx.set(dut.ex_valid, 0)
        ctx.set(dut.ld_valid, 0)
        if ports == 2:
            ctx.set(dut.ex1_valid, 0)
        await ctx.tick()
        await ctx.tick()
        assert not ctx.get(dut.busy)
        for a in range(rows):
            ctx.set(dut.r.en, 1)
            ctx.set(dut.r.addr, a)
            await ctx.tick()
            assert [ctx.get(dut.r.data[c]) for c in range(cols)] == model[a], f"row {a}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
