"""cocotb testbench of :class:`cdmqta.hw.axi_dma.AxiDmaHarness` (read engine -> write engine, command fetcher).

cocotbext-axi's ``AxiRam`` is the memory, with random pauses on all five channels and a random extra latency on
reads and writes; :class:`axi_checker.AxiChecker` checks the bus protocol on every cycle. Every test fills the
whole RAM with random poison, runs strided byte copies (random byte offsets, row lengths such as 77 bytes,
strides, 4 KB crossings) and compares the WHOLE memory with the expected image, so a byte written outside a
destination row fails. Run by verif/test_axi_dma.py; parameters: DATA_WIDTH, MAX_ROW_BYTES, SEED.
"""

import os
import random

import cocotb
from axi_checker import AxiChecker
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

DATA_WIDTH = int(os.environ.get("DATA_WIDTH", "64"))
MAX_ROW_BYTES = int(os.environ.get("MAX_ROW_BYTES", "128"))
SEED = int(os.environ.get("SEED", "1"))
MEM = 1 << 16


def pauses(rng, p):
    while True:
        yield rng.random() < p


class TB:
    def __init__(self, dut, seed, pause=0.3, latency=0.2):
        self.dut = dut
        self.rng = random.Random(seed)
        Clock(dut.clk, 10, unit="ns").start()
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEM)
        self.bad_read = self.bad_write = None      # (lo, hi) byte ranges answered with SLVERR
        self._wrap()
        self.set_timing(pause, latency)
        self.checker = AxiChecker(dut).start()

    def set_timing(self, pause, latency):
        """Random pauses (probability per cycle) on all five channels and an extra latency on some accesses."""
        ram = self.ram
        self.latency = latency
        for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                   ram.read_if.ar_channel, ram.read_if.r_channel):
            # (cocotbext-axi leaves ``pause`` at its last value when the generator is removed: clear it too)
            ch.set_pause_generator(pauses(random.Random(self.rng.random()), pause) if pause else None)
            ch.pause = False if not pause else ch.pause

    def _wrap(self):
        rng, clk, ram = self.rng, self.dut.clk, self.ram
        read, write = ram.read_if._read, ram.write_if._write

        async def slow_read(address, length):
            if self.latency and rng.random() < self.latency:
                await ClockCycles(clk, rng.randint(1, 12))
            if self.bad_read and self.bad_read[0] <= address < self.bad_read[1]:
                raise OSError("injected read error")
            return await read(address, length)

        async def slow_write(address, data):
            if self.latency and rng.random() < self.latency:
                await ClockCycles(clk, rng.randint(1, 6))
            if self.bad_write and self.bad_write[0] <= address < self.bad_write[1]:
                raise OSError("injected write error")
            await write(address, data)

        ram.read_if._read, ram.write_if._write = slow_read, slow_write

    async def reset(self):
        d = self.dut
        for n in ("rd_valid", "wr_valid", "hold", "fetch_start", "fetch_base", "fetch_count", "cmd_ready", "clear"):
            getattr(d, n).value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await RisingEdge(d.clk)

    def poison(self):
        self.image = bytearray(self.rng.randbytes(MEM))
        self.ram.write(0, bytes(self.image))

    async def request(self, pre, addr, row_bytes, rows, stride):
        d = self.dut
        for name, v in (("addr", addr), ("row_bytes", row_bytes), ("rows", rows), ("stride", stride % (1 << 32))):
            getattr(d, f"{pre}_{name}").value = v
        getattr(d, f"{pre}_valid").value = 1
        for _ in range(20000):
            await ReadOnly()
            ok = int(getattr(d, f"{pre}_ready").value)
            await RisingEdge(d.clk)
            if ok:
                break
        else:
            raise AssertionError(f"the {pre} engine did not take its request (hang)")
        getattr(d, f"{pre}_valid").value = 0

    async def hold_randomly(self, p, stop):
        while not stop[0]:
            self.dut.hold.value = int(self.rng.random() < p)
            await RisingEdge(self.dut.clk)
        self.dut.hold.value = 0

    async def wait_idle(self, limit=20000):
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if not int(self.dut.busy.value):
                await RisingEdge(self.dut.clk)
                return
        raise AssertionError("the DMA did not finish (hang)")

    def check_memory(self):
        got = self.ram.read(0, MEM)
        if got == bytes(self.image):
            return
        bad = [i for i in range(MEM) if got[i] != self.image[i]]
        assert not bad, f"{len(bad)} bytes differ, first at {bad[:8]}: got {[got[i] for i in bad[:8]]}, " \
                        f"expected {[self.image[i] for i in bad[:8]]}"


class Alloc:
    """Disjoint byte regions of the RAM for the copies (some placed to straddle a 4 KB boundary)."""

    def __init__(self, rng):
        self.rng, self.next = rng, 64

    def region(self, size):
        if self.rng.random() < 0.3:       # start just before a 4 KB boundary
            page = (self.next + 4095) // 4096 * 4096
            start = page - self.rng.randint(1, 3 * DATA_WIDTH // 8)
            if start < self.next:
                start = self.next
        else:
            start = self.next + self.rng.randint(0, 70)
        self.next = start + size + self.rng.randint(1, 40)
        assert self.next < MEM, "test regions exceed the RAM"
        return start


def random_copy(rng, alloc):
    row_bytes = rng.choice([1, 3, 8, 16, 77, MAX_ROW_BYTES, rng.randint(1, MAX_ROW_BYTES)])
    rows = rng.randint(1, 4)
    spans = []
    for _ in range(2):
        stride = row_bytes + rng.choice([0, 0, rng.randint(1, 50), rng.randint(1, 200)])
        base = alloc.region(stride * (rows - 1) + row_bytes)
        spans.append((base, stride))
    return row_bytes, rows, spans[0], spans[1]


def expect_copy(image, row_bytes, rows, src, dst):
    for r in range(rows):
        s, t = src[0] + r * src[1], dst[0] + r * dst[1]
        image[t:t + row_bytes] = image[s:s + row_bytes]


async def run_copies(tb, copies, hold=0.0):
    stop = [False]
    holder = cocotb.start_soon(tb.hold_randomly(hold, stop)) if hold else None

    async def reads():
        for row_bytes, rows, src, _ in copies:
            await tb.request("rd", src[0], row_bytes, rows, src[1])

    async def writes():
        for row_bytes, rows, _, dst in copies:
            await tb.request("wr", dst[0], row_bytes, rows, dst[1])

    r, w = cocotb.start_soon(reads()), cocotb.start_soon(writes())
    await r
    await w
    await tb.wait_idle()
    stop[0] = True
    if holder:
        await holder


@cocotb.test()
async def copies_under_backpressure(dut):
    """Random strided copies, one batch per pause setting; whole memory compared after each batch."""
    tb = TB(dut, SEED)
    await tb.reset()
    for batch, (pause, latency, hold) in enumerate([(0.0, 0.0, 0.0), (0.3, 0.2, 0.3), (0.6, 0.4, 0.1)]):
        tb.set_timing(pause, latency)
        tb.poison()
        alloc = Alloc(tb.rng)
        copies = [random_copy(tb.rng, alloc) for _ in range(8)]
        for c in copies:
            expect_copy(tb.image, *c)
        moved0 = int(dut.rows_moved.value)
        await run_copies(tb, copies, hold=hold)
        tb.checker.idle()
        tb.check_memory()
        assert int(dut.rows_moved.value) - moved0 == sum(c[1] for c in copies)
        assert not int(dut.rd_error.value) and not int(dut.wr_error.value)
        st = tb.checker.stats
        dut._log.info("batch %d: %d AR / %d R beats, %d AW / %d W beats, max burst %d/%d, waits %s", batch,
                      st["ar_bursts"], st["r_beats"], st["aw_bursts"], st["w_beats"], st["ar_max_len"],
                      st["aw_max_len"], {k: v for k, v in st.items() if k.endswith("_wait")})


@cocotb.test()
async def long_rows_split_bursts(dut):
    """A row that needs more than one burst (4 KB boundary inside the row) and many rows at stride 4096 - 1."""
    tb = TB(dut, SEED + 7, pause=0.2, latency=0.1)
    await tb.reset()
    tb.poison()
    B = DATA_WIDTH // 8
    copies = [(MAX_ROW_BYTES, 3, (4096 - MAX_ROW_BYTES // 2 + 3, 4095), (5 * 4096 - 5, 4096 + 1)),
              (MAX_ROW_BYTES, 2, (12 * 4096 - B - 1, MAX_ROW_BYTES), (13 * 4096 + 1, -MAX_ROW_BYTES - 7))]
    for c in copies:
        expect_copy(tb.image, *c)
    await run_copies(tb, copies, hold=0.2)
    tb.checker.idle()
    tb.check_memory()
    assert tb.checker.stats["ar_bursts"] > sum(c[1] for c in copies)    # some rows were split at 4 KB


@cocotb.test()
async def fetch_commands_while_copying(dut):
    """The command fetcher shares AR / R with the read engine (by ID): commands arrive intact and in order."""
    tb = TB(dut, SEED + 11, pause=0.3, latency=0.2)
    await tb.reset()
    tb.poison()
    alloc = Alloc(tb.rng)
    n = 23
    base = alloc.region(16 * n + 9) + tb.rng.choice([0, 0, 4, 9])
    words = [int.from_bytes(tb.rng.randbytes(16), "little") for _ in range(n)]
    blob = b"".join(w.to_bytes(16, "little") for w in words)
    tb.ram.write(base, blob)
    tb.image[base:base + len(blob)] = blob
    alloc.next = base + len(blob) + 16
    copies = [random_copy(tb.rng, alloc) for _ in range(4)]
    for c in copies:
        expect_copy(tb.image, *c)
    d = tb.dut
    d.fetch_base.value, d.fetch_count.value, d.fetch_start.value = base, n, 1
    await RisingEdge(d.clk)
    d.fetch_start.value = 0
    got = []

    async def consume():
        while len(got) < n:
            d.cmd_ready.value = int(tb.rng.random() < 0.6)
            await ReadOnly()
            if int(d.cmd_valid.value) and int(d.cmd_ready.value):
                got.append(int(d.cmd_data.value))
            await RisingEdge(d.clk)
        d.cmd_ready.value = 0

    c = cocotb.start_soon(consume())
    await run_copies(tb, copies)
    await c
    await tb.wait_idle()
    assert got == words, f"fetched {len(got)} commands, first difference at " \
                         f"{next(i for i, (a, b) in enumerate(zip(got, words)) if a != b)}"
    tb.checker.idle()
    tb.check_memory()


@cocotb.test()
async def bus_errors_do_not_hang(dut):
    """SLVERR on some read beats and on some write bursts: sticky error flags, the engines drain and go idle, and
    after ``clear`` a clean copy is exact again."""
    tb = TB(dut, SEED + 13, pause=0.3, latency=0.2)
    await tb.reset()
    tb.poison()
    alloc = Alloc(tb.rng)
    copies = [random_copy(tb.rng, alloc) for _ in range(3)]
    src = copies[1][2][0]
    tb.bad_read = (src - src % 4096, src + 64)
    await run_copies(tb, copies)
    assert int(tb.dut.rd_error.value) == 1 and int(tb.dut.wr_error.value) == 0
    tb.checker.idle()
    tb.bad_read = None
    dst = copies[0][3][0]
    tb.bad_write = (dst, dst + 1)
    await run_copies(tb, copies[:1])
    assert int(tb.dut.wr_error.value) == 1
    tb.checker.idle()
    tb.bad_write = None
    tb.dut.clear.value = 1
    await RisingEdge(tb.dut.clk)
    tb.dut.clear.value = 0
    await RisingEdge(tb.dut.clk)
    assert not int(tb.dut.rd_error.value) and not int(tb.dut.wr_error.value)
    tb.poison()
    copies = [random_copy(tb.rng, alloc) for _ in range(3)]
    for c in copies:
        expect_copy(tb.image, *c)
    await run_copies(tb, copies)
    tb.checker.idle()
    tb.check_memory()
    assert not int(tb.dut.rd_error.value) and not int(tb.dut.wr_error.value)
