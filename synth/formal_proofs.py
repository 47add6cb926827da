"""The formal proofs of cdm-qta (run with :func:`cdmqta.synth.formal.prove`; the suite's fast ones are in
``verif/test_formal.py``, the deep ones in ``scripts/formal_deep.py``).

1. :class:`MACProof` -- the MAC (:class:`cdmqta.hw.mac.MAC`, any ``dsp`` kind, any number of adders) equals
   :class:`ReferenceMAC`, the plain arithmetic of its specification, in every cycle for every input sequence,
   resets included (BMC + k-induction: unbounded).
2. :class:`TileProof` -- on a small array a sequence of tiles (WS, OS, INT8, INT4) played as the beat stream of
   :func:`cdmqta.hw.array_schedule.schedule`, with every operand an ``AnyConst``, yields every result row of every
   tile on its port at the cycle the schedule predicts, equal to A . B (BMC over the whole stream). The array's MACs
   are replaced by :class:`ReferenceMAC` (assume-guarantee: proof 1 shows MAC == ReferenceMAC cycle for cycle under
   any inputs, so the substitution preserves every array behaviour); without it the solver must show that two
   differently built multipliers agree, which takes it minutes per product.
3. :class:`ControllerProof` -- see that class.
"""

import contextlib

from amaranth.asserts import AnyConst, AnySeq  # their public home in Amaranth 0.5 (Assert & co. moved to hdl)
from amaranth.hdl import Assert, Assume, Cat, Elaboratable, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ReferenceMAC", "MACProof", "reference_macs", "any_seq", "any_const"]


def any_seq(m, shape, name):
    """A signal that takes an arbitrary value in every cycle (one ``AnySeq`` cell: each use of an ``AnySeq``
    value is a cell of its own, so bind it to a signal once)."""
    sig = Signal(shape, name=name)
    m.d.comb += sig.eq(AnySeq(shape))
    return sig


def any_const(m, shape, name):
    """A signal that holds one arbitrary value for the whole run."""
    sig = Signal(shape, name=name)
    m.d.comb += sig.eq(AnyConst(shape))
    return sig


class ReferenceMAC(wiring.Component):
    """The MAC's specification (:class:`cdmqta.hw.mac.MAC`'s docstring) as plain arithmetic, same ports and timing:
    the operands of cycle t-1 give ``p = a*b`` (INT8) or ``a_lo*b_lo + a_hi*b_hi`` (INT4, signed nibbles), and in
    cycle t+1 ``sum = addend + p`` (mod 2**acc_width). All registers reset to 0 with the sync domain."""

    def __init__(self, acc_width=32, int4=True, adders=1, packed=False):
        self._acc_width, self._int4, self._adders = acc_width, int4, adders
        self._packed = packed and int4
        width = 14 if self._packed else 8
        ports = {"a": In(signed(width)), "b": In(signed(width)), "int4": In(1),
                 "addend": In(signed(acc_width)), "sum": Out(signed(acc_width))}
        for k in range(2, adders + 1):
            ports |= {f"addend{k}": In(signed(acc_width)), f"sum{k}": Out(signed(acc_width))}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(signed(8)), Signal(signed(8))
        mode = Signal()
        p = Signal(signed(16))
        a_in, b_in = self.a, self.b
        if self._packed:
            # ``packed`` operands (MAC's docstring): decode the 14-bit forms back to 8-bit lanes. INT4
            # A' = a_hi * 2**9 + a_lo and B' = b_lo * 2**9 + b_hi (signed nibbles); INT8: the lane sign-extended.
            a_lo, b_hi = self.a[0:4].as_signed(), self.b[0:4].as_signed()
            a_hi, b_lo = ((self.a - a_lo) >> 9)[0:4], ((self.b - b_hi) >> 9)[0:4]
            a_in = Mux(self.int4, Cat(a_lo[0:4], a_hi).as_signed(), self.a[0:8].as_signed())
            b_in = Mux(self.int4, Cat(b_lo, b_hi[0:4]).as_signed(), self.b[0:8].as_signed())
        m.d.sync += [a.eq(a_in), b.eq(b_in), mode.eq(self.int4 if self._int4 else 0)]
        dot4 = a[0:4].as_signed() * b[0:4].as_signed() + a[4:8].as_signed() * b[4:8].as_signed()
        m.d.sync += p.eq(Mux(mode, dot4, a * b))
        m.d.comb += self.sum.eq(self.addend + p)
        for k in range(2, self._adders + 1):
            m.d.comb += getattr(self, f"sum{k}").eq(getattr(self, f"addend{k}") + p)
        return m


class MACProof(Elaboratable):
    """``MAC(acc_width, int4, dsp, adders)`` and :class:`ReferenceMAC` side by side on the same free inputs
    (``AnySeq`` every cycle; the reset is free too): every ``sum`` output equal in every cycle. ``mode`` 0 / 1
    assumes INT8 / INT4 operands throughout (splits the proof in two smaller ones), None leaves it free."""

    def __init__(self, acc_width=32, int4=True, dsp=None, adders=3, mode=None, packed=False):
        self.acc_width, self.int4, self.dsp, self.adders, self.mode = acc_width, int4, dsp, adders, mode
        self.packed = packed and int4

    def elaborate(self, platform):
        from cdmqta.hw.mac import MAC

        m = Module()
        W = self.acc_width
        m.submodules.dut = dut = MAC(W, self.int4, self.dsp, adders=self.adders, packed=self.packed)
        m.submodules.ref = ref = ReferenceMAC(W, self.int4, adders=self.adders)
        a, b, mode = any_seq(m, signed(8), "a"), any_seq(m, signed(8), "b"), any_seq(m, 1, "int4")
        m.d.comb += [ref.a.eq(a), ref.b.eq(b), ref.int4.eq(mode), dut.int4.eq(mode)]
        if self.packed:
            # The PE's operands: the lanes in the beat's form, built the way hw/pe.py builds them
            from cdmqta.hw.mac import a_hi_field, b_hi_field, pack_a, pack_b

            ha, hb = a_hi_field(a), b_hi_field(b)
            m.d.comb += [dut.a.eq(Mux(mode, Cat(*pack_a(a, ha, True)), Cat(*pack_a(a, ha, False)))),
                         dut.b.eq(Mux(mode, Cat(*pack_b(b, hb, True)), Cat(*pack_b(b, hb, False))))]
        else:
            m.d.comb += [dut.a.eq(a), dut.b.eq(b)]
        if self.mode is not None:
            m.d.comb += Assume(mode == self.mode)
        sums = [("", "sum")] + [(str(k), f"sum{k}") for k in range(2, self.adders + 1)]
        for k, out in sums:
            addend = any_seq(m, signed(W), f"addend{k}")
            m.d.comb += [getattr(dut, f"addend{k}").eq(addend), getattr(ref, f"addend{k}").eq(addend)]
            s_dut, s_ref = Signal(signed(W), name=f"dut_{out}"), Signal(signed(W), name=f"ref_{out}")
            m.d.comb += [s_dut.eq(getattr(dut, out)), s_ref.eq(getattr(ref, out))]
            m.d.comb += Assert(s_dut == s_ref)
        return m


@contextlib.contextmanager
def reference_macs():
    """Within the block, PEs elaborate :class:`ReferenceMAC` in place of the MAC (``dsp`` ignored): the
    substitution that proof 1 justifies (see the module docstring)."""
    import cdmqta.hw.mac as mac_module

    real = mac_module.MAC

    def factory(acc_width=32, int4=True, dsp=None, adders=1, packed=False):
        return ReferenceMAC(acc_width, int4, adders, packed=packed)

    mac_module.MAC = factory
    try:
        yield
    finally:
        mac_module.MAC = real


def _pack4(lo, hi):
    """One INT4 lane (``cdmqta.hw.isa`` packing: low nibble = even k, high nibble = odd k) of two 4-bit values."""
    from amaranth.hdl import Cat

    return Cat(lo[0:4], hi[0:4]).as_signed()


def symbolic_tile(index, dataflow, precision, mk, k, n):
    """A :class:`cdmqta.hw.array_schedule.Tile` whose A (mk x k) and B (k x n) entries are signals (signed 8 bit in
    INT8, signed 4 bit in INT4; the proof drives them with ``AnyConst``), so that :func:`schedule` places symbolic
    lanes in its beats."""
    from cdmqta.hw.array_schedule import INT4, Tile

    width = 4 if precision == INT4 else 8

    class SymbolicTile(Tile):
        def __post_init__(self):
            pass

        def a_lane(self, r, s):
            if self.precision != INT4:
                return self.a[r][s]
            return _pack4(self.a[r][2 * s], self.a[r][2 * s + 1] if 2 * s + 1 < self.k else Signal(4))

        def b_lane(self, s, j):
            if self.precision != INT4:
                return self.b[s][j]
            return _pack4(self.b[2 * s][j], self.b[2 * s + 1][j] if 2 * s + 1 < self.k else Signal(4))

    a = [[Signal(signed(width), name=f"t{index}_a{r}_{t}") for t in range(k)] for r in range(mk)]
    b = [[Signal(signed(width), name=f"t{index}_b{t}_{j}") for j in range(n)] for t in range(k)]
    return SymbolicTile(dataflow, precision, a, b)


class TileProof(Elaboratable):
    """An ``Array(config)`` (with :class:`ReferenceMAC` MACs, see the module docstring) fed from reset with the
    beat stream that :func:`cdmqta.hw.array_schedule.schedule` makes for ``tiles`` -- (dataflow, precision, m, k, n)
    tuples whose operands are ``AnyConst`` -- one beat per cycle, then bubbles; asserted: at every output the
    schedule predicts, the port's valid bit is set and its lanes hold the tile's result row (A . B mod
    2**acc_width). Proved by BMC over the whole stream (:attr:`depth`: its cycles + 1); the reset stays low.

    ``schedule_fn`` replaces the scheduler (bug injection: a wrong beat stream or prediction must fail the proof).
    """

    def __init__(self, config, tiles, schedule_fn=None):
        from cdmqta.hw.array_schedule import schedule

        self.config, self.specs = config, list(tiles)
        self.tiles = [symbolic_tile(x, *spec) for x, spec in enumerate(self.specs)]
        self.schedule = (schedule_fn or schedule)(self.tiles, config.rows, config.cols, config.shift_lanes)
        self.depth = self.schedule.cycles + 1

    def elaborate(self, platform):
        from amaranth.hdl import Fragment, ResetSignal

        from cdmqta.hw.array import Array

        m = Module()
        cfg, sched, tiles = self.config, self.schedule, self.tiles
        R, C, W = cfg.rows, cfg.cols, cfg.acc_width
        for t in tiles:
            for mat in (t.a, t.b):
                m.d.comb += [v.eq(AnyConst(v.shape())) for row in mat for v in row]
        array = Array(cfg)
        with reference_macs():
            m.submodules.array = Fragment.get(array, platform)
        m.d.comb += Assume(ResetSignal() == 0)
        cyc = Signal(range(self.depth + 1), name="cycle")
        with m.If(cyc != self.depth):
            m.d.sync += cyc.eq(cyc + 1)
        with m.Switch(cyc):
            for c, bt in enumerate(sched.beats):
                with m.Case(c):
                    m.d.comb += [array.a[i].eq(bt.a[i]) for i in range(R)]
                    m.d.comb += [array.b[j].eq(bt.b[j]) for j in range(C)]
                    m.d.comb += [array.d[x].eq(v) for x, v in enumerate(bt.d)]
                    m.d.comb += [getattr(array.ctrl, f).eq(getattr(bt, f))
                                 for f in ("compute", "shift", "dataflow", "precision", "sel", "first")]
        for x, o in enumerate(sched.outputs):
            t = tiles[o.tile]
            valid, row = (array.ws_valid, array.ws_row) if o.port == "ws" else (array.drain_valid, array.drain_row)
            with m.If(cyc == o.cycle):
                m.d.comb += Assert(valid)
                for j in range(t.n):
                    want = Signal(signed(W), name=f"want{x}_{j}")
                    m.d.comb += want.eq(sum(t.a[o.row][s] * t.b[s][j] for s in range(t.k)))
                    got = Signal(signed(W), name=f"got{x}_{j}")
                    m.d.comb += got.eq(row[o.lane * C + j])
                    m.d.comb += Assert(got == want)
        return m


class ControllerProof(Elaboratable):
    """The whole :class:`cdmqta.hw.top.Accelerator` of a tiny ``config`` (controller, scoreboard, execute unit, the
    array with :class:`ReferenceMAC` MACs, load / store units, scratchpad, accumulator), started once from reset on
    a run of ``n_cmds`` commands (``any_length``: of any length 0..n_cmds, an ``AnyConst``) whose 128 bits are
    ``AnyConst`` (any opcode, any field, legal or not), streamed
    one per cycle as the command port accepts them; the host memory answers every read (its data is ``AnySeq``:
    any memory contents). Asserted:

    * ``done`` is high in cycle ``bound`` (counted from the ``start`` pulse in cycle 0) and every cycle after it;
    * sticky: once ``done`` rises it stays high, and ``status`` / ``error_index`` keep their values; once
      ``status`` is non-zero it never changes (there is no second ``start``);
    * an illegal command (:func:`illegal`: a bad opcode, a bad field, a zero size, a tile too large, an address
      out of range, a WS COMPUTE with no PRELOAD before it) ends the run with a non-zero status whose
      ``error_index`` is at most its index (an earlier command may fail first).

    Proved by BMC over cycles 0..``bound`` + ``extra`` (the depth).
    """

    def __init__(self, config, n_cmds, bound, *, extra=2, host_words=None, any_length=True):
        self.config, self.n_cmds, self.bound = config, n_cmds, bound
        self.host_words, self.any_length = host_words, any_length
        self.depth = bound + 1 + extra

    def elaborate(self, platform):
        from amaranth.hdl import Fragment, ResetSignal

        from cdmqta.hw.isa import CMD_BITS
        from cdmqta.hw.top import Accelerator

        m = Module()
        N = self.n_cmds
        acc = Accelerator(self.config, host_words=self.host_words)
        with reference_macs():
            m.submodules.accel = Fragment.get(acc, platform)
        m.d.comb += Assume(ResetSignal() == 0)
        cmds = [any_const(m, CMD_BITS, f"cmd{x}") for x in range(N)]
        cyc = Signal(range(self.depth + 2), name="cycle")
        with m.If(cyc != self.depth + 1):
            m.d.sync += cyc.eq(cyc + 1)
        n_run = any_const(m, range(N + 1), "n_run") if self.any_length else N
        if self.any_length:
            m.d.comb += Assume(n_run <= N)
        m.d.comb += [acc.start.eq(cyc == 0), acc.n_cmds.eq(n_run)]
        # command source: command `index` is valid from the cycle after start until accepted
        index = Signal(range(N + 1), name="index")
        m.d.comb += acc.cmd.valid.eq((cyc != 0) & (index < n_run))
        with m.Switch(index):
            for x in range(N):
                with m.Case(x):
                    m.d.comb += acc.cmd.payload.eq(cmds[x])
        with m.If(acc.cmd.valid & acc.cmd.ready):
            m.d.sync += index.eq(index + 1)
        m.d.comb += acc.host.rd_data.eq(AnySeq(len(acc.host.rd_data)))

        done, status, err = acc.done, acc.status, acc.error_index
        prev_done, prev_status, prev_err = Signal(), Signal(3), Signal(32)
        m.d.sync += [prev_done.eq(done), prev_status.eq(status), prev_err.eq(err)]
        after = cyc >= 2           # the cycle after start has already cleared the run's state
        with m.If(cyc >= self.bound):
            m.d.comb += Assert(done)
        with m.If(after & prev_done):
            m.d.comb += Assert(done & (status == prev_status) & (err == prev_err))
        with m.If(after & (prev_status != 0)):
            m.d.comb += Assert(status == prev_status)
        for x in range(N):
            bad = illegal(cmds[x], self.config, self.host_words, preloaded=cmds[:x])
            with m.If(bad & done & (cyc >= 1) & (x < n_run)):
                m.d.comb += Assert((status != 0) & (err <= x))
        return m


def illegal(cmd, cfg, host_words, preloaded=()):
    """1 if the 128-bit ``cmd`` is certainly illegal on ``cfg`` by the ISA's rules (the checks listed in
    :mod:`cdmqta.sw.runtime.emulator`, written here from the ISA field table, independently of the controller):
    an opcode outside :class:`cdmqta.hw.isa.Op`; CONFIG shift > SHIFT_MAX; STORE out = 3; a zero size; PRELOAD /
    COMPUTE n or STORE cols > cols, PRELOAD / WS COMPUTE k > rows (INT8: CONFIG state is reset-time INT8 unless
    one of ``preloaded`` is a CONFIG, then the INT4 limit 2 * rows), OS COMPUTE m > rows; a LOAD / STORE row range
    outside the scratchpad / accumulator or host memory, a COMPUTE's C rows outside the accumulator, a WS
    COMPUTE's A rows outside the scratchpad; a WS COMPUTE with no PRELOAD among ``preloaded`` (the commands
    before it). (The precision-dependent ranges of PRELOAD and OS COMPUTE operands are left out.)"""
    from amaranth.hdl import Const
    from amaranth.lib import data

    from cdmqta.hw.controller import command_layout
    from cdmqta.hw.isa import OPCODE_BITS, SHIFT_MAX, Op

    op = cmd[0:OPCODE_BITS]
    v = {o: data.View(command_layout(o), cmd[:command_layout(o).size]) for o in Op}
    hw = host_words if host_words is not None else 1 << cfg.host_addr_width
    configured = Const(0, 1)
    for c in preloaded:
        configured = configured | (c[0:OPCODE_BITS] == Op.CONFIG)
    kmax = Mux(configured, 2 * cfg.rows, cfg.rows)

    def host_bad(f):
        return (f.host_addr + (f.rows - 1) * f.host_stride) >= hw

    ld, pre, comp, st, conf = v[Op.LOAD], v[Op.PRELOAD], v[Op.COMPUTE], v[Op.STORE], v[Op.CONFIG]
    preload_before = Const(0, 1)
    for c in preloaded:
        preload_before = preload_before | (c[0:OPCODE_BITS] == Op.PRELOAD)
    rules = {
        Op.CONFIG: conf.shift > SHIFT_MAX,
        Op.LOAD: (ld.rows == 0) | (ld.sp_addr + ld.rows > Mux(ld.to_acc, cfg.acc_rows, cfg.sp_rows))
        | host_bad(ld),
        Op.PRELOAD: (pre.k == 0) | (pre.n == 0) | (pre.n > cfg.cols) | (pre.k > kmax),
        Op.COMPUTE: (comp.m == 0) | (comp.n == 0) | (comp.k == 0) | (comp.n > cfg.cols)
        | (comp.c_addr + comp.m > cfg.acc_rows)
        | Mux(comp.dataflow == 0, (comp.k > kmax) | ~preload_before | (comp.a_addr + comp.m > cfg.sp_rows),
              comp.m > cfg.rows),
        Op.STORE: (st.out == 3) | (st.rows == 0) | (st.cols == 0) | (st.cols > cfg.cols)
        | (st.acc_addr + st.rows > cfg.acc_rows) | host_bad(st),
    }
    bad = ~op.matches(*(int(o) for o in Op))
    for o, rule in rules.items():
        bad = bad | ((op == o) & rule)
    return bad
