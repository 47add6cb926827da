"""Controller decode / status / small programs on the whole SimTop in the Amaranth simulator (tiny arrays).

Every program also runs on the ISA emulator (sw/runtime/emulator.py); status, failing index and host memory must match.
"""

import random

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from tb_accel import random_program

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import Dataflow, Op, OutFormat, Precision, Status, encode
from cdmqta.hw.top import SimTop
from cdmqta.sw.runtime.emulator import Emulator
from cdmqta.sw.runtime.hostmem import image_words, pack_rows, rows_image, unpack_words

HOST_WORDS, CMD_WORDS = 64, 64


def run_sim(cfg, host_rows, programs, max_cycles=4000, reset_words=(), host_words=None, poison=0):
    """Run ``programs`` (a list of command lists) one after another on one simulated SimTop.

    host_rows: {addr: (kind, rows)} written before the first program; ``reset_words`` are set to ``poison`` before
    each. A run that does not finish within ``max_cycles`` fails (watchdog).
    Returns one dict per program: status, index, host words, counters.
    """
    host_words = host_words or HOST_WORDS
    dut = SimTop(cfg, host_words=host_words, cmd_words=CMD_WORDS)
    results = []

    async def bench(ctx):
        for addr, (kind, rows) in host_rows.items():
            for i, w in enumerate(pack_rows(rows, kind, cfg.lanes)):
                ctx.set(dut.host_mem.data[addr + i], w)
        for program in programs:
            for a in reset_words:
                ctx.set(dut.host_mem.data[a], poison)
            for i, w in enumerate(program):
                ctx.set(dut.cmd_mem.data[i], w)
            ctx.set(dut.n_cmds, len(program))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick()
            for _ in range(max_cycles):
                if ctx.get(dut.done):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"watchdog: done did not rise within {max_cycles} cycles")
            results.append({
                "status": Status(ctx.get(dut.status)), "index": ctx.get(dut.error_index),
                "host": [ctx.get(dut.host_mem.data[i]) for i in range(host_words)],
                "counters": {c: ctx.get(getattr(dut, c)) for c in ("busy_cycles", "macs", "stall_cycles",
                                                                    "compute_cycles")},
            })

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def emulate(cfg, host_rows, program, host_words=None):
    host_words = host_words or HOST_WORDS
    emu = Emulator(cfg, host_words=host_words)
    for addr, (kind, rows) in host_rows.items():
        image = rows_image(rows, kind, cfg.lanes)
        emu.host[addr:addr + len(image)] = image
    status = emu.run(program)
    host = image_words(emu.host)
    return Status(status), emu.bad_index, host, emu


def check(cfg, host_rows, program):
    got = run_sim(cfg, host_rows, [program])[0]
    status, index, host, emu = emulate(cfg, host_rows, program)
    assert got["status"] == status
    if status != Status.OK:
        assert got["index"] == index
    bad = [i for i in range(HOST_WORDS) if got["host"][i] != host[i]]
    assert not bad, f"host words differ at {bad}"
    return got


CFG = QTAConfig(rows=2, cols=3, sp_rows=16, sp_banks=2, acc_rows=16, acc_banks=2, host_addr_width=8)


@pytest.mark.parametrize("dataflow", [Dataflow.WS, Dataflow.OS])
def test_small_gemm_and_counters(dataflow):
    rng = torch.Generator().manual_seed(int(dataflow))
    M, N, K = 3, 3, 2
    a = torch.randint(-128, 128, (M, K), generator=rng).numpy()
    b = torch.randint(-128, 128, (K, N), generator=rng).numpy()
    host = {0: ("int8", a), 8: ("int8", b), 16: ("int8", a.T)}
    if dataflow == Dataflow.WS:
        prog = [encode(Op.LOAD, sp_addr=0, rows=M, host_addr=0, host_stride=1),
                encode(Op.LOAD, sp_addr=8, rows=K, host_addr=8, host_stride=1),
                encode(Op.PRELOAD, b_addr=8, k=K, n=N),
                encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=0, c_addr=0, m=M, n=N, k=K)]
        beats = M
    else:
        # OS: m <= rows = 2: two row tiles.
        prog = [encode(Op.LOAD, sp_addr=0, rows=K, host_addr=16, host_stride=1),
                encode(Op.LOAD, sp_addr=4, rows=K, host_addr=8, host_stride=1),
                encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=4, c_addr=0, m=2, n=N, k=K)]
        # rows 2.. of A: A^T rows with lanes shifted (load from a second copy of A^T's columns 2..)
        host[24] = ("int8", a[2:].T)
        prog += [encode(Op.LOAD, sp_addr=8, rows=K, host_addr=24, host_stride=1),
                 encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=8, b_addr=4, c_addr=2, m=1, n=N, k=K)]
        beats = 2 * K
    prog.append(encode(Op.STORE, out=OutFormat.INT32, acc_addr=0, rows=M, cols=N, host_addr=32, host_stride=1))
    got = check(CFG, host, prog)
    assert got["status"] == Status.OK
    words = got["host"][32:32 + M]
    c = unpack_words(words, "int32", CFG.lanes)[:, :N]
    assert np.array_equal(c, a @ b)
    assert got["counters"]["macs"] == M * N * K
    assert got["counters"]["compute_cycles"] == beats
    assert got["counters"]["busy_cycles"] > beats


BAD = [
    (0xE, Status.BAD_OPCODE),
    (encode(Op.CONFIG, shift=63), Status.BAD_FIELD),
    (encode(Op.STORE, out=3, rows=1, cols=1), Status.BAD_FIELD),
    (encode(Op.LOAD, rows=0), Status.ZERO_SIZE),
    (encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=0), Status.ZERO_SIZE),
    (encode(Op.COMPUTE, dataflow=Dataflow.OS, m=3, n=1, k=1), Status.TILE_TOO_LARGE),
    (encode(Op.PRELOAD, k=1, n=4), Status.TILE_TOO_LARGE),
    (encode(Op.LOAD, sp_addr=15, rows=2), Status.ADDR_RANGE),
    (encode(Op.LOAD, rows=2, host_addr=60, host_stride=4), Status.ADDR_RANGE),
    (encode(Op.STORE, acc_addr=0, rows=1, cols=1, host_addr=HOST_WORDS), Status.ADDR_RANGE),
    (encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1), Status.BAD_FIELD),   # WS without PRELOAD
]


def test_status_and_stop():
    """Each bad command stops its program: status, index, and the STORE after it never runs (its host word keeps
    the poison); the same programs on the emulator agree."""
    host = {0: ("int8", np.arange(1, CFG.lanes + 1)[None, :])}
    poison = 0x5A5A5A5A_A5A5A5A5_5A5A5A5A
    # The LOAD puts host word 0 in accumulator row 0, which the STORE writes to word 40: a STORE that runs
    # replaces the poison with row 0 (non-zero), so a STORE that should not have run is seen.
    store = encode(Op.STORE, out=OutFormat.INT32, acc_addr=0, rows=1, cols=CFG.cols, host_addr=40, host_stride=1)
    load = encode(Op.LOAD, to_acc=1, sp_addr=0, rows=1, host_addr=0, host_stride=1)
    programs = [[load, bad, store] for bad, _ in BAD] + [[load, store]]
    results = run_sim(CFG, host, programs, reset_words=(40,), poison=poison)
    for n, ((_bad, status), got, prog) in enumerate(zip(BAD, results, programs)):
        assert got["status"] == status, f"case {n}: {got['status'].name} != {status.name}"
        assert got["index"] == 1, f"case {n}"
        assert got["host"][40] == poison, f"case {n}: the command after the error ran"
        em_status, em_index, _, _ = emulate(CFG, host, prog)
        assert (em_status, em_index) == (status, 1), f"case {n}: emulator {em_status.name} at {em_index}"
    # The next run after an error starts clean and runs to the end: the STORE writes row 0 over the poison.
    row0 = pack_rows(np.arange(1, CFG.lanes + 1)[None, :], "int8", CFG.lanes)[0]
    expect = sum(((row0 >> (32 * j)) & 0xFFFFFFFF) << (32 * j) for j in range(CFG.cols))
    assert results[-1]["status"] == Status.OK and results[-1]["host"][40] == expect != poison
    assert emulate(CFG, host, programs[-1])[2][40] == expect


def test_not_built():
    """An OS-only INT8-only configuration rejects WS commands and INT4 with NOT_BUILT, like the emulator."""
    cfg = QTAConfig(rows=2, cols=2, dataflows=("os",), int4=False, sp_rows=16, sp_banks=1, acc_rows=16,
                    acc_banks=1, host_addr_width=8)
    bads = [encode(Op.PRELOAD, k=1, n=1), encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1),
            encode(Op.CONFIG, precision=Precision.INT4)]
    ok = [encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=1)]
    results = run_sim(cfg, {}, [ok + [bad] for bad in bads] + [ok])
    for bad, got in zip(bads, results):
        status, index, _, _ = emulate(cfg, {}, ok + [bad])
        assert got["status"] == status == Status.NOT_BUILT and got["index"] == index == 1
    assert results[-1]["status"] == Status.OK


def test_done_waits_for_queued_commands():
    """``done`` must not rise while a dispatched command still sits in a queue (a lone LOAD, a lone STORE)."""
    host = {0: ("int32", np.arange(12 * CFG.cols).reshape(12, CFG.cols))}
    load = encode(Op.LOAD, to_acc=1, sp_addr=0, rows=12, host_addr=0, host_stride=1)
    store = encode(Op.STORE, out=OutFormat.INT32, acc_addr=0, rows=12, cols=CFG.cols, host_addr=20, host_stride=1)
    first, second = run_sim(CFG, host, [[load], [store]])
    assert first["counters"]["busy_cycles"] >= 12 + 3
    assert second["host"][20:32] == first["host"][0:12]


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 5), (5, 2)])
def test_random_tile_sequences_parametric(rows, cols):
    """Random WS / OS tile sequences (INT8, INT4) on degenerate and non-square arrays, against the emulator."""

    cfg = QTAConfig(rows=rows, cols=cols, sp_rows=64, sp_banks=2, acc_rows=32, acc_banks=1, host_addr_width=8)
    rng = random.Random(rows * 10 + cols)
    for n, precision in enumerate((Precision.INT8, Precision.INT4)):
        data, prog, end = random_program(rng, precision, cfg=cfg, host_words=256)
        host = {0: ("int8", data)}
        got = run_sim(cfg, host, [prog], max_cycles=6000, host_words=256)[0]
        status, _, ref, _ = emulate(cfg, host, prog, host_words=256)
        assert got["status"] == status == Status.OK
        diff = [i for i in range(end) if got["host"][i] != ref[i]]
        assert not diff, f"program {n}: host words differ at {diff[:8]}"
