"""The accelerator on a system bus: :class:`AxiAccelerator` = the accelerator core behind an AXI4 master
(``m_axi_*``) and an AXI4-Lite register slave (``s_axil_*``), plus ``irq``.

Software writes CMD_BASE / CMD_COUNT, then CTRL.start (registers: :mod:`cdmqta.hw.regs`). The command fetcher
reads the program from memory into the controller (the same :class:`~cdmqta.hw.controller.Controller`, execute
unit, array and memories as :class:`cdmqta.hw.top.Accelerator`); LOAD / STORE move rows through the AXI4 engines
of :mod:`cdmqta.hw.axi_dma`:

- **Addresses are bytes.** In this top a LOAD / STORE's ``host_addr`` is a byte address (the low 4 GB) and
  ``host_stride`` a stride in bytes. A LOAD reads whole scratchpad rows (``lanes`` bytes; INT32 rows into the
  accumulator: ``4 * cols`` bytes) -- the execute unit ignores the lanes past a tile's k / n, so the extra bytes
  may be anything, but they must be readable. A STORE writes exactly ``cols`` elements per row
  (``4 * cols`` bytes for INT32, ``cols`` bytes for INT8 / INT4: one per byte), with WSTRB, so no other byte
  changes.
- **Completion.** A STORE is done when its last B response has returned, so STATUS.done (and the interrupt) come
  after every write response. Each unit runs one command at a time (LOADs and STOREs still overlap each other and
  the execute unit), which keeps a bus error's command index exact.
- **Errors.** A decode error is reported as by the core (``hw.isa.Status``, index of the command). An SLVERR /
  DECERR response ends the run with STATUS.error = ``BUS_ERROR_READ`` (command fetch or LOAD) or
  ``BUS_ERROR_WRITE`` (STORE) and ERROR_INDEX = the index of the command: dispatch stops (an invalid command is
  fed to the controller, which stops as for any bad command), everything in flight completes and drains its
  bursts, then STATUS.done. Nothing hangs as long as the slave answers.
- **Soft reset** (CTRL.soft_reset): stops the run as above, waits until no burst is outstanding, then resets the
  core (controller, execute unit, units, fetcher; the memories keep their contents) and clears STATUS; the next
  start runs normally.
- **Interrupt**: ``irq`` is high while (IRQ_STATUS.done or IRQ_STATUS.error) and CTRL.irq_enable; done is set
  at the end of every run, error at the end of a run with an error.

Clock and reset: one clock ``clk``; ``rst`` active high, synchronous (invert AMBA's ARESETn).
"""

import dataclasses

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from .array import Array
from .axi import amba_members, axi4_read_signature, axi4_signature, axi4_write_signature, axil_signature, connect_amba
from .axi_dma import AxiReadArbiter, AxiReadEngine, AxiWriteEngine, CommandFetcher
from .config import QTAConfig
from .controller import Controller
from .dma import LoadCmd, StoreCmd
from .epilogue import Epilogue
from .execute import ExecuteUnit
from .isa import OPCODE_BITS, Op, OutFormat
from .memories import AccumulatorMemory, Scratchpad, read_port_signature
from .regs import BUS_ERROR_READ, BUS_ERROR_WRITE, RegisterFile
from .top import wire_core

__all__ = ["AxiAccelerator", "AxiLoadUnit", "AxiStoreUnit"]

#: Width of the ISA's host_addr: byte addresses in the low 4 GB.
HOST_ADDR_BITS = 32
#: AXI IDs: LOAD data, command fetch (the read channels, arbitrated), STORE data (the write channels).
ID_LOAD, ID_FETCH, ID_STORE = 0, 1, 2
#: The command fed to the controller to stop a run (an unused opcode: the controller stops as at a bad command).
ABORT_CMD = 0xF


def _abits(n):
    return max(1, (n - 1).bit_length())


class AxiLoadUnit(wiring.Component):
    """LOAD over AXI4: the controller-facing members of :class:`cdmqta.hw.dma.LoadUnit` (``cmd``, ``done``,
    ``busy``, the scratchpad write port, the accumulator load port) plus ``bus`` (AR / R), ``error`` (sticky),
    ``clear``. One command at a time; ``done`` as the LoadUnit's (the cycle after the last scratchpad write, two
    cycles after the accumulator took the last row)."""

    def __init__(self, *, lanes, cols, acc_width, sp_addr_width, acc_addr_width, data_width, addr_width,
                 max_reads):
        self._lanes, self._cols = lanes, cols
        self._eng = dict(data_width=data_width, addr_width=addr_width, max_row_bytes=max(lanes, 4 * cols),
                         max_reads=max_reads, axi_id=ID_LOAD)
        self._aw = addr_width
        acc_row = data.ArrayLayout(signed(acc_width), cols)
        super().__init__({
            "cmd": In(stream.Signature(LoadCmd(HOST_ADDR_BITS))),
            "done": Out(1), "busy": Out(1),
            "sp_w_en": Out(1), "sp_w_addr": Out(sp_addr_width), "sp_w_data": Out(8 * lanes),
            "acc_valid": Out(1), "acc_ready": In(1), "acc_addr": Out(acc_addr_width), "acc_data": Out(acc_row),
            "bus": Out(axi4_read_signature(data_width, addr_width)),
            "error": Out(1), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, cols = self._lanes, self._cols
        eng = m.submodules.engine = AxiReadEngine(**self._eng)
        connect(m, eng.bus, wiring.flipped(self.bus))
        m.d.comb += [self.error.eq(eng.error), eng.clear.eq(self.clear)]

        cmd = Signal.like(self.cmd.payload)
        active, req = Signal(), Signal()
        r = Signal(16)
        m.d.comb += [self.cmd.ready.eq(~active), self.busy.eq(active)]
        with m.If(self.cmd.valid & ~active):
            m.d.sync += [cmd.eq(self.cmd.payload), active.eq(1), req.eq(1), r.eq(0)]
        p = eng.cmd.payload
        m.d.comb += [eng.cmd.valid.eq(req), p.addr.eq(cmd.host_addr), p.rows.eq(cmd.rows),
                     p.row_bytes.eq(Mux(cmd.to_acc, 4 * cols, lanes)), p.stride.eq(cmd.host_stride)]
        with m.If(eng.cmd.valid & eng.cmd.ready):
            m.d.sync += req.eq(0)

        row = eng.rows.payload
        m.d.comb += [
            eng.rows.ready.eq(Mux(cmd.to_acc, self.acc_ready, 1)),
            self.sp_w_en.eq(eng.rows.valid & ~cmd.to_acc), self.sp_w_addr.eq(cmd.addr + r),
            self.sp_w_data.eq(row[:8 * lanes]),
            self.acc_valid.eq(eng.rows.valid & cmd.to_acc), self.acc_addr.eq(cmd.addr + r),
        ]
        for c in range(cols):
            m.d.comb += self.acc_data[c].eq(row[32 * c:32 * c + 32].as_signed())
        last = Signal()
        with m.If(eng.rows.valid & eng.rows.ready):
            m.d.sync += r.eq(r + 1)
            m.d.comb += last.eq(r + 1 == cmd.rows)
        last_d = Signal(2)
        m.d.sync += last_d.eq(Mux(cmd.to_acc, last_d[1:] | (last << 1), last))
        with m.If(last_d[0]):
            m.d.sync += active.eq(0)
        m.d.comb += self.done.eq(last_d[0])
        return m


class AxiStoreUnit(wiring.Component):
    """STORE over AXI4: the controller-facing members of :class:`cdmqta.hw.dma.StoreUnit` (``cmd``,
    ``read_done``, ``done``, ``busy``, the accumulator read port) plus ``bus`` (AW / W / B), ``error`` (sticky),
    ``clear``. Accumulator rows -> :class:`~cdmqta.hw.epilogue.Epilogue` -> a FIFO -> the write engine; reads are
    issued only while the FIFO has room for every row in the epilogue (the bus may stall). ``done`` when the last
    B response of the command has returned."""

    FIFO_DEPTH = 8

    def __init__(self, *, lanes, cols, acc_width, acc_addr_width, data_width, addr_width):
        self._lanes, self._cols, self._accw = lanes, cols, acc_width
        self._eng = dict(data_width=data_width, addr_width=addr_width, max_row_bytes=4 * cols, axi_id=ID_STORE)
        acc_row = data.ArrayLayout(signed(acc_width), cols)
        super().__init__({
            "cmd": In(stream.Signature(StoreCmd(HOST_ADDR_BITS))),
            "read_done": Out(1), "done": Out(1), "busy": Out(1),
            "acc_r": Out(read_port_signature(acc_addr_width, acc_row)),
            "bus": Out(axi4_write_signature(data_width, addr_width)),
            "error": Out(1), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self._cols
        epi = m.submodules.epilogue = Epilogue(cols=cols, acc_width=self._accw, lanes=self._lanes, tag_width=1)
        eng = m.submodules.engine = AxiWriteEngine(**self._eng)
        q = m.submodules.rows = fifo.SyncFIFOBuffered(width=32 * cols, depth=self.FIFO_DEPTH)
        connect(m, eng.bus, wiring.flipped(self.bus))
        m.d.comb += [self.error.eq(eng.error), eng.clear.eq(self.clear)]

        cmd = Signal.like(self.cmd.payload)
        active, req = Signal(), Signal()
        issued, sent = Signal(17), Signal(17)
        in_pipe = Signal(range(Epilogue.LATENCY + 4))     # rows read but not yet in the FIFO
        m.d.comb += [self.cmd.ready.eq(~active), self.busy.eq(active)]
        with m.If(self.cmd.valid & ~active):
            m.d.sync += [cmd.eq(self.cmd.payload), active.eq(1), req.eq(1), issued.eq(0), sent.eq(0)]
        p = eng.cmd.payload
        m.d.comb += [eng.cmd.valid.eq(req), p.addr.eq(cmd.host_addr), p.rows.eq(cmd.rows),
                     p.row_bytes.eq(Mux(cmd.epi.out == OutFormat.INT32, cmd.cols << 2, cmd.cols)),
                     p.stride.eq(cmd.host_stride)]
        with m.If(eng.cmd.valid & eng.cmd.ready):
            m.d.sync += req.eq(0)

        reading = Signal()
        m.d.comb += reading.eq(active & (issued < cmd.rows) & (q.level + in_pipe < self.FIFO_DEPTH - 1))
        last_read = reading & (issued + 1 == cmd.rows)
        m.d.comb += [self.acc_r.en.eq(reading), self.acc_r.addr.eq((cmd.acc_addr + issued)[:len(self.acc_r.addr)])]
        with m.If(reading):
            m.d.sync += issued.eq(issued + 1)
        m.d.sync += self.read_done.eq(last_read)
        m.d.sync += in_pipe.eq(in_pipe + reading - epi.o_valid)

        r_valid, r_row = Signal(), Signal(16)
        m.d.sync += [r_valid.eq(reading), r_row.eq((cmd.origin_row + issued)[:16])]
        m.d.comb += [epi.i_valid.eq(r_valid), epi.i_row.eq(r_row), epi.i_cfg.eq(cmd.epi), epi.i_tag.eq(0)]
        for c in range(cols):
            m.d.comb += epi.i_acc[c].eq(Mux(c < cmd.cols, self.acc_r.data[c], 0))
        m.d.comb += [q.w_en.eq(epi.o_valid), q.w_data.eq(epi.o_word[:32 * cols]),
                     eng.rows.valid.eq(q.r_rdy), eng.rows.payload.eq(q.r_data), q.r_en.eq(eng.rows.ready)]
        with m.If(eng.rows.valid & eng.rows.ready):
            m.d.sync += sent.eq(sent + 1)
        finished = active & ~req & (sent == cmd.rows) & ~eng.busy & (in_pipe == 0)
        m.d.comb += self.done.eq(finished)
        with m.If(finished):
            m.d.sync += active.eq(0)
        return m


class AxiAccelerator(wiring.Component):
    """The accelerator with ``m_axi_*``, ``s_axil_*`` and ``irq``; see the module docstring."""

    def __init__(self, config=None, *, dsp=None):
        self._cfg = config = config or QTAConfig()
        self._dsp = dsp
        self._rf = RegisterFile(config)
        super().__init__({**amba_members("m_axi", axi4_signature(config.bus_width, config.bus_addr_width)),
                          **amba_members("s_axil", axil_signature(), flipped=True), "irq": Out(1)})

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        core_cfg = dataclasses.replace(cfg, host_addr_width=HOST_ADDR_BITS)
        rf = m.submodules.regs = self._rf
        connect_amba(m, self, "s_axil", rf.axil)
        core_rst, run_rst = Signal(), Signal()

        def core(name, block):
            m.submodules[name] = ResetInserter({"sync": core_rst})(block)
            return block

        ctl = core("controller", Controller(core_cfg))
        exe = core("execute", ExecuteUnit(cfg))
        arr = core("array", Array(cfg) if self._dsp is None else Array(cfg, dsp=self._dsp))
        S = cfg.chain_lanes
        sp = m.submodules.scratchpad = Scratchpad(rows=cfg.sp_rows, lanes=cfg.lanes, banks=cfg.sp_banks,
                                                  read_ports=2 + S)
        acc = core("accumulator", AccumulatorMemory(rows=cfg.acc_rows, cols=cfg.cols, acc_width=cfg.acc_width,
                                                    banks=cfg.acc_banks, ex_ports=S))
        bus = dict(data_width=cfg.bus_width, addr_width=cfg.bus_addr_width)
        ld = core("load", AxiLoadUnit(lanes=cfg.lanes, cols=cfg.cols, acc_width=cfg.acc_width,
                                      sp_addr_width=_abits(cfg.sp_rows), acc_addr_width=_abits(cfg.acc_rows),
                                      max_reads=cfg.max_reads, **bus))
        st = core("store", AxiStoreUnit(lanes=cfg.lanes, cols=cfg.cols, acc_width=cfg.acc_width,
                                        acc_addr_width=_abits(cfg.acc_rows), **bus))
        fe = core("fetch", CommandFetcher(max_reads=cfg.max_reads, axi_id=ID_FETCH, **bus))
        arb = m.submodules.read_arbiter = AxiReadArbiter(ids=[ID_LOAD, ID_FETCH], **bus)
        connect(m, ld.bus, arb.p0)
        connect(m, fe.bus, arb.p1)
        connect_amba(m, self, "m_axi", arb.bus)
        connect_amba(m, self, "m_axi", st.bus)

        # -- the core, wired as in hw.top.Accelerator ------------------------------------------------------
        wire_core(m, ctl, exe, arr, sp, acc, ld, st, S)

        # -- run control ---------------------------------------------------------------------------------
        running, done_flag, bus_err, soft = Signal(), Signal(), Signal(), Signal()
        inject, discard = Signal(), Signal()
        err_code, err_index = Signal(4), Signal(32)
        n_cmds, handed = Signal(32), Signal(32)
        start = Signal()
        m.d.comb += start.eq(rf.ctrl_start & ~running & ~soft)
        m.d.comb += [ctl.start.eq(start), ctl.n_cmds.eq(n_cmds), fe.start.eq(start),
                     fe.base.eq(Cat(rf.cmd_base_lo_addr, rf.cmd_base_hi_addr)[:cfg.bus_addr_width]),
                     fe.count.eq(rf.cmd_count_count), run_rst.eq(start | core_rst)]
        m.d.comb += [u.clear.eq(run_rst) for u in (ld, st, fe)]
        with m.If(start):
            m.d.sync += [running.eq(1), done_flag.eq(0), bus_err.eq(0), err_code.eq(0), err_index.eq(0),
                         n_cmds.eq(rf.cmd_count_count), handed.eq(0), inject.eq(0), discard.eq(0)]

        # Indexes of the LOADs / STOREs the controller took, in order (each unit takes its commands in order).
        idx_fifos = {}
        for name, op in (("load", Op.LOAD), ("store", Op.STORE)):
            f = fifo.SyncFIFOBuffered(width=32, depth=cfg.queue_depth + 4)
            m.submodules[f"{name}_index"] = ResetInserter({"sync": run_rst})(f)
            idx_fifos[name] = (f, op)
        fc = fe.cmds
        opcode = fc.payload[:OPCODE_BITS]
        room = idx_fifos["load"][0].w_rdy & idx_fifos["store"][0].w_rdy
        pass_cmd = fc.valid & ~fe.cmds_error & ~discard & ~inject & room
        m.d.comb += [ctl.cmd.valid.eq(inject | pass_cmd), ctl.cmd.payload.eq(Mux(inject, ABORT_CMD, fc.payload)),
                     fc.ready.eq(discard | (pass_cmd & ctl.cmd.ready))]
        taken = pass_cmd & ctl.cmd.ready
        with m.If(taken):
            m.d.sync += handed.eq(handed + 1)
        with m.If(inject & ctl.cmd.ready):
            m.d.sync += inject.eq(0)
        cur_index = {}
        for name, (f, op) in idx_fifos.items():
            unit = ld if name == "load" else st
            m.d.comb += [f.w_en.eq(taken & (opcode == op)), f.w_data.eq(handed),
                         f.r_en.eq(unit.cmd.valid & unit.cmd.ready)]
            cur_index[name] = Signal(32, name=f"{name}_cur_index")
            with m.If(unit.cmd.valid & unit.cmd.ready):
                m.d.sync += cur_index[name].eq(f.r_data)

        # Bus errors: the first one ends the run (dispatch stops, the rest drains).
        def bus_error(cond, code, index):
            with m.If(cond & running & ~bus_err):
                m.d.sync += [bus_err.eq(1), err_code.eq(code), err_index.eq(index), inject.eq(1), discard.eq(1)]

        # (later statements win: the fetch error is the earliest command of the three)
        bus_error(st.error, BUS_ERROR_WRITE, cur_index["store"])
        bus_error(ld.error, BUS_ERROR_READ, cur_index["load"])
        bus_error(fc.valid & fe.cmds_error & ~discard, BUS_ERROR_READ, handed)

        # Soft reset: stop the run like a bus error, wait until nothing is outstanding, reset the core.
        with m.If(rf.ctrl_soft_reset):
            m.d.sync += soft.eq(1)
            with m.If(running):
                m.d.sync += [inject.eq(1), discard.eq(1)]
        idle = ~fe.busy & ~ld.busy & ~st.busy
        m.d.comb += core_rst.eq(soft & ~running & idle)
        with m.If(core_rst):
            m.d.sync += [soft.eq(0), done_flag.eq(0), bus_err.eq(0), err_code.eq(0), err_index.eq(0)]

        # The controller stopped by itself (a decode error): the rest of the fetch is dropped so the fetcher drains.
        with m.If(running & ctl.done & ~start):
            m.d.sync += discard.eq(1)
        finished = running & ctl.done & idle & ~start
        code = Mux(bus_err, err_code, ctl.status)
        m.d.comb += [rf.irq_status_done_set.eq(finished), rf.irq_status_error_set.eq(finished & (code != 0))]
        with m.If(finished):
            m.d.sync += [running.eq(0), done_flag.eq(1), discard.eq(1)]
        with m.If(~running):
            m.d.sync += inject.eq(0)

        m.d.comb += [
            rf.status_busy.eq(running), rf.status_done.eq(done_flag), rf.status_error.eq(Mux(running, 0, code)),
            rf.error_index_index.eq(Mux(bus_err, err_index, ctl.error_index)),
            rf.busy_cycles_value.eq(ctl.busy_cycles), rf.macs_value.eq(ctl.macs),
            rf.stall_cycles_value.eq(ctl.stall_cycles), rf.compute_cycles_value.eq(ctl.compute_cycles),
            self.irq.eq(rf.ctrl_irq_enable & (rf.irq_status_done | rf.irq_status_error)),
        ]
        return m
