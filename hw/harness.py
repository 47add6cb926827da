"""A self-running test harness around the array: beat memory -> sequencer -> array -> result memories.

It keeps Python out of the per-cycle loop of an RTL simulation: the testbench bulk-writes the beat stream
(:func:`cdmqta.hw.array_schedule.beat_word` words) into ``beat_mem``, sets ``n_beats`` and pulses ``start``; the
sequencer then plays one beat per cycle, back to back, into the array, and every output row is written, in
order, into ``ws_mem`` (ws port) or ``drain_mem`` (drain port) with a cycle stamp. ``done`` rises when all beats
are played and the array is idle. See :mod:`cdmqta.sw.rtl.build` for how cocotb reads/writes the memories in bulk.

Ports (all synchronous to ``clk``):
  start          pulse: play beats 0..n_beats-1 (clears counters and ``done``)
  n_beats        number of beats to play (held while running)
  done           1 from the end of a run until the next ``start``
  run_cycles     cycles from the first beat's presentation to the cycle in which ``done`` rises (latched)
  ws_count, drain_count   rows captured by each port during the run
  array_cycles   the array's own busy-cycle counter
  beat_we/beat_waddr/beat_wdata      one-word-per-cycle write port of ``beat_mem`` (fallback loader)
  res_drain/res_raddr/res_rdata      read port of ``ws_mem`` (res_drain=0) or ``drain_mem`` (1), 1-cycle latency
Result word: lane j at bits [j*acc_width, (j+1)*acc_width) (two's complement), then the cycle stamp (beat 0
presented at stamp 0) in the 32 bits above the last lane. A ws word has ``cols`` lanes, a drain word
``chain_lanes * cols`` (drain lane u = row R-1-u of the shift chain, see :mod:`cdmqta.hw.array`);
``res_rdata`` is as wide as a drain word (ws words zero-extended).
"""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .array import Array, array_latency
from .config import QTAConfig
from .pe import Control

__all__ = ["ArrayHarness", "beat_layout"]


def beat_layout(rows, cols, lanes=1):
    from amaranth.hdl import signed
    return data.StructLayout({
        "ctrl": Control,
        "a": data.ArrayLayout(signed(8), rows),
        "b": data.ArrayLayout(signed(8), cols),
        "d": data.ArrayLayout(signed(8), lanes * cols),
    })


class ArrayHarness(wiring.Component):
    """``ArrayHarness(config, depth=4096)``: the array plus beat / result memories of ``depth`` words."""

    def __init__(self, config=None, depth=4096):
        config = config or QTAConfig()
        self._config = config
        self._depth = depth
        self.lanes = config.chain_lanes
        self.beat_width = beat_layout(config.rows, config.cols, self.lanes).size
        self.ws_width = config.cols * config.acc_width + 32
        self.result_width = self.lanes * config.cols * config.acc_width + 32
        self.latency = array_latency(config.rows, config.cols)
        aw = max(1, (depth - 1).bit_length())
        super().__init__({
            "start": In(1),
            "n_beats": In(32),
            "done": Out(1),
            "run_cycles": Out(32),
            "ws_count": Out(32),
            "drain_count": Out(32),
            "array_cycles": Out(32),
            "beat_we": In(1),
            "beat_waddr": In(aw),
            "beat_wdata": In(self.beat_width),
            "res_drain": In(1),
            "res_raddr": In(aw),
            "res_rdata": Out(self.result_width),
        })

    @property
    def config(self):
        return self._config

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        cfg, depth = self._config, self._depth
        m.submodules.array = array = Array(cfg)
        m.submodules.beat_mem = beat_mem = Memory(shape=unsigned(self.beat_width), depth=depth, init=[])
        m.submodules.ws_mem = ws_mem = Memory(shape=unsigned(self.ws_width), depth=depth, init=[])
        m.submodules.drain_mem = drain_mem = Memory(shape=unsigned(self.result_width), depth=depth, init=[])

        load = beat_mem.write_port()
        m.d.comb += [load.en.eq(self.beat_we), load.addr.eq(self.beat_waddr), load.data.eq(self.beat_wdata)]

        # sequencer: address at cycle x -> word at x+1 -> presented to the array at x+1
        play = beat_mem.read_port()
        addr = Signal(32)
        playing = Signal()
        present = Signal()
        running = Signal()
        stamp = Signal(32)
        m.d.comb += play.addr.eq(addr)
        m.d.sync += present.eq(playing & (addr < self.n_beats))
        with m.If(playing):
            with m.If(addr < self.n_beats):
                m.d.sync += addr.eq(addr + 1)
            with m.Else():
                m.d.sync += playing.eq(0)
        word = data.View(beat_layout(cfg.rows, cfg.cols, self.lanes), play.data)
        with m.If(present):
            m.d.comb += [array.a.eq(word.a), array.b.eq(word.b), array.d.eq(word.d), array.ctrl.eq(word.ctrl)]

        # capture
        ws_w, dr_w = ws_mem.write_port(), drain_mem.write_port()
        m.d.comb += [
            ws_w.addr.eq(self.ws_count), ws_w.data.eq(Cat(array.ws_row.as_value(), stamp)),
            ws_w.en.eq(array.ws_valid & running),
            dr_w.addr.eq(self.drain_count), dr_w.data.eq(Cat(array.drain_row.as_value(), stamp)),
            dr_w.en.eq(array.drain_valid & running),
        ]
        with m.If(ws_w.en):
            m.d.sync += self.ws_count.eq(self.ws_count + 1)
        with m.If(dr_w.en):
            m.d.sync += self.drain_count.eq(self.drain_count + 1)

        # result read-back (fallback path)
        ws_r, dr_r = ws_mem.read_port(), drain_mem.read_port()
        sel_q = Signal()
        m.d.sync += sel_q.eq(self.res_drain)
        m.d.comb += [ws_r.addr.eq(self.res_raddr), dr_r.addr.eq(self.res_raddr)]
        with m.If(sel_q):
            m.d.comb += self.res_rdata.eq(dr_r.data)
        with m.Else():
            m.d.comb += self.res_rdata.eq(ws_r.data)

        with m.If(running):
            m.d.sync += stamp.eq(stamp + 1)
            with m.If(~playing & ~present & ~array.busy):
                m.d.sync += [running.eq(0), self.done.eq(1), self.run_cycles.eq(stamp)]
        with m.If(self.start):
            m.d.sync += [addr.eq(0), playing.eq(1), running.eq(1), self.done.eq(0), stamp.eq(-1),
                         self.ws_count.eq(0), self.drain_count.eq(0)]
        m.d.comb += self.array_cycles.eq(array.cycles)
        return m
