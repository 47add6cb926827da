"""One processing element of the systolic array: a shared MAC, two stationary registers, a shift chain.

The control of a beat (:data:`Control`) travels down the column with the beat's north data, registered in every
PE, so each PE acts on the beat's own dataflow / precision / buffer select (Gemmini ``PEControl`` style). The
array docstring (:mod:`cdmqta.hw.array`) states the protocol; here is what one PE does with a beat that reaches
it (its ``*_in`` inputs) in cycle T:

stage 0 (cycle T-1, from ``*_next`` = what ``*_in`` will hold in cycle T, i.e. the neighbours' inputs): the MAC
  operands are selected and registered (the DSP's input registers, so no logic precedes the multiplier):
  ``a_next`` and, OS: ``b_next``; WS: the weight ``c[sel][7:0]`` -- bypassed from ``d_in`` when a shift in cycle
  T-1 writes that very register (the last preload shift right before the tile's first compute beat).
stage 1 (cycle T, from ``ctrl_in``): the multiply (product register);
  ``shift``: ``c[!sel] <= d_in``, ``d_out <= c[!sel]`` (old value): the preload / drain chain;
  ``a_out <= a_in``, ``b_out <= b_in``, ``ctrl_out <= ctrl_in``; the stage-2 write enables / addend masks are
  decoded here into registers (one-hot, so stage 2 is an AND-OR and an adder).
stage 2 (cycle T+1, the same beat one cycle later):
  WS compute: ``psum_out <= psum_in + product`` (``psum_in`` = the PE above's ``psum_out``; 0 at the top).
  OS compute: ``c[sel] <= (first ? 0 : c[sel]) + product``.
The adder is shared by both. Output latency: a_out / b_out / ctrl_out / d_out: 1 cycle, psum_out: 2 cycles.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .isa import Dataflow, Precision

__all__ = ["Control", "PE"]

#: The control bits that travel with a beat (see :mod:`cdmqta.hw.array`).
Control = data.StructLayout({
    "compute": 1,
    "shift": 1,
    "dataflow": 1,    # isa.Dataflow: 0 WS, 1 OS
    "precision": 1,   # isa.Precision: 0 INT8, 1 INT4
    "sel": 1,         # stationary register in use by this beat's tile
    "first": 1,       # OS: first K step of the tile
})

assert Dataflow.WS == 0 and Dataflow.OS == 1 and Precision.INT8 == 0 and Precision.INT4 == 1


class PE(wiring.Component):
    """One processing element (see the module docstring)."""

    def __init__(self, acc_width=32, int4=True, dsp=None):
        self._acc_width = acc_width
        self._int4 = int4
        self._dsp = dsp
        super().__init__({
            "a_in": In(signed(8)),
            "b_in": In(signed(8)),
            "d_in": In(signed(acc_width)),
            "psum_in": In(signed(acc_width)),
            "ctrl_in": In(Control),
            "a_next": In(signed(8)),
            "b_next": In(signed(8)),
            "ctrl_next": In(Control),
            "a_out": Out(signed(8)),
            "b_out": Out(signed(8)),
            "d_out": Out(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
            "ctrl_out": Out(Control),
        })

    def elaborate(self, platform):
        from .mac import MAC

        m = Module()
        W = self._acc_width
        m.submodules.mac = mac = MAC(W, self._int4, self._dsp)
        c = [Signal(signed(W), name=f"c{i}") for i in range(2)]
        ci, cq, cn = self.ctrl_in, self.ctrl_out, self.ctrl_next

        # stage 0: operands of the next beat
        bypass = ci.shift & (ci.sel != cn.sel)       # this cycle's shift writes c[!sel_now] = c[sel_next]
        weight = Mux(bypass, self.d_in[0:8], Mux(cn.sel, c[1], c[0])[0:8]).as_signed()
        m.d.comb += [
            mac.a.eq(self.a_next),
            mac.b.eq(Mux(cn.dataflow == Dataflow.OS, self.b_next, weight)),
            mac.int4.eq(cn.precision == Precision.INT4),
        ]

        # stage 1
        m.d.sync += [self.a_out.eq(self.a_in), self.b_out.eq(self.b_in), cq.eq(ci)]
        with m.If(ci.shift):
            with m.If(ci.sel):
                m.d.sync += [c[0].eq(self.d_in), self.d_out.eq(c[0])]
            with m.Else():
                m.d.sync += [c[1].eq(self.d_in), self.d_out.eq(c[1])]
        is_os = ci.dataflow == Dataflow.OS
        mask_c0, mask_c1, mask_psum = Signal(), Signal(), Signal()
        we_c0, we_c1, we_psum = Signal(), Signal(), Signal()
        m.d.sync += [
            mask_c0.eq(is_os & ~ci.first & ~ci.sel), mask_c1.eq(is_os & ~ci.first & ci.sel), mask_psum.eq(~is_os),
            we_c0.eq(ci.compute & is_os & ~ci.sel), we_c1.eq(ci.compute & is_os & ci.sel),
            we_psum.eq(ci.compute & ~is_os),
        ]

        # stage 2
        m.d.comb += mac.addend.eq((c[0] & mask_c0.replicate(W)) | (c[1] & mask_c1.replicate(W))
                                  | (self.psum_in & mask_psum.replicate(W)))
        with m.If(we_psum):
            m.d.sync += self.psum_out.eq(mac.sum)
        with m.If(we_c0):
            m.d.sync += c[0].eq(mac.sum)
        with m.If(we_c1):
            m.d.sync += c[1].eq(mac.sum)
        return m
