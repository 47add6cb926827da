"""A narrow host link around a wide design, so that place-and-route measures the design and not its pins.

The systolic array has far more ports than an FPGA package has pins (an 8x8 INT8 array alone has hundreds of
input and thousands of output bits). :class:`HostLinkWrapper` gives any Amaranth component a pin budget of
``2 * link_width + 2`` signals plus clock and reset:

* **Inputs**: every input bit of the design is driven by its own flip-flop of a shift chain that a
  ``link_width``-bit host port fills ``link_width`` bits per cycle while ``shift_en`` is high.
* **Outputs**: every output bit of the design is registered, then folded into ``link_width`` bits by a pipelined
  XOR tree (one 4-input XOR, i.e. one LUT4 level, per register stage), whose last stage drives the output pins.

Why synthesis cannot optimize the design away or shrink it:

* No input of the design is constant: each is a flip-flop whose value comes from a pin through the chain.
* No two inputs are provably equal: each has its own flip-flop (a chain stage is not equal to its neighbour in
  the same cycle). Sharing one source between inputs would let ``opt_merge`` merge PEs that then compute the
  same function (e.g. two PEs of a row fed the same weight), so the count would be too low.
* Every output bit is observable: an XOR tree changes its result when any single one of its inputs flips, so
  each output bit of the design is a function the netlist must keep. Only logic that is really redundant inside
  the design (constant or unread outputs, duplicated functions) can disappear, and then it should.

The wrapper's own cost is known exactly and is reported next to the results (:meth:`HostLinkWrapper.overhead`):
one FF per design input bit, one FF per design output bit, plus the XOR tree (about a third of a LUT4 and FF
per output bit). Every path it adds is one LUT level deep, so it never sets the critical path of a real design.
"""

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["HostLinkWrapper", "design_ports"]


def design_ports(component):
    """The component's ports as two lists of ``(name, value)``: inputs and outputs (names joined with ``.``);
    data views (struct / array layouts) are cast to plain values."""
    inputs, outputs = [], []
    for path, member, value in component.signature.flatten(component):
        name = ".".join(str(p) for p in path)
        (inputs if member.flow == In else outputs).append((name, Value.cast(value)))
    return inputs, outputs


class HostLinkWrapper(wiring.Component):
    """Wraps ``design`` (a :class:`wiring.Component`) behind a ``link_width``-bit shift-in / XOR-out host link.

    Ports: ``shift_in`` (``link_width`` bits) and ``shift_en`` fill the input chain; ``result`` is the XOR fold of
    all registered design outputs, ``1 + xor_stages`` cycles after they were produced. The design is added as
    submodule ``dut`` in the ``sync`` domain (its own domains are left as they are).
    """

    def __init__(self, design, *, link_width=8):
        self._MustUse__silence = True       # a rejected wrapper is not an unused one
        if not isinstance(design, wiring.Component):
            raise TypeError(f"design must be an amaranth wiring.Component, not {type(design).__name__}")
        if not 1 <= link_width <= 64:
            raise ValueError(f"link_width={link_width} is out of range: allowed [1, 64]")
        self._design = design
        self._link_width = link_width
        self._inputs, self._outputs = design_ports(design)
        if not self._outputs:
            raise ValueError("the design has no output port: nothing would be kept after synthesis")
        self._MustUse__silence = False
        super().__init__({
            "shift_in": In(link_width),
            "shift_en": In(1),
            "result": Out(link_width),
        })

    @property
    def in_bits(self):
        return sum(len(sig) for _, sig in self._inputs)

    @property
    def out_bits(self):
        return sum(len(sig) for _, sig in self._outputs)

    def _xor_stages(self):
        # Each stage XORs up to 4 words of link_width bits (one LUT4 per bit) and registers the result.
        words, stages = -(-self.out_bits // self._link_width), 0
        while words > 1:
            words, stages = -(-words // 4), stages + 1
        return stages

    def overhead(self):
        """Flip-flops the wrapper adds (exact, before synthesis) and pins it uses, to subtract or to report."""
        w = self._link_width
        words, xor_ffs = -(-self.out_bits // w), 0
        while words > 1:
            words = -(-words // 4)
            xor_ffs += words * w
        chain_ffs = -(-self.in_bits // w) * w
        return {
            "in_bits": self.in_bits,
            "out_bits": self.out_bits,
            "link_width": w,
            "ff": chain_ffs + self.out_bits + xor_ffs,
            "xor_stages": self._xor_stages(),
            "pins": 2 * w + 3,  # shift_in, result, shift_en, clk, rst
        }

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self._design
        w = self._link_width

        # Input chain: stage 0 takes the host word, stage i takes stage i-1.
        n_stages = max(1, -(-self.in_bits // w))
        chain = [Signal(w, name=f"chain{i}") for i in range(n_stages)]
        with m.If(self.shift_en):
            m.d.sync += chain[0].eq(self.shift_in)
            for prev, cur in zip(chain, chain[1:]):
                m.d.sync += cur.eq(prev)
        bits = Cat(*chain)
        offset = 0
        for _, sig in self._inputs:
            m.d.comb += sig.eq(bits[offset:offset + len(sig)])
            offset += len(sig)

        # Outputs: register every bit, then fold into link_width-bit words through a pipelined XOR tree.
        out_reg = Signal(self.out_bits, name="out_reg")
        m.d.sync += out_reg.eq(Cat(*(sig for _, sig in self._outputs)))
        words = [out_reg[i:i + w] for i in range(0, self.out_bits, w)]
        level = 0
        while len(words) > 1:
            folded = []
            for j in range(0, len(words), 4):
                group = words[j:j + 4]
                reg = Signal(w, name=f"xor{level}_{j // 4}")
                acc = group[0]
                for word in group[1:]:
                    acc = acc ^ word
                m.d.sync += reg.eq(acc)
                folded.append(reg)
            words, level = folded, level + 1
        m.d.comb += self.result.eq(words[0])
        return m
