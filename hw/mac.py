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

Timing: ``a``, ``b``, ``int4`` are the operands of the NEXT cycle's multiply: they are packed into operand
registers (the DSP's input registers) at the clock edge ending cycle t-1, multiplied into the product register
(the DSP's output register) at the edge ending cycle t, and during cycle t+1 ``sum = addend + product`` is
combinational (the PE registers it). The INT4 rounding constant enters the final adder as a carry-in
(``dot = P[9:18] + P[8]``), so no adder sits between the DSP and the accumulator adder.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAC"]


class MAC(wiring.Component):
    """``sum`` (cycle t+1) = ``addend`` (cycle t+1) + product of (``a``, ``b``, ``int4``) given in cycle t-1.

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
        width = 14 if self._int4 else 8
        op_a = Signal(signed(width))
        op_b = Signal(signed(width))
        product = Signal(signed(2 * width))
        int4_op = Signal()
        int4_q = Signal()
        if self._int4:
            a_lo, a_hi = self.a[0:4].as_signed(), self.a[4:8].as_signed()
            b_lo, b_hi = self.b[0:4].as_signed(), self.b[4:8].as_signed()
            with m.If(self.int4):
                m.d.sync += [op_a.eq((a_hi << 9) + a_lo), op_b.eq((b_lo << 9) + b_hi)]
            with m.Else():
                m.d.sync += [op_a.eq(self.a), op_b.eq(self.b)]
            m.d.sync += [int4_op.eq(self.int4), int4_q.eq(int4_op)]
        else:
            m.d.sync += [op_a.eq(self.a), op_b.eq(self.b)]
        m.d.sync += product.eq(op_a * op_b)
        if self._int4:
            value = Mux(int4_q, product[9:18].as_signed(), product[0:16].as_signed())
            m.d.comb += self.sum.eq(self.addend + value + (int4_q & product[8]))
        else:
            m.d.comb += self.sum.eq(self.addend + product[0:16].as_signed())
        return m
