"""Top levels: :class:`Accelerator` (the generated core) and :class:`SimTop` (the core plus memories, for tests).

Accelerator(config, host_words=None) -- ports (``clk`` / ``rst`` are the sync domain):
    start             In(1)    one-cycle pulse: run ``n_cmds`` commands from ``cmd``
    n_cmds            In(32)   number of commands of the run (sampled while running)
    cmd               In(stream.Signature(128))   ``cmd.valid`` / ``cmd.ready`` / ``cmd.payload``
    done              Out(1)   high once the run finished (all commands done, or stopped at an error)
    status            Out(3)   hw.isa.Status of the run (0 = OK)
    error_index       Out(32)  index of the failing command (valid when status != 0)
    busy_cycles, macs, stall_cycles, compute_cycles   Out(64) performance counters of the run
    amax              Out(ArrayLayout(acc_width, hw.isa.AMAX_SLOTS)) the amax registers of the run: max |acc| of
                      the rows STOREd with each CONFIG.amax_slot (values before requantization; cleared by
                      ``start``; see :class:`~cdmqta.hw.dma.StoreUnit`)
    host              Out(hw.dma.host_port_signature(lanes, host_addr_width)): word-addressed host memory,
                      rd_en/rd_addr -> rd_data one cycle later; wr_en/wr_addr/wr_data.
``host_words`` is the size of the host memory for ADDR_RANGE checks (default 2**host_addr_width); ``dsp`` is
passed to :class:`~cdmqta.hw.array.Array` (e.g. "ecp5" for synthesis).
Inside: :class:`~cdmqta.hw.controller.Controller` (dispatch, scoreboard, counters),
:class:`~cdmqta.hw.execute.ExecuteUnit` + :class:`~cdmqta.hw.array.Array`, the load / store units, the
scratchpad and the accumulator memory. See the controller's and the execute unit's docstrings for latencies and
the overlap rules. Both tops share one control interface (:func:`control_members`).

SimTop(config, host_words, cmd_words) -- the Accelerator with a host memory of ``host_words`` words
(``host_mem``, ``32 * lanes`` bits a word) and a command memory of ``cmd_words`` 128-bit commands (``cmd_mem``)
inside, both plain ``amaranth.lib.memory`` arrays that a testbench fills and reads in bulk (see
:mod:`cdmqta.sw.rtl.driver`). Ports: ``start`` (pulse), ``n_cmds``, ``done``, ``status``, ``error_index`` and the
counters, ``amax``; ``cmd_we`` / ``cmd_waddr`` / ``cmd_wdata`` write one command (tie to 0 when the memory is filled
through VPI; the port keeps yosys from folding the memory into constants). The command feeder streams ``cmd_mem[0 ..
n_cmds-1]`` into the Accelerator, one per cycle; a run longer than the command memory (``n_cmds > cmd_words``)
gets opcode 15 for command ``cmd_words`` (:data:`PAST_END_WORD`), so it stops with BAD_OPCODE at index
``cmd_words`` instead of wrapping around to command 0. A ``start`` while a run is in progress is ignored.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from .array import Array
from .config import QTAConfig
from .controller import Controller
from .dma import LoadUnit, StoreUnit, host_port_signature
from .execute import ExecuteUnit
from .isa import AMAX_SLOTS, CMD_BITS
from .memories import AccumulatorMemory, Scratchpad

__all__ = ["Accelerator", "SimTop", "control_members", "amax_layout", "wire_core", "COUNTERS", "PAST_END_WORD"]

#: What SimTop's command feeder delivers for a command index past its command memory: opcode 15, not an opcode
#: (BAD_OPCODE), so a run longer than the memory stops at index ``cmd_words``.
PAST_END_WORD = 0xF

#: The 64-bit performance counters of a run (see :mod:`cdmqta.hw.controller`).
COUNTERS = ("busy_cycles", "macs", "stall_cycles", "compute_cycles")


def control_members():
    """The control interface that :class:`Accelerator` and :class:`SimTop` share (a top's point of view):
    ``start``, ``n_cmds`` in; ``done``, ``status``, ``error_index`` and the :data:`COUNTERS` out."""
    return {"start": In(1), "n_cmds": In(32), "done": Out(1), "status": Out(3), "error_index": Out(32),
            **{c: Out(64) for c in COUNTERS}}


def _connect_control(m, outer, inner):
    """Wire a top's control interface (``outer``) to the same members of a block inside it (``inner``)."""
    for name, member in control_members().items():
        o, i = getattr(outer, name), getattr(inner, name)
        m.d.comb += i.eq(o) if member.flow == In else o.eq(i)


def amax_layout(config):
    """Layout of the ``amax`` output: :data:`cdmqta.hw.isa.AMAX_SLOTS` unsigned ``acc_width``-bit registers."""
    return data.ArrayLayout(config.acc_width, AMAX_SLOTS)


def _abits(n):
    return max(1, (n - 1).bit_length())


def wire_core(m, ctl, exe, arr, sp, acc, ld, st, lanes):
    """The core's internal wiring, shared by :class:`Accelerator` and :class:`cdmqta.hw.axi_top.AxiAccelerator`:
    controller <-> load / store / execute units, execute unit <-> array, scratchpad and accumulator, the load
    unit's writes into scratchpad and accumulator (``lanes``: the shift chain's, 1 or 2). The host side of the
    load and store units is each top's own."""
    # Controller <-> units.
    connect(m, ctl.load, ld.cmd)
    connect(m, ctl.store, st.cmd)
    connect(m, st.acc_r, acc.r)
    m.d.comb += [
        ctl.load_done.eq(ld.done), ctl.load_busy.eq(ld.busy),
        ctl.store_read_done.eq(st.read_done), ctl.store_done.eq(st.done), ctl.store_busy.eq(st.busy),
        ctl.pre_read_done.eq(exe.pre_read_done), ctl.comp_read_done.eq(exe.comp_read_done),
        ctl.pre_read_seq.eq(exe.pre_read_seq), ctl.comp_read_seq.eq(exe.comp_read_seq),
        ctl.comp_done.eq(exe.comp_done), ctl.exec_idle.eq(exe.idle),
        ctl.beat_compute.eq(exe.beat_compute), ctl.beat_any.eq(exe.beat_any),
    ]
    connect(m, ctl.exec, exe.cmd)

    # Execute unit <-> array, scratchpad, accumulator.
    m.d.comb += [
        arr.a.eq(exe.arr_a), arr.b.eq(exe.arr_b), arr.d.eq(exe.arr_d), arr.ctrl.eq(exe.arr_ctrl),
        exe.arr_ws_valid.eq(arr.ws_valid), exe.arr_ws_row.eq(arr.ws_row),
        exe.arr_drain_valid.eq(arr.drain_valid), exe.arr_drain_row.eq(arr.drain_row),
        exe.arr_busy.eq(arr.busy),
        acc.ex_valid.eq(exe.acc_valid), acc.ex_addr.eq(exe.acc_addr), acc.ex_data.eq(exe.acc_data),
        acc.ex_mask.eq(exe.acc_mask), acc.ex_accumulate.eq(exe.acc_accumulate),
    ]
    if lanes == 2:
        m.d.comb += [acc.ex1_valid.eq(exe.acc1_valid), acc.ex1_addr.eq(exe.acc1_addr),
                     acc.ex1_data.eq(exe.acc1_data)]
    for p in range(2 + lanes):
        connect(m, exe.sp_r[p], sp.r[p])

    # Load unit -> scratchpad, accumulator.
    m.d.comb += [
        sp.w_en.eq(ld.sp_w_en), sp.w_addr.eq(ld.sp_w_addr), sp.w_data.eq(ld.sp_w_data),
        acc.ld_valid.eq(ld.acc_valid), ld.acc_ready.eq(acc.ld_ready), acc.ld_addr.eq(ld.acc_addr),
        acc.ld_data.eq(ld.acc_data),
    ]


class Accelerator(wiring.Component):
    """The accelerator core; see the module docstring for its ports."""

    def __init__(self, config=None, *, host_words=None, dsp=None):
        self._cfg = config = config or QTAConfig()
        self._dsp = dsp
        if host_words is not None and not 1 <= host_words <= (1 << config.host_addr_width):
            raise ValueError(f"host_words={host_words} must be in [1, 2**host_addr_width = "
                             f"{1 << config.host_addr_width}]")
        self._host_words = host_words
        super().__init__({**control_members(), "cmd": In(stream.Signature(CMD_BITS)),
                          "host": Out(host_port_signature(config.lanes, config.host_addr_width)),
                          "amax": Out(amax_layout(config))})

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        ctl = m.submodules.controller = Controller(cfg, host_words=self._host_words)
        exe = m.submodules.execute = ExecuteUnit(cfg)
        arr = m.submodules.array = Array(cfg) if self._dsp is None else Array(cfg, dsp=self._dsp)
        S = cfg.chain_lanes
        sp = m.submodules.scratchpad = Scratchpad(rows=cfg.sp_rows, lanes=cfg.lanes, banks=cfg.sp_banks,
                                                  read_ports=2 + S)
        acc = m.submodules.accumulator = AccumulatorMemory(rows=cfg.acc_rows, cols=cfg.cols,
                                                           acc_width=cfg.acc_width, banks=cfg.acc_banks,
                                                           ex_ports=S)
        ld = m.submodules.load = LoadUnit(lanes=cfg.lanes, cols=cfg.cols, acc_width=cfg.acc_width,
                                          sp_addr_width=_abits(cfg.sp_rows), acc_addr_width=_abits(cfg.acc_rows),
                                          host_addr_width=cfg.host_addr_width)
        st = m.submodules.store = StoreUnit(lanes=cfg.lanes, cols=cfg.cols, acc_width=cfg.acc_width,
                                            acc_addr_width=_abits(cfg.acc_rows),
                                            host_addr_width=cfg.host_addr_width)

        # Host command interface, status and counters.
        connect(m, wiring.flipped(self.cmd), ctl.cmd)
        _connect_control(m, self, ctl)

        m.d.comb += [st.amax_clear.eq(self.start), self.amax.eq(st.amax)]
        wire_core(m, ctl, exe, arr, sp, acc, ld, st, S)
        m.d.comb += [
            self.host.rd_en.eq(ld.host.rd_en), self.host.rd_addr.eq(ld.host.rd_addr),
            ld.host.rd_data.eq(self.host.rd_data),
            self.host.wr_en.eq(st.host.wr_en), self.host.wr_addr.eq(st.host.wr_addr),
            self.host.wr_data.eq(st.host.wr_data),
        ]
        return m


class SimTop(wiring.Component):
    """Accelerator + host memory + command memory; see the module docstring."""

    def __init__(self, config=None, *, host_words=4096, cmd_words=1024):
        self._cfg = config = config or QTAConfig()
        self._host_words, self._cmd_words = host_words, cmd_words
        super().__init__({**control_members(), "cmd_we": In(1), "cmd_waddr": In(_abits(cmd_words)),
                          "cmd_wdata": In(CMD_BITS), "amax": Out(amax_layout(config))})
        #: The memories (``.data[i]`` is word i in the Amaranth simulator).
        self.host_mem = memory.Memory(shape=32 * config.lanes, depth=host_words, init=[])
        self.cmd_mem = memory.Memory(shape=CMD_BITS, depth=cmd_words, init=[])

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        acc = m.submodules.accel = Accelerator(cfg, host_words=self._host_words)
        host_mem = m.submodules.host_mem = self.host_mem
        cmd_mem = m.submodules.cmd_mem = self.cmd_mem

        hr, hw = host_mem.read_port(), host_mem.write_port()
        m.d.comb += [
            hr.en.eq(acc.host.rd_en), hr.addr.eq(acc.host.rd_addr), acc.host.rd_data.eq(hr.data),
            hw.en.eq(acc.host.wr_en), hw.addr.eq(acc.host.wr_addr), hw.data.eq(acc.host.wr_data),
        ]
        _connect_control(m, self, acc)
        m.d.comb += self.amax.eq(acc.amax)

        # Command feeder: cmd_mem[0..n_cmds-1] as a stream (read latency 1, the port holds its data while idle).
        cr = cmd_mem.read_port()
        cw = cmd_mem.write_port()
        m.d.comb += [cw.en.eq(self.cmd_we), cw.addr.eq(self.cmd_waddr), cw.data.eq(self.cmd_wdata)]
        index = Signal(32)
        out_valid = Signal()
        past_end = Signal()     # the word on the stream comes from an index >= cmd_words
        advance = (~out_valid | acc.cmd.ready) & (index < self.n_cmds)
        m.d.comb += [cr.addr.eq(index), cr.en.eq(advance), acc.cmd.valid.eq(out_valid),
                     acc.cmd.payload.eq(Mux(past_end, PAST_END_WORD, cr.data))]
        with m.If(advance):
            m.d.sync += [index.eq(index + 1), out_valid.eq(1), past_end.eq(index >= self._cmd_words)]
        with m.Elif(acc.cmd.ready):
            m.d.sync += out_valid.eq(0)
        # A start while a run is in progress is ignored (so does the controller): the feeder keeps its place.
        feeding = Signal()
        with m.If(feeding & acc.done):
            m.d.sync += feeding.eq(0)
        with m.If(self.start & (~feeding | acc.done)):
            m.d.sync += [index.eq(0), out_valid.eq(0), feeding.eq(1)]
        return m
