"""Requantization epilogue: one accumulator row in, one formatted host word out, every cycle.

Per lane c of a row (``cols`` lanes of ``acc_width`` bits), exactly as the golden model's
``cdmqta.sw.model.requant.requantize``:

    INT32 out:  the low 32 bits of the accumulator (pass-through; weight gradients go to the host).
    INT8/INT4:  p = acc * mult;  nearest-even: q = round_half_even(p / 2**shift)
                                 stochastic:   q = floor((p + r) / 2**shift), r = (h * 2**shift) >> 32,
                                               h = sr_hash(seed, i, j)
                q = clamp(q, -lim, lim), lim = 127 (INT8) or 7 (INT4)

(i, j) are the element's coordinates in the logical output matrix: the row carries ``row`` (= origin_row + row
offset of the store), lane c has column ``origin_col + c``; with ``transposed`` the pair is swapped before
hashing (the accumulator tile holds C^T).

Output word format (one host word, ``32 * lanes`` bits, see :mod:`cdmqta.hw.isa`): INT32 puts lane c at bits
[32c+31:32c]; INT8/INT4 put the sign-extended 8-bit value of lane c at bits [8c+7:8c] and zeros above
``8 * lanes``. Lanes >= cols are zero.

Handshake and latency: a valid-only pipeline, no back-pressure. ``i_valid`` with its payload (``i_acc``,
``i_row``, ``i_cfg``, ``i_tag``) at cycle t gives ``o_valid`` with ``o_word`` and the unchanged ``o_tag`` at
cycle t + :attr:`Epilogue.LATENCY` (4). One row per cycle; the configuration travels with each row, so
consecutive stores with different settings can follow each other back to back. Stages (all registered):
1) p = acc*mult and the first hash round; 2) the two remaining hash rounds and r; 3) rounding and shift;
4) saturation and formatting.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .isa import AMAX_SLOT_BITS, MULT_BITS, SHIFT_MAX, SR_ROUNDS, SR_SHIFTS, SR_WEYL, OutFormat, Rounding

__all__ = ["Epilogue", "EpilogueConfig"]

EpilogueConfig = data.StructLayout({
    "out": 2,            # hw.isa.OutFormat
    "transposed": 1,
    "origin_col": 16,
    "mult": MULT_BITS,
    "shift": 6,
    "rounding": 1,       # hw.isa.Rounding
    "seed": 32,
    "amax_slot": AMAX_SLOT_BITS,     # the amax register the row updates (used by the store unit, not here)
})


def _xorshift_weyl(x):
    """One round of the stochastic-rounding hash (:data:`cdmqta.hw.isa.SR_SHIFTS`, ``SR_WEYL``) on a 32-bit
    unsigned value (combinational)."""
    a, b, c = SR_SHIFTS
    x = x ^ (x << a)[:32]
    x = x ^ (x >> b)
    x = x ^ (x << c)[:32]
    return (x + SR_WEYL)[:32]


class Epilogue(wiring.Component):
    """INT32 pass-through or requantization of an accumulator row; see the module docstring.

    Parameters: ``cols`` lanes, ``acc_width`` bits per lane, ``lanes`` (host word = 32*lanes bits),
    ``tag_width`` bits of opaque tag carried alongside (the store unit passes the host address).
    """

    LATENCY = 4

    def __init__(self, *, cols, acc_width, lanes, tag_width=32):
        if lanes < cols:
            raise ValueError(f"lanes={lanes} must be >= cols={cols}")
        self._cols, self._acc_width, self._lanes = cols, acc_width, lanes
        super().__init__({
            "i_valid": In(1),
            "i_acc": In(data.ArrayLayout(signed(acc_width), cols)),
            "i_row": In(16),
            "i_cfg": In(EpilogueConfig),
            "i_tag": In(tag_width),
            "o_valid": Out(1),
            "o_word": Out(32 * lanes),
            "o_tag": Out(tag_width),
        })

    def elaborate(self, platform):
        m = Module()
        cols, aw = self._cols, self._acc_width
        n_stages = self.LATENCY

        valid = [Signal(name=f"valid{s}") for s in range(n_stages)]
        cfg = [Signal(EpilogueConfig, name=f"cfg{s}") for s in range(n_stages)]
        tag = [Signal.like(self.i_tag, name=f"tag{s}") for s in range(n_stages)]
        m.d.sync += [valid[0].eq(self.i_valid), cfg[0].eq(self.i_cfg), tag[0].eq(self.i_tag)]
        for s in range(1, n_stages):
            m.d.sync += [valid[s].eq(valid[s - 1]), cfg[s].eq(cfg[s - 1]), tag[s].eq(tag[s - 1])]
        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_tag.eq(tag[-1])]

        p_width = aw + MULT_BITS + 1
        word = []
        for c in range(cols):
            # Stage 1: product and first hash round.
            acc1 = Signal(signed(aw), name=f"acc1_{c}")
            p1 = Signal(signed(p_width), name=f"p1_{c}")
            x1 = Signal(32, name=f"x1_{c}")
            i_coord = self.i_row
            j_coord = (self.i_cfg.origin_col + c)[:16]
            coord = Mux(self.i_cfg.transposed, Cat(i_coord, j_coord), Cat(j_coord, i_coord))
            m.d.sync += [
                acc1.eq(self.i_acc[c]),
                p1.eq(self.i_acc[c] * self.i_cfg.mult),
                x1.eq(_xorshift_weyl(self.i_cfg.seed ^ coord)),
            ]
            # Stage 2: remaining hash rounds, r = (h << shift) >> 32.
            acc2 = Signal(signed(aw), name=f"acc2_{c}")
            p2 = Signal(signed(p_width), name=f"p2_{c}")
            r2 = Signal(SHIFT_MAX, name=f"r2_{c}")
            h = x1
            for _ in range(SR_ROUNDS - 1):
                h = _xorshift_weyl(h)
            m.d.sync += [acc2.eq(acc1), p2.eq(p1), r2.eq((h << cfg[0].shift) >> 32)]
            # Stage 3: rounding and shift.
            acc3 = Signal(signed(aw), name=f"acc3_{c}")
            q3 = Signal(signed(p_width + 1), name=f"q3_{c}")
            shift = cfg[1].shift
            floor_q = p2 >> shift
            rem = (p2.as_unsigned() & ((Const(1, 49) << shift) - 1))[:48]
            half = (Const(1, 49) << shift) >> 1
            round_up = (shift != 0) & ((rem > half) | ((rem == half) & floor_q[0]))
            nearest = floor_q + round_up
            stochastic = (p2 + r2) >> shift
            m.d.sync += [
                acc3.eq(acc2),
                q3.eq(Mux(cfg[1].rounding == Rounding.STOCHASTIC, stochastic, nearest)),
            ]
            # Stage 4: saturation and formatting.
            lim = Mux(cfg[2].out == OutFormat.INT4, 7, 127)
            sat = Mux(q3 > lim, lim, Mux(q3 < -lim, -lim, q3))
            out_c = Signal(32, name=f"out4_{c}")
            m.d.sync += out_c.eq(Mux(cfg[2].out == OutFormat.INT32, acc3[:32], sat[:8]))
            word.append(out_c)

        # Formatting is wiring only: INT32 lanes at 32c, byte lanes at 8c.
        int32_word = Cat(*word)
        byte_word = Cat(*(w[:8] for w in word))
        m.d.comb += self.o_word.eq(Mux(cfg[3].out == OutFormat.INT32, int32_word, byte_word))
        return m
