"""R x C systolic array of INT8/INT4 MACs with run-time weight-stationary (WS) / output-stationary (OS) dataflow.

This docstring is the CONTRACT between the array and the controller that drives it (``cdmqta.hw.controller``)
and the Python reference of the protocol (:mod:`cdmqta.hw.array_schedule`, which produces exactly the beat
streams described here and predicts every output row; read it next to this text).

Structure
---------
PE(i, j), i = 0..R-1 (row, top to bottom), j = 0..C-1 (column, left to right); see :mod:`cdmqta.hw.pe`.
A operands enter at the west (lane i -> row i) and move right; B operands, the preload/drain chain ``d`` and
the control bits enter at the north (lane j -> column j) and move down; all of them are registered between PEs,
so the control of a beat reaches every PE together with that beat's data (Gemmini ``PEControl`` style). Each PE
has two stationary registers ``c[0]``, ``c[1]`` (acc_width bits): the beat's ``sel`` bit names the one IN USE
(WS weight / OS accumulator), the other one, ``c[!sel]``, is the SHADOW that the vertical shift chain loads
(WS weights of the next tile) and drains (OS results of the previous tile) at the same time.
The shift chain has S = ``config.chain_lanes`` (1 or 2) LANES: a shift moves every shadow register S rows down
(row i <- row i-S; lane s < S enters at row s, lane u leaves at row R-1-u), so S rows enter and S rows leave per
shift beat. With S = 2 the hop from row i-2 to row i has one extra register (so the value arrives with the beat's
control, which moves one row per cycle).

Beat (one per cycle, presented on the input ports and sampled at the clock edge; a cycle with ``compute=0`` and
``shift=0`` is a bubble and everything else in it is ignored)
------------------------------------------------------------------------------------------------------------
``a[i]``      signed 8 bit, i < R   west lanes: WS: A[t, i] (row t of the streamed A tile), OS: A[r, t] (see below)
``b[j]``      signed 8 bit, j < C   north operand: OS: B[t, j]; ignored in WS
``d[s*C+j]``  signed 8 bit, s < S, j < C   shift-chain lane s input (enters row s) of column j (WS weights)
``compute``   1: the beat multiplies (``a`` valid; ``b`` valid in OS)
``shift``     1: every column's shadow chain shifts down by S rows: c[!sel] of row s <- d[s*C+j] (s < S), of
              row i >= S <- row i-S, and the old c[!sel] of rows R-1-u (u < S) leave at the south as drain lane u
``dataflow``  isa.Dataflow: 0 = WS, 1 = OS (of the compute part of this beat)
``precision`` isa.Precision: 0 = INT8, 1 = INT4 (each 8-bit lane packs two signed INT4: low nibble = even k,
              high nibble = odd k; a MAC then adds lo*lo + hi*hi, so one beat covers two K elements)
``sel``       buffer select of the tile this beat belongs to; it flips from one tile to the next
``first``     OS only: the first K step of a tile (accumulator := product instead of += product)

Outputs (south, de-skewed: all C lanes of one row appear in the same cycle)
--------------------------------------------------------------------------
``ws_valid`` / ``ws_row[j]`` (signed acc_width): the result row of a WS compute beat presented at cycle t
    appears at cycle t + LATENCY:  ws_row[j] = sum_i mac(a[i], W[i, j])  (W = low 8 bits of c[sel] of PE(i, j);
    mac = product in INT8, lo*lo + hi*hi of the nibbles in INT4).
``drain_valid`` / ``drain_row[u*C+j]`` (u < S): for EVERY shift beat presented at cycle t, at t + LATENCY, the
    old c[!sel] of PE(R-1-u, j). Which drain rows are results (and of which tile/row) is the scheduler's knowledge.
``busy``: a beat is still in flight (1 from the cycle after a beat enters until its outputs have appeared).
``cycles``: 32-bit free-running count of busy cycles (performance counter; wraps).
LATENCY = R + C + 2 (``Array.latency``): 2 input registers + skew (i + j) + multiplier register + accumulate
register + de-skew (C - 1 - j) (+1 on the drain path to equalize the two ports).
Both ports can be valid in the same cycle (a WS tile streaming while the OS tile before it drains): a controller
that can write only one result row per cycle must not overlap them (keep drain shifts out of WS compute beats).

Dataflow WS (tile: W = B[k x n] stationary, k <= R (k <= 2R INT4, packed along K), n <= C; A[m x k] streamed)
-----------------------------------------------------------------------------------------------------------
* Preload: P = ceil(k_lanes / S) shift beats (k_lanes = k in INT8, ceil(k / 2) in INT4) whose ``d`` carries the
  weight rows in REVERSE order of groups: the j-th of them (j = 0..P-1) carries, in lane s,
  W_lane[S*(P-1-j) + s, 0..n-1] (anything in columns >= n, and in a lane whose row is >= k_lanes). After them,
  W_lane row r is in PE row r (r < k_lanes); rows >= k_lanes hold stale values, which
  is harmless because ``a`` lanes >= k_lanes must be 0 (see hazards).
  These shifts carry the ``sel`` of the tile BEFORE (they fill its shadow) and MUST be the last P shifts
  before the tile's first compute beat. They may share beats with that earlier tile's compute beats (any
  dataflow), so tile i+1's weights load while tile i streams. The first compute beat may be the very next beat.
  INT8: W_lane[r, j] = B[r, j]; INT4: W_lane[r, j] = pack(B[2r, j], B[2r+1, j]) (isa.py packing, odd k: the
  last high nibble is 0). Before the very first tile there is no earlier tile: use sel = !sel_0 (shift-only).
* Compute: m beats, beat t: a[i] = A[t, i] (INT4: pack(A[t, 2i], A[t, 2i+1])), i < k_lanes, a[i] = 0 for
  i >= k_lanes; compute=1, dataflow=WS, sel = the tile's buffer. Output: ws_row = A[t, :] . W = C[t, 0..C-1]
  (use lanes < n), at beat cycle + LATENCY, in beat order. m is unbounded (streamed); m < R costs m beats.

Dataflow OS (tile: C[m x n] stationary, m <= R, n <= C; K streamed, any length up to the accumulator range)
---------------------------------------------------------------------------------------------------------
* Compute: one beat per K step t (INT4: per pair of K elements, ceil(k / 2) beats): b[j] = B[t, j] (j < n, else
  0), a lanes BOTTOM-ALIGNED: a[R - m + r] = A[r, t] for r < m, other lanes 0 (so that m drain shifts suffice);
  compute=1, dataflow=OS, first=1 on the first beat of the tile only; sel = the tile's buffer.
  C[r, j] accumulates in c[sel] of PE(R - m + r, j).
* Drain: ceil(m / S) shift beats with ``sel`` FLIPPED (normally beats of the next tile, of any dataflow, or
  shift-only beats): the v-th of them yields, in drain lane u, C[m-1-S*v-u, 0..C-1] (bottom rows first; lanes
  with a negative row carry junk) at + LATENCY.

Overlap and switching (no drain between tiles, no dataflow barrier)
------------------------------------------------------------------
The shift beats that follow tile i's compute (and carry the flipped sel, i.e. belong to tile i+1's window)
do two jobs at once: their first ceil(m_i/S) drain tile i if it was OS, their last ceil(k_{i+2}/S) preload tile
i+2 if it is WS. Per tile window q = max(ceil(m_i/S) [OS], ceil(k_{i+2}/S) [WS]) shifts are needed; they ride on the
compute beats of tile i+1
(except its first beat if tile i was OS, H2); extra shift-only beats (compute=0, sel of tile i+1) are appended
after tile i+1's compute beats when tile i+1 is shorter. A sequence of tiles costs
  sum_i max(beats_i, q_i [+1 if tile i-1 was OS]) + LATENCY
  + ceil(k_lanes_0/S) if the first tile is WS (its preload) + 1 + ceil(m_last/S) if the last tile is OS (H2
bubble + drain) cycles, where beats_i = m (WS) or k_lanes (OS) and q_i = the shifts its window carries; dataflow
and precision may change on any beat (they travel with it). Example: 64x64x64 INT8 on 8x8 (S = 1) = 4096 ideal
cycles; WS tiling (8x8 weights, M=64 streamed) 4096 + 8 + 18 = 4122 cycles, OS tiling (8x8 outputs, K=64
streamed) 4123; with S = 2: 4118 and 4119.

Hazard rules (the controller must obey; array_schedule obeys and checks them)
--------------------------------------------------------------------------
H1  WS: a tile's weights = the last ceil(k_lanes/S) shift beats before its first compute beat, and those carry
    the previous tile's ``sel``; a lanes >= k_lanes are 0 in its compute beats.
H2  A shift beat must not immediately follow an OS compute beat of the other ``sel`` (the last product is still
    being accumulated into the register that the shift would read): after an OS tile, the next tile's first
    beat may compute but not shift. (A shift right after an OS compute beat of the same sel is fine.)
H3  The ceil(m/S) drain shifts of an OS tile i (sel flipped) must all come before the first compute beat of tile i+2
    (which reuses tile i's register; its ``first`` beat overwrites it).
H4  ``sel`` flips exactly at tile boundaries (consecutive tiles use opposite buffers); within a tile it is
    constant. Bubbles (compute=0, shift=0) may be inserted anywhere without changing results.
H5  OS: ``first`` is 1 on exactly the first compute beat of each OS tile.
There is no back-pressure: outputs appear LATENCY cycles after their beats, whatever comes later.

Reset clears the pipeline's control (no beat in flight) and the stationary registers. The array always has
both dataflows' datapaths (they share the MAC; ``QTAConfig.dataflows`` only restricts what the controller
accepts). WS partial sums for split K (k > rows) are added outside the array (accumulator memory).

Timing: every PE-to-PE signal is registered. Each MAC is one DSP (ECP5 MULT18X18D: 14x14 signed) with its input
registers; the product register sits in the DSP (``dsp="ecp5"``) or, the synthesis flow's default on ECP5, in the
fabric (``dsp="ecp5-fp"``, one copy next to each of the PE's three adders), which moves the long DSP-to-fabric
route into the multiply stage.
The operands are selected one cycle ahead from the PE's look-ahead inputs (the neighbours' inputs, ``*_next``) and
registered, so a multiplexer and routing precede the multiplier and this adds no latency; the product register is
the +1 in LATENCY. The operand select (B source and precision, 3 bits) is in registers: the top row decodes it a
cycle ahead from ``ctrl_nn``, every other PE copies the registers of the PE above (the select depends only on the
beat pair, which reached that PE one cycle earlier; so do the OS clears below). In INT4 the operands are the
multiplier's packed 14-bit forms (``hw/mac.py``), whose high 5 bits need an adder: the array computes that field for
every A, B and D lane at its edge and it travels beside the lane (``*_p`` registers), so that no adder lies behind
the operand select. Stage 2 has three adders on the product, with nothing in front of
any: WS ``psum_in + product``, OS ``c0 + product`` and ``c1 + product`` (an OS tile's ``first`` beat clears its
register one cycle before its first product arrives); the INT4 rounding enters as a carry-in, and in the ECP5
build the INT4/INT8 value select sits inside the adders' carry cells (``mac.select_add``). Per-PE control
registers carry ``keep`` (every PE of an anti-diagonal holds the same values; merged, one register would drive PEs
all over the chip). The input skew and output de-skew are register chains inside; the ports drive only the first of
two edge registers, so nothing but routing lies between the array's driver and its first registers, and the top
row, PE(0, 0) included, sees its control two cycles ahead (with one edge register PE(0, 0) had to decode its B
select from the port in the same cycle: the 8x8 ECP5 critical path). The hazard rules above are unchanged by this
pipelining (the look-ahead weight read bypasses a shift that writes the same register in the same cycle).
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import QTAConfig
from .mac import a_hi_field, b_hi_field
from .pe import PE, Control

__all__ = ["Array", "Control", "array_latency"]


def array_latency(rows, cols):
    """Cycles from a beat at the input ports to its ws/drain row at the output ports."""
    return rows + cols + 2


class Array(wiring.Component):
    """The R x C systolic array of the module docstring; ``config`` is a :class:`QTAConfig`.

    ``dsp="ecp5"`` instantiates each multiplier as an ECP5 MULT18X18D with internal registers (for synthesis;
    same cycle behaviour, see :class:`cdmqta.hw.mac.MAC`); the default generic multiplier simulates anywhere.
    """

    def __init__(self, config=None, dsp=None):
        config = config or QTAConfig()
        self._config = config
        self._dsp = dsp
        R, C, W = config.rows, config.cols, config.acc_width
        self.lanes = S = config.chain_lanes
        self.latency = array_latency(R, C)
        super().__init__({
            "a": In(data.ArrayLayout(signed(8), R)),
            "b": In(data.ArrayLayout(signed(8), C)),
            "d": In(data.ArrayLayout(signed(8), S * C)),
            "ctrl": In(Control),
            "ws_valid": Out(1),
            "ws_row": Out(data.ArrayLayout(signed(W), C)),
            "drain_valid": Out(1),
            "drain_row": Out(data.ArrayLayout(signed(W), S * C)),
            "busy": Out(1),
            "cycles": Out(32),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, W = cfg.rows, cfg.cols, cfg.acc_width
        S = self.lanes

        def delay(value, n, name, stages=False):
            """``value`` through ``n`` registers (n >= 0); with ``stages``, the list of all n+1 taps."""
            taps = [value]
            for k in range(n):
                reg = Signal.like(value, name=f"{name}_d{k}")
                m.d.sync += reg.eq(value)
                value = reg
                taps.append(reg)
            return taps if stages else value

        # the top row sees a beat's control two cycles ahead (``ctrl_nn``) and decodes its B selects a cycle early;
        # the rows below copy them from the PE above (see hw/pe.py)
        pes = [[PE(W, cfg.int4, self._dsp, top_row=i == 0, edge_fields=True) for j in range(C)] for i in range(R)]
        for i in range(R):
            for j in range(C):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]

        # input skew: row i of A delayed by i+2, column j of B/D/control by j+2 (two edge registers, so that the
        # ports drive only registers, and PE(0, 0) too sees its control two cycles ahead). Each PE also sees its
        # inputs of the next cycle (`*_next`: the previous skew tap, or its neighbour's inputs) to register MAC
        # operands; the top row also the control of the cycle after (`ctrl_nn`) to decode its operand select.
        # The INT4 high field of every A / B / D lane (mac.a_hi_field / b_hi_field, an adder) is computed here and
        # travels beside the lane in registers, so that the PEs select their operands from registers only: for A / B
        # from the port (row / column 0's look-ahead tap is the first register), for D after its first register.
        for i in range(R):
            taps = delay(self.a[i], i + 2, f"a_skew{i}", stages=True)
            p_taps = delay(a_hi_field(self.a[i]), i + 2, f"ap_skew{i}", stages=True)
            m.d.comb += [pes[i][0].a_in.eq(taps[-1]), pes[i][0].a_next.eq(taps[-2]),
                         pes[i][0].a_in_p.eq(p_taps[-1]), pes[i][0].a_next_p.eq(p_taps[-2])]
        for j in range(C):
            top = pes[0][j]
            b_taps = delay(self.b[j], j + 2, f"b_skew{j}", stages=True)
            p_taps = delay(b_hi_field(self.b[j]), j + 2, f"bp_skew{j}", stages=True)
            c_taps = delay(self.ctrl, j + 2, f"ctrl_skew{j}", stages=True)
            m.d.comb += [
                top.b_in.eq(b_taps[-1]), top.b_next.eq(b_taps[-2]),
                top.b_in_p.eq(p_taps[-1]), top.b_next_p.eq(p_taps[-2]),
                top.ctrl_in.eq(c_taps[-1]), top.ctrl_next.eq(c_taps[-2]), top.ctrl_nn.eq(c_taps[-3]),
                top.psum_in.eq(0),
            ]
            # shift chain lane s enters at row s (its beat's control arrives there j + 2 + s cycles after entry)
            for s_ in range(S):
                d1 = delay(self.d[s_ * C + j], 1, f"d_edge{s_}_{j}")
                m.d.comb += [pes[s_][j].d_in.eq(delay(d1, j + 1 + s_, f"d_skew{s_}_{j}")),
                             pes[s_][j].d_in_p.eq(delay(b_hi_field(d1), j + 1 + s_, f"dp_skew{s_}_{j}"))]
        for i in range(R):
            for j in range(C):
                pe = pes[i][j]
                if j + 1 < C:
                    m.d.comb += [pes[i][j + 1].a_in.eq(pe.a_out), pes[i][j + 1].a_next.eq(pe.a_in),
                                 pes[i][j + 1].a_in_p.eq(pe.a_out_p), pes[i][j + 1].a_next_p.eq(pe.a_in_p)]
                if i + 1 < R:
                    below = pes[i + 1][j]
                    m.d.comb += [
                        below.b_in.eq(pe.b_out),
                        below.b_next.eq(pe.b_in),
                        below.b_in_p.eq(pe.b_out_p),
                        below.b_next_p.eq(pe.b_in_p),
                        below.psum_in.eq(pe.psum_out),
                        below.ctrl_in.eq(pe.ctrl_out),
                        below.ctrl_next.eq(pe.ctrl_in),
                        below.bsel_in.eq(pe.bsel_out),
                        below.clr_in.eq(pe.clr_out),
                    ]

        # shift chain: row i takes row i-S's d_out, S-1 extra registers so that it arrives with the beat's control
        for i in range(S, R):
            for j in range(C):
                m.d.comb += [pes[i][j].d_in.eq(delay(pes[i - S][j].d_out, S - 1, f"chain{i}_{j}")),
                             pes[i][j].d_in_p.eq(delay(pes[i - S][j].d_out_p, S - 1, f"chainp{i}_{j}"))]

        # output de-skew: column j delayed by C-1-j; the drain path gets one more register to equalize latency
        bottom = pes[R - 1]
        last_ctrl = bottom[C - 1].ctrl_out
        ws_valid = Signal()
        drain_valid = Signal()
        m.d.sync += [
            ws_valid.eq(last_ctrl.compute & (last_ctrl.dataflow == 0)),
            drain_valid.eq(last_ctrl.shift),
        ]
        m.d.comb += [self.ws_valid.eq(ws_valid), self.drain_valid.eq(drain_valid)]
        for j in range(C):
            m.d.comb += [
                self.ws_row[j].eq(delay(bottom[j].psum_out, C - 1 - j, f"ws_deskew{j}")),
            ]
            for u in range(S):  # drain lane u: row R-1-u, whose d_out is u cycles early
                m.d.comb += self.drain_row[u * C + j].eq(
                    delay(pes[R - 1 - u][j].d_out, C - j + u, f"drain_deskew{u}_{j}")
                )

        # busy / cycle counter: a beat is in flight for `latency` cycles after it enters
        inflight = Signal(range(self.latency + 1))
        beat = self.ctrl.compute | self.ctrl.shift
        with m.If(beat):
            m.d.sync += inflight.eq(self.latency)
        with m.Elif(inflight != 0):
            m.d.sync += inflight.eq(inflight - 1)
        m.d.comb += self.busy.eq(inflight != 0)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m
