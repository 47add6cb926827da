"""cocotb testbench of :class:`cdmqta.hw.axi_top.AxiAccelerator`: GEMM programs fetched from memory and run through
the AXI4 master against cocotbext-axi's ``AxiRam``, driven through the AXI4-Lite registers (``AxiLiteMaster`` and the
generated driver view), with random pauses on all ten channels and random memory latency; every cycle of
``m_axi_*`` goes through :class:`axi_checker.AxiChecker`.

The programs are the hand-written GEMMs of ``tb_accel.py`` (WS / OS, INT8 / INT4, split K) with host addresses
turned into byte addresses (word w -> ``base + w * 4 * lanes``) and strides into bytes. The RAM is filled with
random poison first; afterwards the WHOLE RAM must equal the expected image: the inputs, the program, and the
C rows (``4 * n`` bytes per row, torch's integer matmul) -- nothing else changed. Parameters: CDMQTA_CONFIG.
"""

import os
import random

import cocotb
import torch
from axi_checker import AxiChecker
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from tb_accel import Gemm, rand_operands

from cdmqta.hw import regs
from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import Dataflow, Op, Precision, Status, decode, encode
from cdmqta.sw.runtime.hostmem import rows_image

CFG = QTAConfig.from_json(os.environ.get("CDMQTA_CONFIG", "{}"))
MEM = 1 << 19
WB = 4 * CFG.lanes           # bytes of one tb_accel host word
DATA_BASE = 0x10000
CMD_BASE = 0x1000 + 4        # not 16-byte aligned on purpose


def pauses(rng, p):
    while True:
        yield rng.random() < p


def byte_program(program, base=DATA_BASE):
    """tb_accel's word-addressed program with byte addresses / strides."""
    out = []
    for word in program:
        op, f = decode(word)
        if op in (Op.LOAD, Op.STORE):
            f["host_addr"] = base + f["host_addr"] * WB
            f["host_stride"] = f["host_stride"] * WB
        out.append(encode(op, **f))
    return out


class TB:
    def __init__(self, dut, seed):
        self.dut, self.rng = dut, random.Random(seed)
        Clock(dut.clk, 10, unit="ns").start()
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEM)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.regs = regs.AsyncRegisters(self.axil.read_dword, self.axil.write_dword)
        self.bad_read = self.bad_write = None
        self.latency = 0.0
        read, write = self.ram.read_if._read, self.ram.write_if._write

        async def slow_read(address, length):
            if self.latency and self.rng.random() < self.latency:
                await ClockCycles(dut.clk, self.rng.randint(1, 12))
            if self.bad_read and self.bad_read[0] <= address < self.bad_read[1]:
                raise OSError("injected read error")
            return await read(address, length)

        async def slow_write(address, data):
            if self.latency and self.rng.random() < self.latency:
                await ClockCycles(dut.clk, self.rng.randint(1, 6))
            if self.bad_write and self.bad_write[0] <= address < self.bad_write[1]:
                raise OSError("injected write error")
            await write(address, data)

        self.ram.read_if._read, self.ram.write_if._write = slow_read, slow_write
        self.checker = AxiChecker(dut).start()

    def set_timing(self, pause, latency):
        self.latency = latency
        chans = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                 self.ram.read_if.ar_channel, self.ram.read_if.r_channel, self.axil.write_if.aw_channel,
                 self.axil.write_if.w_channel, self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                 self.axil.read_if.r_channel]
        for ch in chans:
            ch.set_pause_generator(pauses(random.Random(self.rng.random()), pause) if pause else None)
            if not pause:
                ch.pause = False     # cocotbext-axi keeps the last value when the generator is removed

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    def poison(self):
        self.image = bytearray(self.rng.randbytes(MEM))
        self.ram.write(0, bytes(self.image))

    def put(self, addr, blob):
        self.ram.write(addr, blob)
        self.image[addr:addr + len(blob)] = blob

    def load_gemm(self, g):
        for addr, rows in g.host.items():
            kind = "int8"
            if isinstance(rows, tuple):
                kind, rows = rows
            self.put(DATA_BASE + addr * WB, rows_image(rows, kind, CFG.lanes).tobytes())

    def expect_c(self, g):
        exp = g.expected()
        for (c_addr, mm, n, r0, c0) in g.tiles:
            for r in range(mm):
                a = DATA_BASE + (g.hc + c_addr + r) * WB
                self.image[a:a + 4 * n] = exp[r0 + r, c0:c0 + n].astype("<i4").tobytes()

    async def run(self, program, timeout_cycles=50000):
        """Program into memory at CMD_BASE, registers, start, wait for the interrupt; returns STATUS fields,
        ERROR_INDEX and the counters."""
        blob = b"".join(int(w).to_bytes(16, "little") for w in program)
        self.put(CMD_BASE, blob)
        await self.regs.write("CMD_BASE_LO", CMD_BASE)
        await self.regs.write("CMD_BASE_HI", 0)
        await self.regs.write("CMD_COUNT", len(program))
        await self.regs.write("CTRL", start=1, irq_enable=1)
        if not int(self.dut.irq.value):
            await with_timeout(RisingEdge(self.dut.irq), 10 * timeout_cycles, "ns")
        st = await self.regs.fields("STATUS")
        assert st["done"] == 1 and st["busy"] == 0, st
        irq = await self.regs.fields("IRQ_STATUS")
        assert irq["done"] == 1 and irq["error"] == int(st["error"] != 0), (irq, st)
        await self.regs.write("IRQ_STATUS", done=1, error=1)
        await ClockCycles(self.dut.clk, 2)
        assert not int(self.dut.irq.value)
        st["index"] = await self.regs.read("ERROR_INDEX")
        st["cycles"] = await self.regs.read("BUSY_CYCLES")
        st["macs"] = await self.regs.read("MACS")
        return st

    def check_memory(self):
        got = self.ram.read(0, MEM)
        if got == bytes(self.image):
            return
        bad = [i for i in range(MEM) if got[i] != self.image[i]]
        raise AssertionError(f"{len(bad)} bytes differ, first at {[hex(b) for b in bad[:6]]}: got "
                             f"{[got[i] for i in bad[:6]]}, expected {[self.image[i] for i in bad[:6]]}")


def shapes():
    R, C = CFG.rows, CFG.cols
    out = [(Dataflow.WS, Precision.INT8, 2 * R + 3, C + 3, 2 * R + 1, 1),
           (Dataflow.OS, Precision.INT8, R + 2, 2 * C - 1, 3 * R + 5, 2)]
    if CFG.int4:
        out.append((Dataflow.OS, Precision.INT4, R - 1, C + 1, 4 * R + 3, 1))
        out.append((Dataflow.WS, Precision.INT4, R + 1, C, 3 * R - 1, 1))
    return out


@cocotb.test()
async def identity_registers(dut):
    tb = TB(dut, 1)
    await tb.reset()
    const = regs.build_constants(CFG)
    assert await tb.regs.fields("ID") == {"version": regs.VERSION, "magic": regs.MAGIC}
    assert await tb.regs.read("CONFIG_HASH") == regs.config_hash(CFG)
    assert (await tb.regs.fields("BUS"))["bus_bytes"] == const["bus_bytes"] == CFG.bus_bytes


@cocotb.test()
async def gemms_bit_exact_under_backpressure(dut):
    tb = TB(dut, 2)
    await tb.reset()
    gen = torch.Generator().manual_seed(5)
    for i, (df, prec, M, N, K, ks) in enumerate(shapes()):
        tb.set_timing(*[(0.0, 0.0), (0.3, 0.2), (0.5, 0.3), (0.2, 0.5)][i % 4])
        tb.poison()
        a, b = rand_operands(gen, M, N, K, prec)
        g = Gemm(CFG, M, N, K, df, prec, a, b, k_split=ks)
        tb.load_gemm(g)
        prog = byte_program(g.program)
        res = await tb.run(prog)
        tb.expect_c(g)
        assert res["error"] == Status.OK, res
        assert res["macs"] == M * N * K, res
        tb.check_memory()
        tb.checker.idle()
        dut._log.info("%s %s %dx%dx%d: %d cycles, %s", df.name, prec.name, M, N, K, res["cycles"],
                      {k: v for k, v in tb.checker.stats.items() if k.endswith(("_bursts", "_wait"))})


@cocotb.test()
async def bus_errors_then_soft_reset(dut):
    tb = TB(dut, 3)
    await tb.reset()
    tb.set_timing(0.3, 0.2)
    gen = torch.Generator().manual_seed(7)
    df, prec, M, N, K, ks = shapes()[0]
    a, b = rand_operands(gen, M, N, K, prec)
    g = Gemm(CFG, M, N, K, df, prec, a, b, k_split=ks)
    prog = byte_program(g.program)
    B = CFG.bus_bytes
    loads = [i for i, w in enumerate(prog) if decode(w)[0] == Op.LOAD]
    stores = [i for i, w in enumerate(prog) if decode(w)[0] == Op.STORE]
    tb.poison()
    tb.load_gemm(g)

    # SLVERR on the data of the second LOAD: bus error (read) at that command, done, interrupt
    victim = loads[1]
    addr = decode(prog[victim])[1]["host_addr"] // B * B
    tb.bad_read = (addr, addr + 1)
    res = await tb.run(prog)
    assert (res["error"], res["index"]) == (regs.BUS_ERROR_READ, victim), res
    tb.checker.idle()
    tb.bad_read = None

    # SLVERR on a write of the last STORE
    victim = stores[-1]
    addr = decode(prog[victim])[1]["host_addr"] // B * B
    tb.bad_write = (addr, addr + 1)
    res = await tb.run(prog)
    assert (res["error"], res["index"]) == (regs.BUS_ERROR_WRITE, victim), res
    tb.checker.idle()
    tb.bad_write = None

    # SLVERR on the command buffer itself: the command whose bytes failed
    victim = len(prog) // 2
    addr = (CMD_BASE + 16 * victim + 8) // B * B
    tb.bad_read = (addr, addr + 1)
    res = await tb.run(prog)
    fetch_victim = min(i for i in range(len(prog)) if CMD_BASE + 16 * i < addr + B and CMD_BASE + 16 * i + 16 > addr)
    assert (res["error"], res["index"]) == (regs.BUS_ERROR_READ, fetch_victim), res
    tb.checker.idle()
    tb.bad_read = None

    # a decode error keeps the core's status and index
    bad = list(prog)
    bad[3] = encode(Op.LOAD, rows=0)
    res = await tb.run(bad)
    assert (res["error"], res["index"]) == (Status.ZERO_SIZE, 3), res

    # soft reset, then the program is exact
    await tb.regs.write("CTRL", soft_reset=1)
    await ClockCycles(dut.clk, 5)
    st = await tb.regs.fields("STATUS")
    assert st == {"busy": 0, "done": 0, "error": 0}, st
    tb.poison()
    tb.load_gemm(g)
    res = await tb.run(prog)
    tb.expect_c(g)
    assert res["error"] == Status.OK, res
    tb.check_memory()
    tb.checker.idle()
