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

ECP5 builds (``dsp`` "ecp5" / "ecp5-fp") of the INT4 mode fold the INT4/INT8 value select into the accumulate
adders: each adder is a chain of CCU2C carry cells whose LUT4s compute ``addend ^ (int4 ? int4_value : int8_value)``
as the propagate signal (the carry generate, ``INIT[3:0]``, is ``addend``), and an extra first half produces the
rounding carry ``int4 & P[8]``, so no LUT lies between the product registers and the carry chain (:func:`select_add`).

``packed``: the caller gives ``a`` and ``b`` as the multiplier's operands already in the beat's form
(:func:`pack_a` / :func:`pack_b`: sign-extended in INT8, ``a_hi * 2**9 + a_lo`` / ``b_lo * 2**9 + b_hi`` in INT4;
14 bits), so that the PE can build them from pre-computed fields (no adder behind its operand selects):
:func:`a_hi_field` / :func:`b_hi_field` give the 5 high bits of the INT4 forms, the only bits that need an adder.
"""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, ResetSignal, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAC", "DSP_KINDS", "a_hi_field", "b_hi_field", "pack_a", "pack_b", "select_add"]

#: ``dsp`` choices: None = generic ``*``; "ecp5" = MULT18X18D with input and output registers; "ecp5-fp" =
#: MULT18X18D with input registers only and the product register in the fabric (one copy next to each adder).
DSP_KINDS = (None, "ecp5", "ecp5-fp")


def a_hi_field(a):
    """The bits [9:14] of the INT4 form of the 8-bit lane ``a``: ``a_hi - (a_lo < 0)`` (5 bits, signed)."""
    return (a[4:8].as_signed() - a[3])[0:5]


def pack_a(a, hi_field, int4):
    """The 14-bit A operand of lane ``a``: INT4 ``a_hi * 2**9 + a_lo`` from ``hi_field`` (= :func:`a_hi_field`),
    else ``a`` sign-extended. A list of bits."""
    if int4:
        return [a[i] for i in range(4)] + [a[3]] * 5 + [hi_field[i] for i in range(5)]
    return [a[i] for i in range(8)] + [a[7]] * 6


def b_hi_field(b):
    """The bits [9:14] of the INT4 form of the 8-bit lane ``b``: ``b_lo - (b_hi < 0)`` (5 bits, signed)."""
    return (b[0:4].as_signed() - b[7])[0:5]


def pack_b(b, hi_field, int4):
    """The 14-bit B operand of lane ``b`` (8 bits): INT4 (``int4`` true) ``b_lo * 2**9 + b_hi`` from ``hi_field``
    (= :func:`b_hi_field` of ``b``, possibly computed earlier), else ``b`` sign-extended. A list of bits."""
    int8 = [b[i] for i in range(8)] + [b[7]] * 6
    int4_ = [b[4 + i] for i in range(4)] + [b[7]] * 5 + [hi_field[i] for i in range(5)]
    return int4_ if int4 else int8


def select_add(m, name, addend, int8_value, int4_value, sel, carry):
    """``addend + (sel ? int4_value + carry : int8_value)`` (``len(addend)`` bits, wrapping) as one chain of ECP5
    CCU2C cells with the select inside the carry cells' LUT4s (``int8_value`` / ``int4_value``: lists of
    ``len(addend)`` bits). Half 0 only generates the carry ``sel & carry`` (propagate 0); half k+1 is bit k:
    A = addend, B = sel, C = int8 bit, D = int4 bit, propagate = A ^ (B ? D : C), generate (INIT[3:0], the LUT4
    at C = D = 0) = A, which is the carry whenever the propagate is 0. Returns the sum (a Signal)."""
    width = len(addend)
    total = Signal(width, name=f"{name}_sum")
    prop = sum(1 << i for i in range(16) if ((i >> 0) & 1) ^ ((i >> 3) & 1 if (i >> 1) & 1 else (i >> 2) & 1))
    halves = [(carry, sel, 0, 1, 0x0008, None)]                        # A & B at C = D = 0, propagate 0 at D = 1
    halves += [(addend[k], sel, int8_value[k], int4_value[k], prop, total[k]) for k in range(width)]
    if len(halves) % 2:
        halves.append((0, 0, 0, 0, 0, None))
    cin = 0
    for c in range(len(halves) // 2):
        ports = {"p_INJECT1_0": "NO", "p_INJECT1_1": "NO", "i_CIN": cin}
        for h in range(2):
            a, b, c_, d, init, s = halves[2 * c + h]
            ports |= {f"p_INIT{h}": init, f"i_A{h}": a, f"i_B{h}": b, f"i_C{h}": c_, f"i_D{h}": d}
            ports[f"o_S{h}"] = s if s is not None else Signal(name=f"{name}_nc{2 * c + h}")
        cout = Signal(name=f"{name}_co{c}")
        ports["o_COUT"] = cout
        m.submodules[f"{name}_cc{c}"] = Instance("CCU2C", **ports)
        cin = cout
    return total


class MAC(wiring.Component):
    """``sum`` (cycle t+1) = ``addend`` (cycle t+1) + product of (``a``, ``b``, ``int4``) given in cycle t-1.

    acc_width -- width of ``addend`` / ``sum`` (two's complement, wraps).
    int4      -- build the INT4 mode; without it the multiplier is a plain 8x8 and ``int4`` is ignored.
    adders    -- 2 or 3: more adders on the same product in the same cycle, ``sum2 = addend2 + product`` (and
                 ``sum3 = addend3 + product``), so that a PE can give each of its accumulation targets its own
                 adder instead of selecting the addend in front of one.
    dsp       -- None: a generic ``*`` between registers (simulators; yosys maps it to a DSP but keeps the
                 registers in the fabric); "ecp5": instantiate MULT18X18D with its own input and output
                 registers (same cycle behaviour, no fabric routing around the multiplier; synthesis only:
                 simulators have no model of the primitive; cdmqta.synth.equiv checks it against the generic
                 MAC with a model); "ecp5-fp": MULT18X18D with its input registers, the product register in the
                 fabric, one copy per adder (same cycle behaviour; the DSP -> fabric route moves into the multiply
                 stage); with ``int4``, the adders are CCU2C chains with the INT4/INT8 select inside
                 (:func:`select_add`; simulate with yosys' ECP5 cell models, see cdmqta.synth.equiv).
    packed    -- ``a`` / ``b`` are the 14-bit operands already in the beat's form (:func:`pack_a`, :func:`pack_b`;
                 INT4 builds only; ``int4`` then only steers the accumulate).
    """

    def __init__(self, acc_width=32, int4=True, dsp=None, adders=1, packed=False):
        if dsp not in DSP_KINDS:
            raise ValueError(f"dsp={dsp!r}: expected one of {', '.join(map(repr, DSP_KINDS))}")
        if adders not in (1, 2, 3):
            raise ValueError(f"adders={adders!r}: expected 1, 2 or 3")
        self._acc_width = acc_width
        self._int4 = int4
        self._dsp = dsp
        self._adders = adders
        self._packed = packed and int4
        ports = {
            "a": In(signed(14 if self._packed else 8)),
            "b": In(signed(14 if self._packed else 8)),
            "int4": In(1),
            "addend": In(signed(acc_width)),
            "sum": Out(signed(acc_width)),
        }
        for k in range(2, adders + 1):
            ports |= {f"addend{k}": In(signed(acc_width)), f"sum{k}": Out(signed(acc_width))}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        width = 14 if self._int4 else 8
        op_a = Signal(signed(width))
        op_b = Signal(signed(width))
        product = Signal(signed(2 * width))
        products = [product] * self._adders     # the product register each adder reads
        int4_op = Signal(attrs={"keep": 1})     # per-PE copies (see the PE's control registers)
        fused = self._int4 and self._dsp in ("ecp5", "ecp5-fp")
        # the accumulate-side select: one copy per adder in the ECP5 build (each drives one carry chain)
        int4_qs = [Signal(name="int4_q" if k == 0 else f"int4_q{k + 1}", attrs={"keep": 1})
                   for k in range(self._adders if fused else 1)]
        int4_q = int4_qs[0]
        # operands: packed combinationally, registered (in the DSP when dsp="ecp5")
        pack_a, pack_b = Signal(signed(width)), Signal(signed(width))
        if self._int4:
            a_lo, a_hi = self.a[0:4].as_signed(), self.a[4:8].as_signed()
            b_lo, b_hi = self.b[0:4].as_signed(), self.b[4:8].as_signed()
            if self._packed:
                m.d.comb += [pack_a.eq(self.a), pack_b.eq(self.b)]
            else:
                with m.If(self.int4):
                    m.d.comb += [pack_a.eq((a_hi << 9) + a_lo), pack_b.eq((b_lo << 9) + b_hi)]
                with m.Else():
                    m.d.comb += [pack_a.eq(self.a), pack_b.eq(self.b)]
            m.d.sync += [int4_op.eq(self.int4)] + [q.eq(int4_op) for q in int4_qs]
        else:
            m.d.comb += [pack_a.eq(self.a), pack_b.eq(self.b)]
        if self._dsp in ("ecp5", "ecp5-fp"):
            p = Signal(36)
            ext_a = Cat(pack_a, pack_a[width - 1].replicate(18 - width))
            ext_b = Cat(pack_b, pack_b[width - 1].replicate(18 - width))
            ports = {f"i_A{i}": ext_a[i] for i in range(18)}
            ports |= {f"i_B{i}": ext_b[i] for i in range(18)}
            ports |= {f"i_C{i}": 0 for i in range(18)}
            ports |= {"i_SIGNEDA": 1, "i_SIGNEDB": 1, "i_SOURCEA": 0, "i_SOURCEB": 0,
                      "i_CLK0": ClockSignal(), "i_CLK1": 0, "i_CLK2": 0, "i_CLK3": 0,
                      "i_CE0": 1, "i_CE1": 1, "i_CE2": 1, "i_CE3": 1,
                      # the sync domain's reset clears the DSP's registers like the generic ones (RESETMODE SYNC)
                      "i_RST0": ResetSignal(), "i_RST1": 0, "i_RST2": 0, "i_RST3": 0}
            ports |= {f"o_P{i}": p[i] for i in range(36)}
            out_reg = "CLK0" if self._dsp == "ecp5" else "NONE"
            m.submodules.mult = Instance("MULT18X18D", p_GSR="DISABLED", p_REG_INPUTA_CLK="CLK0",
                                         p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK=out_reg, **ports)
            if self._dsp == "ecp5":
                m.d.comb += product.eq(p[:2 * width])
            elif self._adders == 1:
                m.d.sync += product.eq(p[:2 * width])
            else:
                # one fabric product register per adder (``keep``: not merged), so that each sits at the head of its
                # adder's carry chain and the route from the DSP's output has a cycle of its own; one register
                # feeding three 32-bit chains stayed near the DSP and its route to the chains was most of the
                # 8x8 critical path. No reset on them: yosys leaves the reset of a ``keep`` flip-flop as a LUT in front
                # of it, which sat on the DSP -> register path (the 4x4 INT4 critical path); the products a reset
                # leaves in them are never accumulated (the PE's write enables are reset), only ``sum`` differs from
                # the generic MAC, in the one cycle after a reset.
                products = [Signal(signed(2 * width), name=f"product{k}", attrs={"keep": 1}, reset_less=True)
                            for k in range(1, self._adders + 1)]
                m.d.sync += [q.eq(p[:2 * width]) for q in products]
        else:
            m.d.sync += [op_a.eq(pack_a), op_b.eq(pack_b), product.eq(op_a * op_b)]
        sums = [(self.addend, self.sum)] + [(getattr(self, f"addend{k}"), getattr(self, f"sum{k}"))
                                            for k in range(2, self._adders + 1)]
        for k, (prod, (addend, total)) in enumerate(zip(products, sums)):
            if fused:
                W = self._acc_width
                int8_bits = [prod[min(i, 15)] for i in range(W)]
                int4_bits = [prod[min(9 + i, 17)] for i in range(W)]
                m.d.comb += total.eq(select_add(m, f"acc{k + 1}", addend, int8_bits, int4_bits,
                                                int4_qs[k], prod[8]))
                continue
            if self._int4:
                value = Mux(int4_q, prod[9:18].as_signed(), prod[0:16].as_signed())
                carry = int4_q & prod[8]
            else:
                value, carry = prod[0:16].as_signed(), None
            m.d.comb += total.eq(addend + value if carry is None else addend + value + carry)
        return m
