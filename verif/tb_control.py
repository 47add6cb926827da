"""cocotb testbench of the control paths and malformed input, on a random-tier SimTop (verif/test_control_paths.py).

Every case has a documented outcome (README, ISA section, "Control paths and malformed commands"): a status code
and failing index, or a defined no-op. Each one runs from poisoned memories and is compared with the ISA emulator
over the whole state (host memory, scratchpad, accumulator, status, index, macs), so a command that should not
have run, or a run that went on after an error, is seen. Environment: CDMQTA_CONFIG, HOST_WORDS, CMD_WORDS.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import FIELDS, Dataflow, Op, OutFormat, Precision, Status, encode, field_offsets
from cdmqta.hw.top import PAST_END_WORD
from cdmqta.sw.rtl.tb_random import RtlState
from cdmqta.sw.runtime.randprog import compare_state, format_program, poison_images

CFG = QTAConfig.from_json(os.environ.get("CDMQTA_CONFIG", "{}"))
HOST_WORDS = int(os.environ.get("HOST_WORDS", "256"))
CMD_WORDS = int(os.environ.get("CMD_WORDS", "64"))
R, C, S, A, H = CFG.rows, CFG.cols, CFG.sp_rows, CFG.acc_rows, HOST_WORDS


def _long_program():
    """About a thousand cycles of work touching all three memories."""
    return [encode(Op.LOAD, sp_addr=0, rows=S, host_addr=0, host_stride=1),
            encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=8, c_addr=0, m=R, n=C, k=S - 8),
            encode(Op.COMPUTE, dataflow=Dataflow.OS, accumulate=1, a_addr=4, b_addr=0, c_addr=0, m=R, n=C, k=S - 8),
            encode(Op.STORE, acc_addr=0, rows=A, cols=C, host_addr=H - A, host_stride=1),
            encode(Op.LOAD, to_acc=1, sp_addr=0, rows=A, host_addr=3, host_stride=2),
            encode(Op.STORE, out=OutFormat.INT8, acc_addr=0, rows=A, cols=C, host_addr=0, host_stride=3)]


async def check(rtl, program, seed, label, reset=True):
    images = poison_images(CFG, HOST_WORDS, seed)
    hw = await rtl.run(program, images, reset=reset)
    assert "hang" not in hw, f"{label}: {hw.get('hang')}"
    diffs, _ = compare_state(CFG, images, program, hw)
    assert not diffs, f"{label}: {'; '.join(diffs)}\n{format_program(program)}"
    return hw


async def start_tb(dut):
    rtl = RtlState(dut, CFG, HOST_WORDS, CMD_WORDS)
    await rtl.drv.reset()
    return rtl


@cocotb.test()
async def zero_length_run(dut):
    """n_cmds = 0: done at once, status OK, nothing written, macs 0; before and after a real run."""
    rtl = await start_tb(dut)
    for n in range(3):
        hw = await check(rtl, [], 10 + n, f"empty run {n}")
        assert hw["status"] == Status.OK and hw["error_index"] is None and hw["macs"] == 0
        assert hw["cycles"] <= 3, hw["cycles"]
        await check(rtl, _long_program()[:2], 20 + n, "a real run between empty ones")


@cocotb.test()
async def start_while_busy_is_ignored(dut):
    """A start pulse during a run changes nothing: same state and same busy_cycles as the undisturbed run."""
    rtl = await start_tb(dut)
    prog = _long_program()
    ref = await check(rtl, prog, 1, "undisturbed")
    for delay in (1, 2, 7, 60, ref["cycles"] // 2, ref["cycles"] - 3):
        images = poison_images(CFG, HOST_WORDS, 1)
        await rtl.drv.reset(cycles=2)
        await rtl.poison(images)
        dut = rtl.dut
        for i, w in enumerate(prog):
            dut.cmd_mem[i].value = w
        await RisingEdge(dut.clk)
        dut.n_cmds.value = len(prog)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await ClockCycles(dut.clk, delay)
        assert not int(dut.done.value), f"delay {delay}: done before the second start"
        dut.start.value = 1                     # the second start, while busy
        await RisingEdge(dut.clk)
        dut.start.value = 0
        for _ in range(4 * ref["cycles"] + 100):
            await RisingEdge(dut.clk)
            if int(dut.done.value):
                break
        else:
            raise AssertionError(f"delay {delay}: watchdog, done never rose after a start while busy")
        await RisingEdge(dut.clk)
        state = rtl.read_state()
        hw = {**state, "error_index": None if state["status"] == 0 else state["error_index"]}
        diffs, _ = compare_state(CFG, images, prog, hw)
        assert not diffs, f"start while busy after {delay} cycles: {diffs}"
        assert state["busy_cycles"] == ref["cycles"], (delay, state["busy_cycles"], ref["cycles"])


@cocotb.test()
async def reset_during_run(dut):
    """rst at any point of a run: done low, status 0, no host write after reset, CONFIG state and the WS weights
    back to their reset values; the next run (no further reset) matches the emulator from reset."""
    rtl = await start_tb(dut)
    prog = _long_program()
    ref = await check(rtl, prog, 2, "undisturbed")
    after = [encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1)]    # weights invalid after reset: BAD_FIELD
    nxt = [encode(Op.LOAD, sp_addr=0, rows=8, host_addr=5, host_stride=1),
           encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=2, c_addr=3, m=R, n=C, k=6),
           encode(Op.STORE, out=OutFormat.INT4, acc_addr=0, rows=8, cols=C, host_addr=20, host_stride=1)]
    for at in (1, 2, 3, 17, 150, ref["cycles"] // 2, ref["cycles"] - 2):
        dut = rtl.dut
        await rtl.drv.reset(cycles=2)
        await rtl.poison(poison_images(CFG, HOST_WORDS, 3))
        for i, w in enumerate(prog):
            dut.cmd_mem[i].value = w
        await RisingEdge(dut.clk)
        dut.n_cmds.value = len(prog)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await ClockCycles(dut.clk, at)
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        snap = rtl.read_state()
        assert snap["done"] == 0 and snap["status"] == 0 and snap["error_index"] == 0, (at, snap["status"])
        await ClockCycles(dut.clk, 3 * (R + C) + 64)
        later = rtl.read_state()
        for k in ("host", "sp", "acc"):
            assert np.array_equal(later[k], snap[k]), f"reset after {at} cycles: {k} changed after reset"
        hw = await check(rtl, after, 4, f"WS COMPUTE right after a reset at {at}", reset=False)
        assert hw["status"] == Status.BAD_FIELD and hw["error_index"] == 0
        await check(rtl, nxt, 5, f"first run after a reset at {at}", reset=False)


@cocotb.test()
async def run_past_the_command_memory(dut):
    """n_cmds > cmd_words: commands 0..cmd_words-1 run, command cmd_words is BAD_OPCODE (no wrap-around)."""
    rtl = await start_tb(dut)
    body = _long_program()[:4] + [encode(Op.NOP)] * (CMD_WORDS - 5) + [
        encode(Op.STORE, acc_addr=1, rows=2, cols=C, host_addr=7, host_stride=5)]
    assert len(body) == CMD_WORDS
    for extra in (1, 2, 1000):
        images = poison_images(CFG, HOST_WORDS, 6 + extra)
        await rtl.drv.reset(cycles=2)
        await rtl.poison(images)
        dut = rtl.dut
        for i, w in enumerate(body):
            dut.cmd_mem[i].value = w
        await RisingEdge(dut.clk)
        dut.n_cmds.value = CMD_WORDS + extra
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        for _ in range(20000):
            await RisingEdge(dut.clk)
            if int(dut.done.value):
                break
        else:
            raise AssertionError("watchdog: a run past the command memory did not finish")
        await RisingEdge(dut.clk)
        state = rtl.read_state()
        assert state["status"] == Status.BAD_OPCODE and state["error_index"] == CMD_WORDS, state["status"]
        diffs, _ = compare_state(CFG, images, body + [PAST_END_WORD], {**state, "error_index": CMD_WORDS})
        assert not diffs, f"{extra} past the end: {diffs}"


def malformed_cases():
    """(label, prefix, bad command, status): every field of every opcode out of its legal range, each status,
    and commands with several errors (the first check in the documented order wins)."""
    int4 = [encode(Op.CONFIG, precision=Precision.INT4, mult=1)]
    pre = [encode(Op.PRELOAD, b_addr=0, k=R, n=C)]
    cases = [(f"opcode {op}", [], op | (0x5A5A << 4), Status.BAD_OPCODE) for op in range(7, 16)]
    cases += [
        ("CONFIG shift 48", [], encode(Op.CONFIG, shift=48), Status.BAD_FIELD),
        ("CONFIG shift 63", [], encode(Op.CONFIG, shift=63, precision=1, mult=5), Status.BAD_FIELD),
        ("LOAD rows 0", [], encode(Op.LOAD, rows=0), Status.ZERO_SIZE),
        ("LOAD acc rows 0", [], encode(Op.LOAD, to_acc=1, rows=0, sp_addr=65535), Status.ZERO_SIZE),
        ("LOAD sp_addr+rows", [], encode(Op.LOAD, sp_addr=S - 1, rows=2), Status.ADDR_RANGE),
        ("LOAD sp_addr max", [], encode(Op.LOAD, sp_addr=65535, rows=1), Status.ADDR_RANGE),
        ("LOAD rows max", [], encode(Op.LOAD, rows=65535), Status.ADDR_RANGE),
        ("LOAD acc addr", [], encode(Op.LOAD, to_acc=1, sp_addr=A, rows=1), Status.ADDR_RANGE),
        ("LOAD host_addr", [], encode(Op.LOAD, rows=1, host_addr=H), Status.ADDR_RANGE),
        ("LOAD host_addr max", [], encode(Op.LOAD, rows=1, host_addr=(1 << 32) - 1), Status.ADDR_RANGE),
        ("LOAD host stride", [], encode(Op.LOAD, rows=2, host_addr=0, host_stride=H), Status.ADDR_RANGE),
        ("LOAD host stride max", [], encode(Op.LOAD, rows=2, host_stride=65535), Status.ADDR_RANGE),
        ("PRELOAD k 0", [], encode(Op.PRELOAD, k=0, n=1), Status.ZERO_SIZE),
        ("PRELOAD n 0", [], encode(Op.PRELOAD, k=1, n=0), Status.ZERO_SIZE),
        ("PRELOAD k > R", [], encode(Op.PRELOAD, k=R + 1, n=1), Status.TILE_TOO_LARGE),
        ("PRELOAD INT4 k > 2R", int4, encode(Op.PRELOAD, k=2 * R + 1, n=1), Status.TILE_TOO_LARGE),
        ("PRELOAD n > C", [], encode(Op.PRELOAD, k=1, n=C + 1), Status.TILE_TOO_LARGE),
        ("PRELOAD n max", [], encode(Op.PRELOAD, k=1, n=255), Status.TILE_TOO_LARGE),
        ("PRELOAD b_addr", [], encode(Op.PRELOAD, b_addr=S - 1, k=2, n=1), Status.ADDR_RANGE),
        ("PRELOAD b_addr max", [], encode(Op.PRELOAD, b_addr=65535, k=1, n=1), Status.ADDR_RANGE),
        ("COMPUTE OS m 0", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, m=0, n=1, k=1), Status.ZERO_SIZE),
        ("COMPUTE OS n 0", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=0, k=1), Status.ZERO_SIZE),
        ("COMPUTE OS k 0", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=0), Status.ZERO_SIZE),
        ("COMPUTE WS k 0", pre, encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=0), Status.ZERO_SIZE),
        ("COMPUTE OS m > R", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, m=R + 1, n=1, k=1), Status.TILE_TOO_LARGE),
        ("COMPUTE OS n > C", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=C + 1, k=1), Status.TILE_TOO_LARGE),
        ("COMPUTE WS k > R", pre, encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=R + 1),
         Status.TILE_TOO_LARGE),
        ("COMPUTE WS n max", pre, encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=255, k=1), Status.TILE_TOO_LARGE),
        ("COMPUTE WS a_addr", pre, encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=S - 1, m=2, n=1, k=1),
         Status.ADDR_RANGE),
        ("COMPUTE WS m max", pre, encode(Op.COMPUTE, dataflow=Dataflow.WS, m=65535, n=1, k=1), Status.ADDR_RANGE),
        ("COMPUTE OS a_addr", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=S - 1, m=1, n=1, k=2),
         Status.ADDR_RANGE),
        ("COMPUTE OS b_addr", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, b_addr=S, m=1, n=1, k=1),
         Status.ADDR_RANGE),
        ("COMPUTE OS k max", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=65535), Status.ADDR_RANGE),
        ("COMPUTE c_addr", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, c_addr=A - 1, m=2, n=1, k=1),
         Status.ADDR_RANGE),
        ("COMPUTE c_addr max", [], encode(Op.COMPUTE, dataflow=Dataflow.OS, c_addr=65535, m=1, n=1, k=1),
         Status.ADDR_RANGE),
        ("COMPUTE WS without PRELOAD", [], encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1),
         Status.BAD_FIELD),
        ("COMPUTE WS after an OS COMPUTE", pre + [encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=1)],
         encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1), Status.BAD_FIELD),
        ("STORE out 3", [], encode(Op.STORE, out=3, rows=1, cols=1), Status.BAD_FIELD),
        ("STORE rows 0", [], encode(Op.STORE, rows=0, cols=1), Status.ZERO_SIZE),
        ("STORE cols 0", [], encode(Op.STORE, rows=1, cols=0), Status.ZERO_SIZE),
        ("STORE cols > C", [], encode(Op.STORE, rows=1, cols=C + 1), Status.TILE_TOO_LARGE),
        ("STORE cols max", [], encode(Op.STORE, rows=1, cols=255), Status.TILE_TOO_LARGE),
        ("STORE acc_addr", [], encode(Op.STORE, acc_addr=A - 1, rows=2, cols=1), Status.ADDR_RANGE),
        ("STORE rows max", [], encode(Op.STORE, rows=65535, cols=1), Status.ADDR_RANGE),
        ("STORE host_addr", [], encode(Op.STORE, rows=1, cols=1, host_addr=H), Status.ADDR_RANGE),
        ("STORE host stride", [], encode(Op.STORE, rows=3, cols=1, host_stride=H // 2), Status.ADDR_RANGE),
        # several errors in one command: the first check in the documented order decides
        ("STORE out 3 and rows 0", [], encode(Op.STORE, out=3, rows=0, cols=0), Status.BAD_FIELD),
        ("LOAD rows 0 and address", [], encode(Op.LOAD, rows=0, sp_addr=65535, host_addr=H), Status.ZERO_SIZE),
        ("PRELOAD k 0 and n > C", [], encode(Op.PRELOAD, k=0, n=C + 1), Status.ZERO_SIZE),
        ("COMPUTE OS too large and address", [],
         encode(Op.COMPUTE, dataflow=Dataflow.OS, c_addr=A, m=R + 1, n=1, k=1), Status.TILE_TOO_LARGE),
        ("COMPUTE WS no weights and address", [], encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=S, m=1, n=1, k=1),
         Status.ADDR_RANGE),
        ("STORE cols > C and address", [], encode(Op.STORE, acc_addr=A, rows=1, cols=C + 1), Status.TILE_TOO_LARGE),
    ]
    return cases


def _garbage_above_fields(op, word, rng):
    """``word`` with random bits above the opcode's last field (which the decoders ignore)."""
    offs = field_offsets(op)
    top = max((lsb + w for lsb, w in offs.values()), default=4)
    return word | (int(rng.integers(0, 1 << 62)) << top) & ((1 << 128) - 1)


@cocotb.test()
async def malformed_commands(dut):
    """Every field of every opcode out of range: status, failing index, the commands before it complete, nothing
    after it runs (a poisoned STORE target stays poisoned); the whole state equals the emulator's."""
    rtl = await start_tb(dut)
    good = [encode(Op.LOAD, sp_addr=0, rows=8, host_addr=0, host_stride=1),
            encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=4, c_addr=0, m=R, n=C, k=4)]
    after = [encode(Op.STORE, acc_addr=0, rows=R, cols=C, host_addr=100, host_stride=1),
             encode(Op.LOAD, sp_addr=0, rows=4, host_addr=120, host_stride=1)]
    for n, (label, prefix, bad, status) in enumerate(malformed_cases()):
        prog = good + prefix + [bad] + after
        hw = await check(rtl, prog, 100 + n, label)
        assert hw["status"] == status, f"{label}: {Status(hw['status']).name}, expected {status.name}"
        assert hw["error_index"] == len(good) + len(prefix), f"{label}: index {hw['error_index']}"
        images = poison_images(CFG, HOST_WORDS, 100 + n)
        assert np.array_equal(hw["host"][100:100 + R], images[0][100:100 + R]), f"{label}: the STORE after ran"


@cocotb.test()
async def unused_bits_are_ignored(dut):
    """Bits above an opcode's fields do not change what a command does (hardware and emulator decode alike)."""
    rtl = await start_tb(dut)
    rng = np.random.default_rng(7)
    prog = [encode(Op.CONFIG, precision=Precision.INT4, rounding=1, shift=9, mult=3000, seed=77),
            encode(Op.LOAD, sp_addr=0, rows=12, host_addr=2, host_stride=3),
            encode(Op.PRELOAD, b_addr=1, k=2 * R - 1, n=C),
            encode(Op.COMPUTE, dataflow=Dataflow.WS, accumulate=1, a_addr=2, c_addr=1, m=5, n=C, k=2 * R),
            encode(Op.FENCE), encode(Op.NOP),
            encode(Op.STORE, out=OutFormat.INT4, transposed=1, acc_addr=0, rows=8, cols=C, host_addr=60,
                   host_stride=2, origin_row=3, origin_col=9)]
    clean = await check(rtl, prog, 8, "clean")
    dirty_prog = [_garbage_above_fields(w & 0xF, w, rng) for w in prog]
    assert dirty_prog != prog and set(FIELDS) == set(Op)
    dirty = await check(rtl, dirty_prog, 8, "with garbage above the fields")
    for k in ("host", "sp", "acc"):
        assert np.array_equal(clean[k], dirty[k]), k


@cocotb.test()
async def watchdog_fires(dut):
    """The driver's watchdog turns a run that does not finish in time into a TimeoutError with a message."""
    rtl = await start_tb(dut)
    try:
        await rtl.drv.run(_long_program(), timeout_cycles=20)
    except TimeoutError as exc:
        assert "did not finish within 20 cycles" in str(exc)
    else:
        raise AssertionError("the watchdog did not fire")
    await rtl.drv.reset(cycles=2)
