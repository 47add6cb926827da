"""DMA engines on an AXI4 master: byte-addressed strided rows <-> bus bursts.

A transfer is a *row request* (:func:`RowCmd`): ``rows`` rows of ``row_bytes`` bytes each (1 .. ``max_row_bytes``),
row r at byte address ``addr + r * stride`` (any byte offset; ``stride`` wraps modulo 2**addr_width, so a
"negative" stride works). On the engines' side a row is ``8 * max_row_bytes`` bits, byte i of the row in bits
[8i+7:8i]; bytes >= ``row_bytes`` are zero on reads and ignored on writes.

Bursts (both engines): each row is covered by the bus-aligned beats that contain its bytes, split into INCR bursts
of at most 256 beats that never cross a 4 KB boundary; AxSIZE is the full bus width, every burst starts at a
bus-aligned address. Rows are not merged into longer bursts.

:class:`AxiReadEngine` -- AR / R. Keeps up to ``max_reads`` bursts in flight (one ID, so the slave returns them in
order), realigns each row from its byte offset and delivers rows in order on the ``rows`` stream (valid / ready;
``rready`` is held low while a finished row waits, so back-pressure reaches the bus instead of a buffer). A row
needs one set-up cycle, then one AR per burst; the data path takes one beat per cycle.

:class:`AxiWriteEngine` -- AW / W / B. Takes one row per ``rows`` transfer, writes bytes [addr, addr + row_bytes)
of each row with WSTRB (no other byte of a beat is written). The W data of a burst is offered without waiting for
AWREADY (AXI dependency rules). ``busy`` stays high until every B response of every burst has returned.

Errors: an R or B response with RESP = SLVERR or DECERR sets ``error`` (sticky, with the first ``error_resp``) and
the engine carries on: the rest of the bursts are issued and drained (read rows are still delivered, their
contents undefined), so nothing hangs. ``clear`` resets the sticky error.

:class:`AxiReadArbiter` shares one AR / R pair between read engines with distinct IDs (AR granted lowest index
first and held until accepted; R routed by RID). :class:`CommandFetcher` reads ``count`` 128-bit commands from
``base`` into a command stream (a read engine of 16-byte rows). :class:`AxiDmaHarness` is the test top
(``verif/test_axi_dma.py``).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from .axi import (
    CACHE_DEFAULT,
    ID_WIDTH,
    Burst,
    amba_members,
    axi4_read_signature,
    axi4_signature,
    axi4_write_signature,
    connect_amba,
)

__all__ = ["RowCmd", "AxiReadEngine", "AxiWriteEngine", "AxiReadArbiter", "CommandFetcher", "AxiDmaHarness",
           "max_beats"]

BURST_MAX = 256
PAGE = 4096


def RowCmd(addr_width, max_row_bytes, rows_width=16):
    """Payload of a row request (see the module docstring)."""
    return data.StructLayout({"addr": addr_width, "row_bytes": max_row_bytes.bit_length(), "rows": rows_width,
                              "stride": addr_width})


def max_beats(bus_bytes, max_row_bytes):
    """Bus beats that a row of ``max_row_bytes`` bytes at the worst byte offset touches."""
    return -(-(bus_bytes - 1 + max_row_bytes) // bus_bytes)


def _log2(x):
    return x.bit_length() - 1


def _check(data_width, max_row_bytes):
    if max_row_bytes < 1:
        raise ValueError(f"max_row_bytes must be at least 1, not {max_row_bytes!r}")
    if data_width < 32:
        raise ValueError(f"AXI4 data width must be at least 32 bits, not {data_width!r}")


class _RowPlanner:
    """Shared row-walking / burst-splitting state of both engines (built inside the engine's ``elaborate``)."""

    def __init__(self, m, cmd, addr_width, bus_bytes, max_row_bytes, rows_width):
        self.lb = lb = _log2(bus_bytes)
        nb = max_beats(bus_bytes, max_row_bytes)
        self.active = Signal()               # rows left to plan
        self.setup = Signal()                # the current row's first burst is not computed yet
        self.row_addr = Signal(addr_width)
        self.rows_left = Signal(rows_width)
        self.row_bytes = Signal(max_row_bytes.bit_length())
        self.stride = Signal(addr_width)
        self.cur = Signal(addr_width)        # bus-aligned address of the next burst
        self.rem = Signal(range(nb + 1))     # beats of the current row not yet in a burst
        self.off = self.row_addr[:lb]
        self.row_beats = ((self.off + self.row_bytes + (bus_bytes - 1)) >> lb)[:len(self.rem)]
        to_page = ((PAGE - self.cur[:12]) >> lb)[:13 - lb + 1]
        capped = Mux(self.rem < BURST_MAX, self.rem, BURST_MAX)
        self.blen = Signal(9)                # beats of the next burst
        m.d.comb += self.blen.eq(Mux(capped < to_page, capped, to_page))
        self.row_last = Signal()             # the next burst ends the row
        m.d.comb += self.row_last.eq(self.rem == self.blen)
        self.cmd = cmd

    def accept(self, m):
        p = self.cmd.payload
        m.d.sync += [self.row_addr.eq(p.addr), self.rows_left.eq(p.rows), self.row_bytes.eq(p.row_bytes),
                     self.stride.eq(p.stride), self.active.eq(p.rows != 0), self.setup.eq(1)]

    def start_row(self, m):
        m.d.sync += [self.cur.eq(Cat(Const(0, self.lb), self.row_addr[self.lb:])), self.rem.eq(self.row_beats),
                     self.setup.eq(0)]

    def burst_taken(self, m):
        m.d.sync += [self.cur.eq(self.cur + (self.blen << self.lb)), self.rem.eq(self.rem - self.blen)]
        with m.If(self.row_last):
            m.d.sync += [self.rows_left.eq(self.rows_left - 1), self.row_addr.eq(self.row_addr + self.stride)]
            with m.If(self.rows_left == 1):
                m.d.sync += self.active.eq(0)
            with m.Else():
                m.d.sync += self.setup.eq(1)


def _drive_addr(m, bus, ch, addr, blen, lb, axi_id):
    m.d.comb += [getattr(bus, f"{ch}addr").eq(addr), getattr(bus, f"{ch}len").eq(blen - 1),
                 getattr(bus, f"{ch}size").eq(lb), getattr(bus, f"{ch}burst").eq(Burst.INCR),
                 getattr(bus, f"{ch}id").eq(axi_id), getattr(bus, f"{ch}cache").eq(CACHE_DEFAULT)]


def _byte_mask(n, count):
    """``n``-bit mask whose bit i is set for i < ``count`` (a Value)."""
    return Cat(*[count > i for i in range(n)])


class AxiReadEngine(wiring.Component):
    """Row requests -> AR bursts -> realigned rows; see the module docstring.

    Parameters: ``data_width`` / ``addr_width`` of the bus, ``max_row_bytes``, ``max_reads`` (bursts in flight),
    ``axi_id`` (ARID of every burst), ``rows_width`` (bits of the request's row count).

    ``buffer_rows`` > 0: the rows pass through a FIFO of that many rows and a row's bursts are issued only while
    it has a place reserved, so RREADY never waits for the consumer. A master that shares the read channels
    with another one whose data it may wait for needs this (the command fetcher: the controller may wait for a
    LOAD whose data is queued behind a fetch beat at an in-order slave).

    Members: ``cmd`` In(stream of :func:`RowCmd`); ``rows`` Out(stream of ``8 * max_row_bytes`` bits); ``bus``
    Out(:func:`~cdmqta.hw.axi.axi4_read_signature`); ``busy``, ``error``, ``error_resp`` Out; ``clear`` In.
    """

    def __init__(self, *, data_width, addr_width, max_row_bytes, max_reads=4, axi_id=0, id_width=ID_WIDTH,
                 rows_width=16, buffer_rows=0):
        _check(data_width, max_row_bytes)
        self._dw, self._aw, self._mrb, self._nr, self._id, self._rw = (data_width, addr_width, max_row_bytes,
                                                                       max_reads, axi_id, rows_width)
        self._buf = buffer_rows
        super().__init__({
            "cmd": In(stream.Signature(RowCmd(addr_width, max_row_bytes, rows_width))),
            "rows": Out(stream.Signature(8 * max_row_bytes)), "rows_error": Out(1),
            "bus": Out(axi4_read_signature(data_width, addr_width, id_width)),
            "busy": Out(1), "error": Out(1), "error_resp": Out(2), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        B = self._dw // 8
        mrb = self._mrb
        nb = max_beats(B, mrb)
        bus = self.bus
        pl = _RowPlanner(m, self.cmd, self._aw, B, mrb, self._rw)

        # Row descriptors, in burst order: byte offset in the first beat, row bytes, beats.
        Desc = data.StructLayout({"off": pl.lb, "bytes": len(pl.row_bytes), "beats": len(pl.rem)})
        desc = m.submodules.desc = fifo.SyncFIFOBuffered(width=Desc.size, depth=max(2, self._nr + 1))
        outstanding = Signal(range(self._nr + 1))

        # The row stream inside (o_*): straight out, or through a buffer of ``buffer_rows`` rows with credits.
        o = stream.Signature(8 * mrb).create()
        o_err = Signal()
        credit = True
        if self._buf:
            ob = m.submodules.out_buf = fifo.SyncFIFOBuffered(width=8 * mrb + 1, depth=self._buf)
            reserved = Signal(range(self._buf + 1))      # rows planned and not yet taken from the buffer
            credit = reserved < self._buf
            m.d.comb += [ob.w_en.eq(o.valid), ob.w_data.eq(Cat(o.payload, o_err)), o.ready.eq(ob.w_rdy),
                         self.rows.valid.eq(ob.r_rdy), self.rows.payload.eq(ob.r_data[:8 * mrb]),
                         self.rows_error.eq(ob.r_data[8 * mrb]), ob.r_en.eq(self.rows.ready)]
            m.d.sync += reserved.eq(reserved + desc.w_en - (self.rows.valid & self.rows.ready))
        else:
            m.d.comb += [self.rows.valid.eq(o.valid), self.rows.payload.eq(o.payload), self.rows_error.eq(o_err),
                         o.ready.eq(self.rows.ready)]

        m.d.comb += self.cmd.ready.eq(~pl.active)
        with m.If(self.cmd.valid & ~pl.active):
            pl.accept(m)
        with m.If(pl.active & pl.setup & desc.w_rdy & credit):
            m.d.comb += [desc.w_en.eq(1),
                         desc.w_data.eq(Cat(pl.off, pl.row_bytes, pl.row_beats))]
            pl.start_row(m)

        # AR: outstanding only grows through this handshake, so ARVALID stays up until ARREADY.
        m.d.comb += bus.arvalid.eq(pl.active & ~pl.setup & (outstanding < self._nr))
        _drive_addr(m, bus, "ar", pl.cur, pl.blen, pl.lb, self._id)
        ar_fire = bus.arvalid & bus.arready
        with m.If(ar_fire):
            pl.burst_taken(m)

        # R: beats of the head row collect in buf; the last one emits the realigned row.
        d = Desc(desc.r_data)
        k = Signal(range(nb))
        buf = Signal(nb * self._dw)
        cat = Signal(nb * self._dw)
        m.d.comb += [cat.eq(buf), cat.word_select(k, self._dw).eq(bus.rdata)]
        m.d.comb += bus.rready.eq(desc.r_rdy & (~o.valid | o.ready))
        r_fire = bus.rvalid & bus.rready
        last_beat = k + 1 == d.beats
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        row_err = Signal()           # an error response on an earlier beat of the head row
        with m.If(r_fire):
            m.d.sync += [buf.eq(cat), row_err.eq(row_err | bus.rresp[1])]
            with m.If(last_beat):
                m.d.sync += [k.eq(0), o.valid.eq(1), row_err.eq(0),
                             o_err.eq(row_err | bus.rresp[1]),
                             o.payload.eq((cat >> (d.off << 3))[:8 * mrb] & _expand(mrb, d.bytes))]
                m.d.comb += desc.r_en.eq(1)
            with m.Else():
                m.d.sync += k.eq(k + 1)
        ends = r_fire & bus.rlast
        m.d.sync += outstanding.eq(outstanding + ar_fire - ends)

        _sticky_error(m, self, r_fire & bus.rresp[1], bus.rresp)
        m.d.comb += self.busy.eq(pl.active | (outstanding != 0) | (desc.level != 0) | o.valid | self.rows.valid)
        return m


def _expand(nbytes, count):
    """``8 * nbytes``-bit mask of the bytes i < ``count``."""
    return Cat(*[(count > i).replicate(8) for i in range(nbytes)])


def _sticky_error(m, unit, event, resp):
    with m.If(event & ~unit.error):
        m.d.sync += [unit.error.eq(1), unit.error_resp.eq(resp)]
    with m.If(unit.clear):
        m.d.sync += [unit.error.eq(0), unit.error_resp.eq(0)]


class AxiWriteEngine(wiring.Component):
    """Row requests + rows -> AW / W bursts with WSTRB; see the module docstring.

    Members: ``cmd`` In(stream of :func:`RowCmd`); ``rows`` In(stream of ``8 * max_row_bytes`` bits, one per row
    of the request, in order); ``bus`` Out(:func:`~cdmqta.hw.axi.axi4_write_signature`); ``busy`` (until the last
    B response), ``error``, ``error_resp`` Out; ``clear`` In. The next request is accepted once every row of the
    previous one has been sent (its B responses may still be outstanding).
    """

    def __init__(self, *, data_width, addr_width, max_row_bytes, axi_id=0, id_width=ID_WIDTH, rows_width=16,
                 max_writes=16):
        _check(data_width, max_row_bytes)
        self._dw, self._aw, self._mrb, self._id, self._rw = data_width, addr_width, max_row_bytes, axi_id, rows_width
        self._nw = max_writes
        super().__init__({
            "cmd": In(stream.Signature(RowCmd(addr_width, max_row_bytes, rows_width))),
            "rows": In(stream.Signature(8 * max_row_bytes)),
            "bus": Out(axi4_write_signature(data_width, addr_width, id_width)),
            "busy": Out(1), "error": Out(1), "error_resp": Out(2), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        B = self._dw // 8
        mrb = self._mrb
        nb = max_beats(B, mrb)
        bus = self.bus
        pl = _RowPlanner(m, self.cmd, self._aw, B, mrb, self._rw)

        # W side state (rows of the accepted request, in order).
        w_rows_left = Signal(self._rw)
        w_row_addr = Signal(self._aw)
        w_row_bytes = Signal(len(pl.row_bytes))
        w_stride = Signal(self._aw)

        m.d.comb += self.cmd.ready.eq(~pl.active & (w_rows_left == 0))
        with m.If(self.cmd.valid & self.cmd.ready):
            pl.accept(m)
            p = self.cmd.payload
            m.d.sync += [w_rows_left.eq(p.rows), w_row_addr.eq(p.addr), w_row_bytes.eq(p.row_bytes),
                         w_stride.eq(p.stride)]

        # Planner: each burst's length goes to the W side before AWVALID rises (W never waits for AWREADY).
        WEntry = data.StructLayout({"len": 9, "row_last": 1})
        wq = m.submodules.wq = fifo.SyncFIFOBuffered(width=WEntry.size, depth=4)
        pushed = Signal()
        bpend = Signal(range(self._nw + 1))
        with m.If(pl.active & pl.setup):
            pl.start_row(m)
        can_push = pl.active & ~pl.setup & ~pushed & wq.w_rdy & (bpend < self._nw)
        m.d.comb += [wq.w_en.eq(can_push), wq.w_data.eq(Cat(pl.blen, pl.row_last))]
        with m.If(can_push):
            m.d.sync += pushed.eq(1)
        m.d.comb += bus.awvalid.eq(pushed)
        _drive_addr(m, bus, "aw", pl.cur, pl.blen, pl.lb, self._id)
        aw_fire = bus.awvalid & bus.awready
        with m.If(aw_fire):
            m.d.sync += pushed.eq(0)
            pl.burst_taken(m)

        # W side: the row shifted to its byte offset, beats out of it, WLAST at each burst's end.
        loaded = Signal()
        wbuf = Signal(nb * self._dw)
        smask = Signal(nb * B)
        k = Signal(range(nb))
        j = Signal(9)
        head = WEntry(wq.r_data)
        off = w_row_addr[:pl.lb]
        m.d.comb += self.rows.ready.eq(~loaded & (w_rows_left != 0))
        with m.If(self.rows.valid & self.rows.ready):
            m.d.sync += [wbuf.eq(self.rows.payload << (off << 3)), smask.eq(_byte_mask(mrb, w_row_bytes) << off),
                         loaded.eq(1), k.eq(0), j.eq(0)]
        m.d.comb += [bus.wvalid.eq(loaded & wq.r_rdy), bus.wdata.eq(wbuf.word_select(k, self._dw)),
                     bus.wstrb.eq(smask.word_select(k, B)), bus.wlast.eq(j + 1 == head.len)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [k.eq(k + 1), j.eq(j + 1)]
            with m.If(bus.wlast):
                m.d.comb += wq.r_en.eq(1)
                m.d.sync += j.eq(0)
                with m.If(head.row_last):
                    m.d.sync += [loaded.eq(0), w_rows_left.eq(w_rows_left - 1),
                                 w_row_addr.eq(w_row_addr + w_stride)]

        # B: every response is taken; busy until the last one.
        m.d.comb += bus.bready.eq(1)
        b_fire = bus.bvalid & bus.bready
        m.d.sync += bpend.eq(bpend + aw_fire - b_fire)
        _sticky_error(m, self, b_fire & bus.bresp[1], bus.bresp)
        m.d.comb += self.busy.eq(pl.active | (w_rows_left != 0) | (bpend != 0) | pushed)
        return m


class AxiReadArbiter(wiring.Component):
    """``n`` AR / R masters (``ports[i]``, In) onto one (``bus``, Out). Master i must use ARID ``ids[i]``
    (distinct); AR goes to the lowest-numbered requester and the grant is held until ARREADY; R is routed by RID."""

    def __init__(self, *, data_width, addr_width, ids, id_width=ID_WIDTH):
        self._ids = list(ids)
        if len(set(self._ids)) != len(self._ids):
            raise ValueError(f"read arbiter IDs must be distinct, not {ids!r}")
        sig = axi4_read_signature(data_width, addr_width, id_width)
        super().__init__({**{f"p{i}": In(sig) for i in range(len(self._ids))}, "bus": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        ports = [getattr(self, f"p{i}") for i in range(len(self._ids))]
        n = len(ports)
        locked = Signal()
        grant_q = Signal(range(max(2, n)))
        pick = Signal(range(max(2, n)))
        for i in reversed(range(n)):
            with m.If(ports[i].arvalid):
                m.d.comb += pick.eq(i)
        sel = Mux(locked, grant_q, pick)
        names = [x for x in self.bus.signature.members if x.startswith("ar") and x != "arready"]
        with m.Switch(sel):
            for i, p in enumerate(ports):
                with m.Case(i):
                    m.d.comb += [getattr(self.bus, x).eq(getattr(p, x)) for x in names]
                    m.d.comb += p.arready.eq(self.bus.arready)
        waiting = self.bus.arvalid & ~self.bus.arready
        m.d.sync += [locked.eq(waiting), grant_q.eq(sel)]
        for i, p in enumerate(ports):
            hit = self.bus.rid == self._ids[i]
            m.d.comb += [p.rid.eq(self.bus.rid), p.rdata.eq(self.bus.rdata), p.rresp.eq(self.bus.rresp),
                         p.rlast.eq(self.bus.rlast), p.rvalid.eq(self.bus.rvalid & hit)]
            with m.If(hit):
                m.d.comb += self.bus.rready.eq(p.rready)
        return m


class CommandFetcher(wiring.Component):
    """``count`` 128-bit commands from byte address ``base`` (16-byte aligned or not) -> ``cmds`` stream.

    ``start`` (pulse) samples ``base`` / ``count``; the commands come out in order on ``cmds`` (valid / ready);
    ``busy`` until the last was delivered; ``error`` / ``error_resp`` / ``clear`` as the read engine's;
    ``cmds_error`` marks a command whose bytes came with an error response. The engine has an 8-command buffer
    with credits (``buffer_rows``), so a stalled consumer never blocks the read data channel."""

    def __init__(self, *, data_width, addr_width, max_reads=4, axi_id=1, id_width=ID_WIDTH):
        self._kw = dict(data_width=data_width, addr_width=addr_width, max_row_bytes=16, max_reads=max_reads,
                        axi_id=axi_id, id_width=id_width, rows_width=32, buffer_rows=8)
        self._aw = addr_width
        super().__init__({
            "start": In(1), "base": In(addr_width), "count": In(32),
            "cmds": Out(stream.Signature(128)), "cmds_error": Out(1),
            "bus": Out(axi4_read_signature(data_width, addr_width, id_width)),
            "busy": Out(1), "error": Out(1), "error_resp": Out(2), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        eng = m.submodules.engine = AxiReadEngine(**self._kw)
        pending = Signal()
        p = eng.cmd.payload
        with m.If(self.start):
            m.d.sync += [pending.eq(self.count != 0), p.addr.eq(self.base), p.rows.eq(self.count),
                         p.row_bytes.eq(16), p.stride.eq(16)]
        with m.Elif(eng.cmd.ready):
            m.d.sync += pending.eq(0)
        m.d.comb += eng.cmd.valid.eq(pending)
        connect(m, eng.rows, wiring.flipped(self.cmds))
        connect(m, eng.bus, wiring.flipped(self.bus))
        m.d.comb += [self.busy.eq(pending | eng.busy), self.error.eq(eng.error), self.error_resp.eq(eng.error_resp),
                     self.cmds_error.eq(eng.rows_error),
                     eng.clear.eq(self.clear)]
        return m


class AxiDmaHarness(wiring.Component):
    """Test top: a read engine whose rows feed a write engine (a strided byte copy), and a command fetcher that
    shares the read channels, all on one AXI4 master ``m_axi_*``.

    Ports besides ``m_axi_*``: ``rd_*`` / ``wr_*`` row requests (``valid``, ``ready``, ``addr``, ``row_bytes``,
    ``rows``, ``stride``); ``hold`` (In: stalls the row stream between the engines); ``rows_moved`` (Out, 32);
    ``fetch_start`` / ``fetch_base`` / ``fetch_count``, the fetched commands on ``cmd_valid`` / ``cmd_ready`` /
    ``cmd_data``; ``busy``, ``rd_error``, ``wr_error``, ``fetch_error`` (Out), ``clear`` (In).
    """

    def __init__(self, *, data_width=64, addr_width=32, max_row_bytes=128, max_reads=4):
        self._dw, self._aw, self._mrb, self._nr = data_width, addr_width, max_row_bytes, max_reads
        req = {"valid": In(1), "ready": Out(1), "addr": In(addr_width), "row_bytes": In(max_row_bytes.bit_length()),
               "rows": In(16), "stride": In(addr_width)}
        super().__init__({
            **amba_members("m_axi", axi4_signature(data_width, addr_width)),
            **{f"rd_{k}": v for k, v in req.items()}, **{f"wr_{k}": v for k, v in req.items()},
            "hold": In(1), "rows_moved": Out(32),
            "fetch_start": In(1), "fetch_base": In(addr_width), "fetch_count": In(32),
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_data": Out(128),
            "busy": Out(1), "rd_error": Out(1), "wr_error": Out(1), "fetch_error": Out(1), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        kw = dict(data_width=self._dw, addr_width=self._aw)
        rd = m.submodules.rd = AxiReadEngine(**kw, max_row_bytes=self._mrb, max_reads=self._nr, axi_id=0)
        wr = m.submodules.wr = AxiWriteEngine(**kw, max_row_bytes=self._mrb, axi_id=2)
        fe = m.submodules.fetch = CommandFetcher(**kw, max_reads=self._nr, axi_id=1)
        arb = m.submodules.arb = AxiReadArbiter(**kw, ids=[0, 1])
        connect(m, rd.bus, arb.p0)
        connect(m, fe.bus, arb.p1)
        connect_amba(m, self, "m_axi", arb.bus)
        connect_amba(m, self, "m_axi", wr.bus)
        for unit, pre in ((rd, "rd"), (wr, "wr")):
            m.d.comb += [unit.cmd.valid.eq(getattr(self, f"{pre}_valid")),
                         getattr(self, f"{pre}_ready").eq(unit.cmd.ready)]
            for f in ("addr", "row_bytes", "rows", "stride"):
                m.d.comb += getattr(unit.cmd.payload, f).eq(getattr(self, f"{pre}_{f}"))
        m.d.comb += [wr.rows.payload.eq(rd.rows.payload), wr.rows.valid.eq(rd.rows.valid & ~self.hold),
                     rd.rows.ready.eq(wr.rows.ready & ~self.hold)]
        with m.If(wr.rows.valid & wr.rows.ready):
            m.d.sync += self.rows_moved.eq(self.rows_moved + 1)
        m.d.comb += [fe.start.eq(self.fetch_start), fe.base.eq(self.fetch_base), fe.count.eq(self.fetch_count),
                     self.cmd_valid.eq(fe.cmds.valid), self.cmd_data.eq(fe.cmds.payload),
                     fe.cmds.ready.eq(self.cmd_ready)]
        m.d.comb += [self.busy.eq(rd.busy | wr.busy | fe.busy), self.rd_error.eq(rd.error),
                     self.wr_error.eq(wr.error), self.fetch_error.eq(fe.error)]
        m.d.comb += [u.clear.eq(self.clear) for u in (rd, wr, fe)]
        return m
