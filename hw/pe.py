"""One processing element of the systolic array: a shared MAC, two stationary registers, a shift chain.

The control of a beat (:data:`Control`) travels down the column with the beat's north data, registered in every
PE, so each PE acts on the beat's own dataflow / precision / buffer select (Gemmini ``PEControl`` style). The
array docstring (:mod:`cdmqta.hw.array`) states the protocol; here is what one PE does with a beat that reaches
it (its ``*_in`` inputs) in cycle T:

stage 0 (cycle T-1, from ``*_next`` = what ``*_in`` will hold in cycle T, i.e. the neighbours' inputs): the MAC
  operands are selected and registered (the DSP's input registers, so no logic precedes the multiplier):
  ``a_next`` and, OS: ``b_next``; WS: the weight ``c[sel][7:0]`` -- bypassed from ``d_in`` when a shift in cycle
  T-1 writes that very register (the last preload shift right before the tile's first compute beat). INT4: in their
  packed 14-bit forms, built from the lanes and their high fields (``*_p``, 5 bits: computed at the array's edge,
  carried beside ``a``, ``b``, ``d`` and the stationary registers; a PE built without ``edge_fields`` computes
  them from its ports).
stage 1 (cycle T, from ``ctrl_in``): the multiply (product register);
  ``shift``: ``c[!sel] <= d_in``, ``d_out <= c[!sel]`` (old value): the preload / drain chain;
  ``a_out <= a_in``, ``b_out <= b_in``, ``ctrl_out <= ctrl_in``; the stage-2 write enables are decoded here
  into registers; OS ``first``: ``c[sel] <= 0`` (the tile's register starts from zero).
stage 2 (cycle T+1, the same beat one cycle later):
  WS compute: ``psum_out <= psum_in + product`` (``psum_in`` = the PE above's ``psum_out``; 0 at the top).
  OS compute: ``c[sel] <= c[sel] + product``.
Each target has its own adder on the same product (MAC ``adders=3``: psum, c0, c1), so no select or mask precedes
any adder: a register, the carry chain and the write-enable mux make up the OS accumulate loop.
The control registers (``ctrl_out``, write enables) carry ``keep``: every PE on an anti-diagonal holds the
same values, and without it synthesis merges them into one register that drives PEs across the whole chip.
Output latency: a_out / b_out / ctrl_out / d_out: 1 cycle, psum_out: 2 cycles.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
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

    def __init__(self, acc_width=32, int4=True, dsp=None, top_row=True, edge_fields=False):
        self._top_row = top_row
        self._edge_fields = edge_fields
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
            "ctrl_nn": In(Control),
            "a_in_p": In(5),
            "a_next_p": In(5),
            "b_in_p": In(5),
            "b_next_p": In(5),
            "d_in_p": In(5),
            "bsel_in": In(3),
            "clr_in": In(2),
            "a_out": Out(signed(8)),
            "b_out": Out(signed(8)),
            "d_out": Out(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
            "ctrl_out": Out(Control),
            "a_out_p": Out(5),
            "b_out_p": Out(5),
            "d_out_p": Out(5),
            "bsel_out": Out(3),
            "clr_out": Out(2),
        })

    def elaborate(self, platform):
        from .mac import MAC, a_hi_field, b_hi_field, pack_a, pack_b

        m = Module()
        W = self._acc_width
        m.submodules.mac = mac = MAC(W, self._int4, self._dsp, adders=3, packed=True)
        c = [Signal(signed(W), name=f"c{i}") for i in range(2)]
        ci, cq, cn = self.ctrl_in, self.ctrl_out, self.ctrl_next

        # stage 0: operands of the next beat. The B operand is one of b_next (OS), d_in (WS, bypass: this cycle's
        # shift writes c[!sel_now] = c[sel_next]), c1 or c0 (WS), in the next beat's precision: with INT4, the
        # multiplier's 14-bit operand (mac.pack_b) of the chosen lane, whose high field (b_lo - (b_hi < 0), an adder)
        # each source carries beside it in registers (``*_p``: computed at the array's edge and shifted along with
        # the lane), so that one multiplexer, and no adder, lies between registers and the DSP's B input.
        def decode(prev, nxt):
            os_ = nxt.dataflow == Dataflow.OS
            byp = ~os_ & prev.shift & (prev.sel != nxt.sel)
            # source index: 0 b_next, 1 d_in, 2 c1, 3 c0; then the precision
            return [~os_ & (byp | ~nxt.sel), ~os_ & ~byp, nxt.precision == Precision.INT4]

        # The selects live in registers (reset values = decode of the reset state). A top-row PE decodes them a cycle
        # early from ``ctrl_nn`` (what ``ctrl_next`` holds next cycle); below, they only depend on the beat pair,
        # which reached the PE above one cycle earlier: copy its registers (``bsel_in``), a register-to-register hop
        # between neighbours.
        sel_b = [Signal(name=n, init=v, attrs={"keep": 1})
                 for n, v in (("bsel_src0", 1), ("bsel_src1", 1), ("bsel_int4", 0))]
        nxt_sel = decode(cn, self.ctrl_nn) if self._top_row else [self.bsel_in[k] for k in range(3)]
        m.d.sync += [r.eq(v) for r, v in zip(sel_b, nxt_sel)]
        m.d.comb += self.bsel_out.eq(Cat(*sel_b))
        c_p = [Signal(5, name=f"c{i}_p") for i in range(2)]   # the INT4 high field of c[i][0:8]
        if self._edge_fields:
            b_next_p, d_in_p, b_in_p = self.b_next_p, self.d_in_p, self.b_in_p
            a_next_p, a_in_p = self.a_next_p, self.a_in_p
        else:   # a PE on its own: the fields from the ports, combinationally
            b_next_p, d_in_p, b_in_p = (b_hi_field(v) for v in (self.b_next, self.d_in, self.b_in))
            a_next_p, a_in_p = a_hi_field(self.a_next), a_hi_field(self.a_in)
        srcs = [(self.b_next, b_next_p), (self.d_in[0:8], d_in_p), (c[1][0:8], c_p[1]), (c[0][0:8], c_p[0])]
        if self._int4:
            operand_b = Signal(signed(14))
            forms = [[pack_b(v, p, int4) for v, p in srcs] for int4 in (False, True)]
            bits = []
            for i in range(14):
                f8, f4 = ([Mux(sel_b[0], f[1][i], f[0][i]), Mux(sel_b[0], f[3][i], f[2][i])] for f in forms)
                bits.append(Mux(sel_b[2], Mux(sel_b[1], f4[1], f4[0]), Mux(sel_b[1], f8[1], f8[0])))
            m.d.comb += operand_b.eq(Cat(*bits))
            operand_a = Signal(signed(14))
            m.d.comb += operand_a.eq(Cat(*(Mux(sel_b[2], x4, x8) for x8, x4 in zip(
                pack_a(self.a_next, a_next_p, False), pack_a(self.a_next, a_next_p, True)))))
        else:
            operand_a = self.a_next
            operand_b = Signal(signed(8))
            m.d.comb += operand_b.eq(Mux(sel_b[1], Mux(sel_b[0], srcs[3][0], srcs[2][0]),
                                         Mux(sel_b[0], srcs[1][0], srcs[0][0])))
        m.d.comb += [
            mac.a.eq(operand_a),
            mac.b.eq(operand_b),
            mac.int4.eq(sel_b[2]),
        ]

        # stage 1. The control registers of a PE hold the same values as those of every PE on its anti-diagonal
        # (i + j): ``keep`` gives each PE its own copies (cdmqta.synth marks the flip-flops behind keep wires so
        # that synthesis does not merge them into one register driving PEs all over the chip).
        ctrl_q = Signal(Control, attrs={"keep": 1})
        m.d.comb += cq.eq(ctrl_q)
        m.d.sync += [self.a_out.eq(self.a_in), self.b_out.eq(self.b_in), self.b_out_p.eq(b_in_p),
                     self.a_out_p.eq(a_in_p), ctrl_q.eq(ci)]
        with m.If(ci.shift):   # the INT4 field travels with the lane's low byte (c_p[k] is stale after OS writes)
            with m.If(ci.sel):
                m.d.sync += [c[0].eq(self.d_in), self.d_out.eq(c[0]), c_p[0].eq(d_in_p), self.d_out_p.eq(c_p[0])]
            with m.Else():
                m.d.sync += [c[1].eq(self.d_in), self.d_out.eq(c[1]), c_p[1].eq(d_in_p), self.d_out_p.eq(c_p[1])]
        is_os = ci.dataflow == Dataflow.OS
        # OS ``first``: the tile's register is cleared at the end of this stage, so that stage 2 always adds to it
        # and no addend select sits in front of the adder. Safe: the register's previous tile was drained before
        # this beat (H3), and no other write reaches it in this cycle (the beat before belongs to a tile of the
        # other ``sel``; a shift writes c[!sel]). The clear lives in a register per stationary register, set a cycle
        # ahead: decoded from ``ctrl_next`` in the top row, copied from the PE above elsewhere (like the B selects).
        # It is written last below (priority over the other writes, which it never meets), so that it maps onto the
        # flip-flops' synchronous reset instead of a LUT in front of them. (One copy per byte shortens the reset
        # nets but makes Verilator simulate the array about 25 % slower: partial-register writes.)
        os_first = cn.compute & (cn.dataflow == Dataflow.OS) & cn.first
        clears = [Signal(name=f"clr_c{k}", attrs={"keep": 1}) for k in range(2)]
        for k, clr in enumerate(clears):
            m.d.sync += clr.eq((os_first & (cn.sel == k)) if self._top_row else self.clr_in[k])
        m.d.comb += self.clr_out.eq(Cat(*clears))
        we_c0, we_c1, we_psum = (Signal(name=n, attrs={"keep": 1}) for n in ("we_c0", "we_c1", "we_psum"))
        m.d.sync += [
            we_c0.eq(ci.compute & is_os & ~ci.sel), we_c1.eq(ci.compute & is_os & ci.sel),
            we_psum.eq(ci.compute & ~is_os),
        ]

        # stage 2: three adders on the same product, so that nothing precedes any of them: WS psum_in + product,
        # OS c0 + product, OS c1 + product
        m.d.comb += [mac.addend.eq(self.psum_in), mac.addend2.eq(c[0]), mac.addend3.eq(c[1])]
        with m.If(we_psum):
            m.d.sync += self.psum_out.eq(mac.sum)
        with m.If(we_c0):
            m.d.sync += c[0].eq(mac.sum2)
        with m.If(we_c1):
            m.d.sync += c[1].eq(mac.sum3)
        for clr, creg in zip(clears, c):
            with m.If(clr):
                m.d.sync += creg.eq(0)
        return m
