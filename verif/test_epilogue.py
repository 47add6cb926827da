"""The requantization epilogue (hw/epilogue.py) against sw/model/requant.py, bit for bit, in the Amaranth simulator."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from cdmqta.hw.array_schedule import sign_extend
from cdmqta.hw.epilogue import Epilogue
from cdmqta.hw.isa import OutFormat, Rounding
from cdmqta.sw.model.requant import requantize
from cdmqta.sw.runtime.hostmem import pack_rows


def _run(cols, acc_width, lanes, rows, cfgs, row_index):
    """Stream ``rows`` (list of lists of ints) with per-row configs; return the output words in order."""
    dut = Epilogue(cols=cols, acc_width=acc_width, lanes=lanes)
    out = []

    async def bench(ctx):
        for n, (row, cfg) in enumerate(zip(rows, cfgs)):
            ctx.set(dut.i_valid, 1)
            for c in range(cols):
                ctx.set(dut.i_acc[c], row[c])
            ctx.set(dut.i_row, row_index[n])
            ctx.set(dut.i_tag, n)
            for k, v in cfg.items():
                ctx.set(getattr(dut.i_cfg, k), v)
            await ctx.tick()
            if ctx.get(dut.o_valid):
                out.append((ctx.get(dut.o_tag), ctx.get(dut.o_word)))
        ctx.set(dut.i_valid, 0)
        for _ in range(Epilogue.LATENCY + 1):
            await ctx.tick()
            if ctx.get(dut.o_valid):
                out.append((ctx.get(dut.o_tag), ctx.get(dut.o_word)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [t for t, _ in out] == list(range(len(rows))), "rows lost, duplicated or reordered"
    return [w for _, w in out]


def _expect(row, cfg, i_row, cols, lanes):
    acc = torch.tensor([row], dtype=torch.int64)
    out = cfg["out"]
    if out == OutFormat.INT32:        # the low 32 bits of each lane (acc_width may be 40)
        return pack_rows([[sign_extend(v, 32) for v in row]], "int32", lanes)[0]
    bits = 8 if out == OutFormat.INT8 else 4
    rnd = "stochastic" if cfg["rounding"] == Rounding.STOCHASTIC else "nearest"
    # The tile is one accumulator row whose logical origin is (i_row, origin_col) in the acc frame.
    q = requantize(acc, cfg["mult"], cfg["shift"], bits=bits, rounding=rnd, seed=cfg["seed"],
                   origin=(i_row, cfg["origin_col"]), transposed=bool(cfg["transposed"]))[0].tolist()
    return pack_rows([q], "int8", lanes)[0]


@pytest.mark.parametrize("cols,lanes,acc_width", [(4, 4, 32), (3, 5, 40)])
def test_epilogue_matches_requant(cols, lanes, acc_width):
    rng = random.Random(cols * 1000 + acc_width)
    lo, hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    extremes = [lo, hi, 0, -1, 1, lo + 1, hi - 1]
    rows, cfgs, idx = [], [], []
    shifts = list(range(48))
    for n in range(320):
        kind = n % 4
        if kind == 0:
            row = [rng.choice(extremes) for _ in range(cols)]
        elif kind == 1:
            row = [rng.randint(-(1 << 20), 1 << 20) for _ in range(cols)]
        elif kind == 2:
            # Exact ties for nearest-even: multiples of 2**(shift-1) appear often.
            row = [rng.randint(-64, 64) << rng.randint(0, 30) for _ in range(cols)]
        else:
            row = [rng.randint(lo, hi) for _ in range(cols)]
        shift = shifts[n % 48] if n < 192 else rng.randint(0, 47)
        cfg = {
            "out": (OutFormat.INT8, OutFormat.INT4, OutFormat.INT32)[n % 3 if n >= 192 else (n // 48) % 2],
            "transposed": rng.randint(0, 1),
            "origin_col": rng.choice([0, 5, rng.randint(0, 0xFFFF)]),
            "mult": rng.choice([1, 0xFFFF, rng.randint(1, 0xFFFF)]),
            "shift": shift,
            "rounding": (n // 96) % 2 if n < 192 else rng.randint(0, 1),
            "seed": rng.getrandbits(32),
        }
        rows.append([min(max(v, lo), hi) for v in row])
        cfgs.append(cfg)
        idx.append(rng.choice([n, rng.randint(0, 0xFFFF)]))
    got = _run(cols, acc_width, lanes, rows, cfgs, idx)
    for n, (row, cfg) in enumerate(zip(rows, cfgs)):
        assert got[n] == _expect(row, cfg, idx[n], cols, lanes), f"row {n}: acc={row} cfg={cfg} i={idx[n]}"
