"""Load and store units: rows between the host memory port and the on-chip memories.

Host memory port (:func:`host_port_signature`, the accelerator is the initiator): word-addressed, one word =
``32 * lanes`` bits (see :mod:`cdmqta.hw.isa`, memory model). Separate read and write channels, both usable in
the same cycle:
    read:  ``rd_en``, ``rd_addr`` at cycle t -> ``rd_data`` at cycle t+1 (fixed latency 1, no stall).
    write: ``wr_en``, ``wr_addr``, ``wr_data`` -- written at the end of the cycle.

Both units take one command at a time on a ``stream.Signature`` port ``cmd`` (valid / ready / payload; the payload
is held until accepted), move one row per cycle, and pulse ``done`` once per completed command, in order.

LoadUnit (:data:`LoadCmd`): host rows ``host_addr + r * host_stride`` (r < rows) into scratchpad rows
``addr + r`` (low ``8 * lanes`` bits of the word) or, with ``to_acc``, into accumulator rows ``addr + r`` (INT32
lanes 0..cols-1, sign-extended to acc_width, through the accumulator's load port, which yields to execute
writes). Timing: one host read per cycle from the cycle after acceptance; a command of ``rows`` rows takes
rows + 2 cycles to the scratchpad (``done`` in the cycle after the last row is written), rows + 4 to the
accumulator when it is not held up by execute writes (``done`` once the read-modify-write pipeline has written
the last row). The next command is accepted in the cycle after ``done``.

StoreUnit (:data:`StoreCmd`): accumulator rows ``acc_addr + r`` -> :class:`~cdmqta.hw.epilogue.Epilogue` ->
host words ``host_addr + r * host_stride``. Lanes >= ``cols`` are zeroed before the epilogue (so they are written
as zero in every format). Timing: one accumulator read per cycle from the cycle after acceptance, the host write
of row r at acceptance + 2 + r + Epilogue.LATENCY; ``read_done`` pulses in the cycle after the last accumulator
read (the rows may be overwritten from then on), ``done`` in the cycle after the last host write. A new command
is accepted as soon as all reads of the previous one are issued (stores stream back to back; the epilogue
carries each row's configuration).

Amax registers (``amax``: :data:`cdmqta.hw.isa.AMAX_SLOTS` unsigned ``acc_width``-bit values): every row a
STORE reads updates register ``epi.amax_slot`` (CONFIG.amax_slot) with the max |acc| of its lanes < cols, the
accumulator values before requantization (INT32 stores too), so the host learns a tensor's max-abs without
reading it as INT32. Pipeline: |acc| per lane (registered), the row's max (registered), the compare-and-update:
a row's value is in the register 3 cycles after it entered the epilogue, before its host write. ``amax_clear``
(the run's ``start``) zeroes all registers.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .epilogue import Epilogue, EpilogueConfig
from .isa import AMAX_SLOTS
from .memories import read_port_signature

__all__ = ["host_port_signature", "LoadCmd", "StoreCmd", "LoadUnit", "StoreUnit"]


def host_port_signature(lanes, addr_width):
    """The initiator side of the host memory port (see the module docstring)."""
    return wiring.Signature({
        "rd_en": Out(1), "rd_addr": Out(addr_width), "rd_data": In(32 * lanes),
        "wr_en": Out(1), "wr_addr": Out(addr_width), "wr_data": Out(32 * lanes),
    })


def LoadCmd(addr_width):
    return data.StructLayout({"to_acc": 1, "addr": 16, "rows": 16, "host_addr": addr_width, "host_stride": 16})


def StoreCmd(addr_width):
    return data.StructLayout({"acc_addr": 16, "rows": 16, "cols": 8, "host_addr": addr_width,
                              "host_stride": 16, "origin_row": 16, "epi": EpilogueConfig})


class LoadUnit(wiring.Component):
    """Host -> scratchpad / accumulator rows; see the module docstring."""

    def __init__(self, *, lanes, cols, acc_width, sp_addr_width, acc_addr_width, host_addr_width):
        self._lanes, self._cols, self._aw = lanes, cols, acc_width
        acc_row = data.ArrayLayout(signed(acc_width), cols)
        super().__init__({
            "cmd": In(stream.Signature(LoadCmd(host_addr_width))),
            "done": Out(1), "busy": Out(1),
            "host": Out(host_port_signature(lanes, host_addr_width)),
            "sp_w_en": Out(1), "sp_w_addr": Out(sp_addr_width), "sp_w_data": Out(8 * lanes),
            "acc_valid": Out(1), "acc_ready": In(1), "acc_addr": Out(acc_addr_width), "acc_data": Out(acc_row),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, cols = self._lanes, self._cols
        cmd = Signal.like(self.cmd.payload)
        issued = Signal(17)          # rows whose host read has been issued
        written = Signal(17)         # rows handed to their memory
        active = Signal()
        resp_valid = Signal()
        resp_addr = Signal(16)

        # Rows waiting for the accumulator's load port (execute writes have priority there).
        q = fifo.SyncFIFOBuffered(width=16 + 32 * cols, depth=4)
        m.submodules.acc_queue = q
        in_flight = Signal()         # a host read issued in the previous cycle (to_acc)

        m.d.comb += self.cmd.ready.eq(~active)
        m.d.comb += self.busy.eq(active)
        with m.If(self.cmd.valid & ~active):
            m.d.sync += [cmd.eq(self.cmd.payload), active.eq(1), issued.eq(0), written.eq(0)]

        room = Mux(cmd.to_acc, q.level + in_flight < 3, 1)
        can_issue = active & (issued < cmd.rows) & room
        host_addr = Signal.like(self.host.rd_addr)
        with m.If(self.cmd.valid & ~active):
            m.d.sync += host_addr.eq(self.cmd.payload.host_addr)
        with m.Elif(can_issue):
            m.d.sync += host_addr.eq(host_addr + cmd.host_stride)
        m.d.comb += [self.host.rd_en.eq(can_issue), self.host.rd_addr.eq(host_addr)]
        with m.If(can_issue):
            m.d.sync += issued.eq(issued + 1)
        m.d.sync += [resp_valid.eq(can_issue), resp_addr.eq((cmd.addr + issued)[:16]),
                     in_flight.eq(can_issue & cmd.to_acc)]

        # Response: scratchpad rows are written directly; accumulator rows go through the queue.
        m.d.comb += [
            self.sp_w_en.eq(resp_valid & ~cmd.to_acc),
            self.sp_w_addr.eq(resp_addr),
            self.sp_w_data.eq(self.host.rd_data[:8 * lanes]),
            q.w_en.eq(resp_valid & cmd.to_acc),
            q.w_data.eq(self.host.rd_data[:32 * cols] << 16 | resp_addr),
        ]
        acc_data = q.r_data[16:]
        m.d.comb += [self.acc_valid.eq(q.r_rdy), self.acc_addr.eq(q.r_data[:16]), q.r_en.eq(self.acc_ready)]
        for c in range(cols):
            m.d.comb += self.acc_data[c].eq(acc_data[32 * c:32 * c + 32].as_signed())
        accepted = Signal()
        m.d.comb += accepted.eq(Mux(cmd.to_acc, q.r_rdy & self.acc_ready, resp_valid))
        with m.If(accepted):
            m.d.sync += written.eq(written + 1)

        # Completion: the scratchpad write of the last row is done at the end of its cycle; an accumulator row
        # is written one cycle after the load port accepts it.
        last = Signal()
        m.d.comb += last.eq(active & accepted & (written + 1 == cmd.rows))
        last_d = Signal(2)
        m.d.sync += last_d.eq(Mux(cmd.to_acc, last_d[1:] | (last << 1), last))
        with m.If(last_d[0]):
            m.d.sync += active.eq(0)
        m.d.comb += self.done.eq(last_d[0])
        return m


class StoreUnit(wiring.Component):
    """Accumulator -> epilogue -> host rows; see the module docstring."""

    def __init__(self, *, lanes, cols, acc_width, acc_addr_width, host_addr_width):
        self._lanes, self._cols, self._aw = lanes, cols, acc_width
        self._haw = host_addr_width
        acc_row = data.ArrayLayout(signed(acc_width), cols)
        super().__init__({
            "cmd": In(stream.Signature(StoreCmd(host_addr_width))),
            "read_done": Out(1), "done": Out(1), "busy": Out(1),
            "host": Out(host_port_signature(lanes, host_addr_width)),
            "acc_r": Out(read_port_signature(acc_addr_width, acc_row)),
            "amax_clear": In(1),
            "amax": Out(data.ArrayLayout(acc_width, AMAX_SLOTS)),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self._cols
        epi = Epilogue(cols=cols, acc_width=self._aw, lanes=self._lanes, tag_width=self._haw + 1)
        m.submodules.epilogue = epi

        cmd = Signal.like(self.cmd.payload)
        active = Signal()
        issued = Signal(17)
        host_addr = Signal(self._haw)
        m.d.comb += self.cmd.ready.eq(~active)
        with m.If(self.cmd.valid & ~active):
            m.d.sync += [cmd.eq(self.cmd.payload), active.eq(1), issued.eq(0), host_addr.eq(self.cmd.payload.host_addr)]

        reading = active & (issued < cmd.rows)
        last_read = reading & (issued + 1 == cmd.rows)
        m.d.comb += [self.acc_r.en.eq(reading), self.acc_r.addr.eq((cmd.acc_addr + issued)[:16])]
        with m.If(reading):
            m.d.sync += [issued.eq(issued + 1), host_addr.eq(host_addr + cmd.host_stride)]
        with m.If(last_read):
            m.d.sync += active.eq(0)

        # One cycle later the row is at acc_r_data; the per-row payload is delayed to meet it.
        r_valid = Signal()
        r_row = Signal(16)
        r_cfg = Signal(EpilogueConfig)
        r_cols = Signal(8)
        r_tag = Signal(self._haw + 1)
        m.d.sync += [r_valid.eq(reading), r_row.eq((cmd.origin_row + issued)[:16]), r_cfg.eq(cmd.epi),
                     r_cols.eq(cmd.cols), r_tag.eq(host_addr | (last_read << self._haw))]
        m.d.sync += self.read_done.eq(last_read)
        m.d.comb += [epi.i_valid.eq(r_valid), epi.i_row.eq(r_row), epi.i_cfg.eq(r_cfg), epi.i_tag.eq(r_tag)]
        for c in range(cols):
            m.d.comb += epi.i_acc[c].eq(Mux(c < r_cols, self.acc_r.data[c], 0))

        # Amax registers: |acc| per lane -> row max -> max with the slot's register.
        aw = self._aw
        a_valid, a_slot = Signal(), Signal.like(r_cfg.amax_slot)
        a_abs = [Signal(aw, name=f"amax_abs{c}") for c in range(cols)]
        m.d.sync += [a_valid.eq(r_valid), a_slot.eq(r_cfg.amax_slot)]
        for c in range(cols):
            x = epi.i_acc[c]
            m.d.sync += a_abs[c].eq(Mux(x < 0, -x, x)[:aw])
        level = a_abs
        while len(level) > 1:
            level = [Mux(level[i] > level[i + 1], level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        b_valid, b_slot, b_max = Signal(), Signal.like(a_slot), Signal(aw)
        m.d.sync += [b_valid.eq(a_valid), b_slot.eq(a_slot), b_max.eq(level[0])]
        for s in range(AMAX_SLOTS):
            with m.If(self.amax_clear):
                m.d.sync += self.amax[s].eq(0)
            with m.Elif(b_valid & (b_slot == s) & (b_max > self.amax[s])):
                m.d.sync += self.amax[s].eq(b_max)

        m.d.comb += [
            self.host.wr_en.eq(epi.o_valid),
            self.host.wr_addr.eq(epi.o_tag[:self._haw]),
            self.host.wr_data.eq(epi.o_word),
        ]
        m.d.sync += self.done.eq(epi.o_valid & epi.o_tag[self._haw])

        # Busy while reading or while rows are in the epilogue.
        in_pipe = Signal(range(Epilogue.LATENCY + 3))
        with m.If(reading):
            m.d.sync += in_pipe.eq(Epilogue.LATENCY + 2)
        with m.Elif(in_pipe != 0):
            m.d.sync += in_pipe.eq(in_pipe - 1)
        m.d.comb += self.busy.eq(active | (in_pipe != 0))
        return m
