"""AXI4 master-side channel properties for formal proofs, a small stand-in master, and the proof of the
accelerator's own read master (:class:`ReadEngineProof`).

:func:`axi_master_channel` adds to a module the assertions that the AXI4 spec (ARM IHI 0022, A3.2.1 and A3.4.1)
puts on a master's side of one channel (AW, W, AR; with the handshake signals of any width):

* once VALID is high it stays high until the cycle in which READY is high (a master never withdraws a transfer);
* while VALID is high and READY low, the payload does not change;
* address channels (``addr``, ``length`` = AxLEN, ``size`` = AxSIZE, INCR bursts): a burst never crosses a 4 KB
  boundary, ``(addr mod 4096) + (AxLEN + 1) * 2**AxSIZE <= 4096``, and AxLEN <= 255.

The READY of the slave is the proof's free input (``AnySeq``), so a proof covers every slave. The reset (free or
assumed low, as the proof chooses) restarts the checks: a cycle after reset makes no claim about the one before.

:class:`BurstSplitter` is a small stand-in master on which the injected bugs are shown caught: it turns
a request (byte address, number of beats) into INCR read bursts of at most ``max_len`` beats that stop at every
4 KB boundary -- the job of a DMA engine's AR channel. ``bug`` injects the mistakes the properties must catch.
"""

from amaranth.hdl import Assert, Elaboratable, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["axi_master_channel", "BurstSplitter", "BurstSplitterProof", "ReadEngineProof"]


def axi_master_channel(m, name, valid, ready, payload, *, addr=None, length=None, size=None):
    """Add the assertions of the module docstring for one channel to ``m`` (``payload``: a Value or a list of
    Values that must stay stable; ``addr`` / ``length`` / ``size`` for an address channel)."""
    from amaranth.hdl import Cat

    payload = Cat(*payload) if isinstance(payload, (list, tuple)) else payload
    p_valid = Signal(name=f"{name}_past_valid")
    p_stall = Signal(name=f"{name}_past_stall")
    p_payload = Signal(len(payload), name=f"{name}_past_payload")
    p_reset = Signal(init=1, name=f"{name}_past_reset")
    m.d.sync += [p_valid.eq(valid), p_stall.eq(valid & ~ready), p_payload.eq(payload),
                 p_reset.eq(ResetSignal())]
    with m.If(~p_reset & p_stall):
        m.d.comb += Assert(valid)
        m.d.comb += Assert(payload == p_payload)
    if addr is not None:
        with m.If(valid):
            m.d.comb += Assert(length <= 255)
            m.d.comb += Assert(addr[0:12] + ((length + 1) << size) <= 4096)


class BurstSplitter(wiring.Component):
    """AR-channel stand-in master: ``req_valid`` / ``req_ready`` take (``req_addr`` bytes, ``req_beats`` >= 1 beats
    of 2**``size`` bytes, ``req_addr`` aligned to them); it issues INCR bursts (``ar_*``) of at most ``max_len``
    beats, each ending at the request's end or at the next 4 KB boundary, and is ready for the next request after
    the last one is accepted.

    bug -- None; "drop": VALID falls after one cycle without READY; "cross": bursts ignore the 4 KB boundary;
    "move": the address of a waiting burst moves on.
    """

    def __init__(self, addr_width=16, size=2, max_len=16, bug=None):
        self._aw, self._size, self._max, self._bug = addr_width, size, max_len, bug
        super().__init__({
            "req_valid": In(1), "req_ready": Out(1), "req_addr": In(addr_width), "req_beats": In(9),
            "ar_valid": Out(1), "ar_ready": In(1), "ar_addr": Out(addr_width), "ar_len": Out(8), "ar_size": Out(3),
        })

    def elaborate(self, platform):
        m = Module()
        size = self._size
        addr = Signal(self._aw)
        left = Signal(9)
        busy = Signal()
        m.d.comb += [self.req_ready.eq(~busy), self.ar_size.eq(size), self.ar_addr.eq(addr)]
        # beats to the next 4 KB boundary, to the end of the request, at most max_len
        to_4k = (4096 - addr[0:12]) >> size
        beats = Signal(13)
        cap = Mux(left < self._max, left, self._max)
        m.d.comb += beats.eq(cap if self._bug == "cross" else Mux(to_4k < cap, to_4k, cap))
        m.d.comb += [self.ar_valid.eq(busy), self.ar_len.eq(beats - 1)]
        # the invariant that makes the proof inductive: a pending burst has beats left and an aligned address
        m.d.comb += Assert(~busy | ((left != 0) & (addr[0:size] == 0)))
        waited = Signal()
        with m.If(busy):
            with m.If(self.ar_ready):
                m.d.sync += [addr.eq(addr + (beats << size)), left.eq(left - beats), waited.eq(0)]
                with m.If(left == beats):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += waited.eq(1)
                if self._bug == "drop":
                    with m.If(waited):
                        m.d.comb += self.ar_valid.eq(0)
                if self._bug == "move":
                    m.d.sync += addr.eq(addr + (1 << size))
        with m.Elif(self.req_valid & (self.req_beats != 0)):
            aligned = self.req_addr & ~((1 << size) - 1)
            m.d.sync += [addr.eq(aligned), left.eq(self.req_beats), busy.eq(1)]
        return m


class BurstSplitterProof(Elaboratable):
    """:class:`BurstSplitter` with free requests and a free READY (any slave), reset free: the AR channel obeys
    :func:`axi_master_channel`. BMC + k-induction."""

    def __init__(self, bug=None, addr_width=16):
        self.bug, self.addr_width = bug, addr_width

    def elaborate(self, platform):
        from .formal_proofs import any_seq

        m = Module()
        m.submodules.dut = dut = BurstSplitter(self.addr_width, bug=self.bug)
        for port, width in (("req_valid", 1), ("req_addr", self.addr_width), ("req_beats", 9), ("ar_ready", 1)):
            m.d.comb += getattr(dut, port).eq(any_seq(m, width, port))
        axi_master_channel(m, "ar", dut.ar_valid, dut.ar_ready, [dut.ar_addr, dut.ar_len, dut.ar_size],
                           addr=dut.ar_addr, length=dut.ar_len, size=dut.ar_size)
        return m


class ReadEngineProof(Elaboratable):
    """The accelerator's own AXI4 read master, :class:`cdmqta.hw.axi_dma.AxiReadEngine` (small: 32-bit bus,
    16-bit addresses, rows up to 8 bytes, 2 bursts in flight, 3-bit row counts), with free row requests, a free
    consumer and a free slave: its AR channel obeys :func:`axi_master_channel`. The slave is any slave that obeys
    the protocol itself: R beats only while a burst is outstanding (counted here from the handshakes); requests
    within the engine's contract (1 <= row_bytes <= max_row_bytes; any address, stride, row count). Bounded
    (BMC): the engine's own outstanding counter is not tied to this one in unreachable states, so induction is
    not attempted."""

    def __init__(self, max_reads=2, reach=False):
        self.max_reads, self.reach = max_reads, reach

    def elaborate(self, platform):
        from amaranth.hdl import Assume

        from cdmqta.hw.axi_dma import AxiReadEngine

        from .formal_proofs import any_seq

        m = Module()
        m.submodules.dut = dut = AxiReadEngine(data_width=32, addr_width=16, max_row_bytes=8,
                                               max_reads=self.max_reads, rows_width=3)
        bus = dut.bus
        m.d.comb += [dut.cmd.valid.eq(any_seq(m, 1, "cmd_valid")),
                     dut.cmd.payload.eq(any_seq(m, len(dut.cmd.payload.as_value()), "cmd_payload")),
                     dut.rows.ready.eq(any_seq(m, 1, "rows_ready")), dut.clear.eq(any_seq(m, 1, "clear")),
                     bus.arready.eq(any_seq(m, 1, "arready"))]
        for port in ("rvalid", "rlast", "rdata", "rresp", "rid"):
            if hasattr(bus, port):
                sig = getattr(bus, port)
                m.d.comb += sig.eq(any_seq(m, len(sig), port))
        # the engine's contract (hw/axi_dma.py): 1 <= row_bytes <= max_row_bytes
        rb = dut.cmd.payload.row_bytes
        m.d.comb += Assume(~dut.cmd.valid | ((rb >= 1) & (rb <= 8)))
        open_bursts = Signal(range(self.max_reads + 2), name="open_bursts")
        m.d.sync += open_bursts.eq(open_bursts + (bus.arvalid & bus.arready) - (bus.rvalid & bus.rready & bus.rlast))
        m.d.comb += Assume(~bus.rvalid | (open_bursts != 0))
        axi_master_channel(m, "ar", bus.arvalid, bus.arready,
                           [bus.araddr, bus.arlen, bus.arsize, bus.arburst, bus.arid],
                           addr=bus.araddr, length=bus.arlen, size=bus.arsize)
        if self.reach:
            # not vacuous: claim that no burst ever ends exactly at a 4 KB boundary (a row split there); the
            # solver must refute it with a trace
            m.d.comb += Assert(~(bus.arvalid & (bus.araddr[0:12] + ((bus.arlen + 1) << bus.arsize) == 4096)))
        return m
