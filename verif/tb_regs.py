"""cocotb testbench of :class:`cdmqta.hw.regs.RegsHarness` (the AXI4-Lite register file) through cocotbext-axi's
``AxiLiteMaster`` with random pauses on its five channels, driven through the generated driver view
(:class:`cdmqta.hw.regs.AsyncRegisters`). Run by verif/test_regs.py; CDMQTA_CONFIG is the configuration."""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from cdmqta.hw import regs
from cdmqta.hw.config import QTAConfig

CFG = QTAConfig.from_json(os.environ.get("CDMQTA_CONFIG", "{}"))


def pauses(rng, p):
    while True:
        yield rng.random() < p


class TB:
    def __init__(self, dut, seed=1, pause=0.4):
        self.dut, self.rng = dut, random.Random(seed)
        Clock(dut.clk, 10, unit="ns").start()
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for ch in (self.axil.write_if.aw_channel, self.axil.write_if.w_channel, self.axil.write_if.b_channel,
                   self.axil.read_if.ar_channel, self.axil.read_if.r_channel):
            ch.set_pause_generator(pauses(random.Random(self.rng.random()), pause))
        self.regs = regs.AsyncRegisters(self.axil.read_dword, self.axil.write_dword)

    async def reset(self):
        d = self.dut
        for name in ("status_busy", "status_done", "status_error", "error_index_index", "irq_status_done_set",
                     "irq_status_error_set", "busy_cycles_value", "macs_value", "stall_cycles_value",
                     "compute_cycles_value"):
            getattr(d, name).value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await RisingEdge(d.clk)


@cocotb.test()
async def constants_and_config(dut):
    tb = TB(dut)
    await tb.reset()
    const = regs.build_constants(CFG)
    for r in regs.REGISTERS:
        fields = [f for f in r.fields if f.const]
        if fields:
            got = await tb.regs.fields(r.name)
            assert got == {f.name: const[f.const] for f in fields}, (r.name, got)
    assert (await tb.regs.read("CONFIG_HASH")) == regs.config_hash(CFG)
    assert (await tb.axil.read_dword(0xFFC)) == 0     # unmapped


@cocotb.test()
async def rw_wo_w1c_and_strobes(dut):
    tb = TB(dut, seed=2)
    await tb.reset()
    d, rng = dut, tb.rng
    for _ in range(5):
        vals = {n: rng.getrandbits(32) for n in ("CMD_BASE_LO", "CMD_BASE_HI", "CMD_COUNT")}
        for n, v in vals.items():
            await tb.regs.write(n, v)
        for n, v in vals.items():
            assert await tb.regs.read(n) == v
        assert int(d.cmd_base_lo_addr.value) == vals["CMD_BASE_LO"]
        assert int(d.cmd_count_count.value) == vals["CMD_COUNT"]
    # byte strobes: write byte 1 of CMD_COUNT only
    before = await tb.regs.read("CMD_COUNT")
    await tb.axil.write(0x029, b"\xa5")
    assert await tb.regs.read("CMD_COUNT") == (before & ~0xFF00) | 0xA500

    # WO pulses: one cycle each, reads as 0; RW irq_enable kept
    pulses = {"ctrl_start": 0, "ctrl_soft_reset": 0}

    async def count():
        while True:
            await RisingEdge(d.clk)
            for k in pulses:
                pulses[k] += int(getattr(d, k).value)

    counter = cocotb.start_soon(count())
    await tb.regs.write("CTRL", start=1, irq_enable=1)
    await tb.regs.write("CTRL", soft_reset=1, irq_enable=1)
    await ClockCycles(d.clk, 4)
    counter.cancel()
    assert pulses == {"ctrl_start": 1, "ctrl_soft_reset": 1}, pulses
    assert await tb.regs.fields("CTRL") == {"start": 0, "soft_reset": 0, "irq_enable": 1}
    assert int(d.ctrl_irq_enable.value) == 1

    # RO status from the hardware side
    d.status_busy.value, d.status_done.value, d.status_error.value = 1, 0, regs.BUS_ERROR_WRITE
    d.error_index_index.value = 0xDEAD
    await RisingEdge(d.clk)
    assert await tb.regs.fields("STATUS") == {"busy": 1, "done": 0, "error": regs.BUS_ERROR_WRITE}
    assert await tb.regs.read("ERROR_INDEX") == 0xDEAD

    # W1C: set by a hardware pulse, cleared by writing 1, a 0 leaves it
    d.irq_status_done_set.value = 1
    await RisingEdge(d.clk)
    d.irq_status_done_set.value = 0
    d.irq_status_error_set.value = 1
    await RisingEdge(d.clk)
    d.irq_status_error_set.value = 0
    assert await tb.regs.fields("IRQ_STATUS") == {"done": 1, "error": 1}
    await tb.regs.write("IRQ_STATUS", done=1)
    assert await tb.regs.fields("IRQ_STATUS") == {"done": 0, "error": 1}
    assert int(d.irq_status_error.value) == 1
    await tb.regs.write("IRQ_STATUS", error=1)
    assert await tb.regs.fields("IRQ_STATUS") == {"done": 0, "error": 0}


@cocotb.test()
async def counters_latch_hi_on_lo_read(dut):
    tb = TB(dut, seed=3)
    await tb.reset()
    d = dut
    x = 0x1234_5678_FFFF_FFF0
    d.busy_cycles_value.value = x
    await RisingEdge(d.clk)
    lo = await tb.axil.read_dword(regs.reg("BUSY_CYCLES").offset)
    d.busy_cycles_value.value = x + 0x20          # the low word wraps, the high word moves on
    await ClockCycles(d.clk, 3)
    hi = await tb.axil.read_dword(regs.reg("BUSY_CYCLES").offset + 4)
    assert (hi << 32 | lo) == x, hex(hi << 32 | lo)
    for name in ("MACS", "STALL_CYCLES", "COMPUTE_CYCLES"):
        v = tb.rng.getrandbits(64)
        getattr(d, f"{name.lower()}_value").value = v
        await RisingEdge(d.clk)
        assert await tb.regs.read(name) == v, name
