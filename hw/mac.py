"""The multiply-accumulate unit of one PE: signed INT8 x INT8, or two signed INT4 x INT4 products on the same
multiplier, added to a wide value.

One multiplier serves every mode and dataflow. In INT8 mode it computes ``a * b``. In INT4 mode each 8-bit lane
packs two signed INT4 values (low nibble = even k, high nibble = odd k, see :mod:`cdmqta.hw.isa`), and the MAC
computes ``a_lo*b_lo + a_hi*b_hi`` with the same multiplier by packing the operands with 8 guard bits
(the classic two-products-per-DSP trick) with 9 guard bits::

    A' = a_hi * 2**9 + a_lo          B' = b_lo * 2**9 + b_hi           (14-bit signed each)
    A' * B' = a_hi*b_lo * 2**18 + (a_lo*b_lo + a_hi*b_hi) * 2**9 + a_lo*b_hi

The low term lies in [-56, 64], so ``((A'*B' + 2**8) >> 9) mod 2**9`` read as a signed 9-bit number is exactly the
dot product (range [-112, 128], 9 bits; the high term only touches bits >= 18). A 14x14 signed multiply fits one
ECP5 MULT18X18D, so one DSP gives one INT8 MAC or two INT4 MACs per cycle.

Timing (latency 1): ``a``, ``b``, ``int4`` are sampled at a clock edge into the registered product (the DSP's
output register); during the NEXT cycle ``sum = addend + product`` is combinational, and the PE registers it.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAC"]


class MAC(wiring.Component):
    """``sum`` (cycle t+1) = ``addend`` (cycle t+1) + product of (``a``, ``b``, ``int4``) sampled at cycle t.

    acc_width -- width of ``addend`` / ``sum`` (two's complement, wraps).
    int4      -- build the INT4 mode; without it the multiplier is a plain 8x8 and ``int4`` is ignored.
    """

    def __init__(self, acc_width=32, int4=True):
        self._acc_width = acc_width
        self._int4 = int4
        super().__init__({
            "a": In(signed(8)),
            "b": In(signed(8)),
            "int4": In(1),
            "addend": In(signed(acc_width)),
            "sum": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        value = Signal(signed(16))
        if self._int4:
            a_lo, a_hi = self.a[0:4].as_signed(), self.a[4:8].as_signed()
            b_lo, b_hi = self.b[0:4].as_signed(), self.b[4:8].as_signed()
            op_a = Signal(signed(14))
            op_b = Signal(signed(14))
            with m.If(self.int4):
                m.d.comb += [op_a.eq((a_hi << 9) + a_lo), op_b.eq((b_lo << 9) + b_hi)]
            with m.Else():
                m.d.comb += [op_a.eq(self.a), op_b.eq(self.b)]
            product = Signal(signed(28))
            int4_q = Signal()
            m.d.sync += [product.eq(op_a * op_b), int4_q.eq(self.int4)]
            dot = (product + (1 << 8))[9:18].as_signed()
            m.d.comb += value.eq(Mux(int4_q, dot, product[0:16].as_signed()))
        else:
            product = Signal(signed(16))
            m.d.sync += product.eq(self.a * self.b)
            m.d.comb += value.eq(product)
        m.d.comb += self.sum.eq(self.addend + value)
        return m
