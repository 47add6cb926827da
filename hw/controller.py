"""Command controller: fetch and decode 128-bit commands, check them, and dispatch them to decoupled units.

:class:`Controller` decodes and checks each command, dispatches it to the load, execute or store queue, keeps the
scoreboard (:mod:`cdmqta.hw.scoreboard`) and the performance counters. :class:`cdmqta.hw.top.Accelerator` wires it
to the execute unit (:mod:`cdmqta.hw.execute`) and the load / store units (:mod:`cdmqta.hw.dma`).

* ``start`` (one-cycle pulse) begins a run of ``n_cmds`` commands taken in order from the ``cmd`` stream
  (valid/ready, 128-bit payload, one command per cycle at most). It clears ``status``, ``error_index`` and the
  performance counters; ``done`` is low from the cycle after ``start`` until the run has finished, then high
  until the next ``start``. A ``start`` while a run is in progress is ignored (the run goes on undisturbed);
  ``n_cmds = 0`` finishes at once (``done`` two cycles after ``start``, status OK, counters zero but
  ``busy_cycles``); reset (``rst``) aborts a run: every unit, queue and the scoreboard return to idle, ``done`` is
  low until the next run finishes, CONFIG state returns to its reset values (INT8, nearest-even, shift 0,
  mult 0, seed 0, amax_slot 0) and WS weights become invalid; rows already written stay written, and nothing more
  is written after reset. CONFIG state (precision, rounding, shift, mult, seed, amax_slot) persists across runs,
  like the ISA emulator's.
* Decode uses views built from :data:`cdmqta.hw.isa.FIELDS` (:func:`command_layout`). Checks happen in the
  order of :mod:`cdmqta.sw.runtime.emulator` (BAD_OPCODE, BAD_FIELD, NOT_BUILT, ZERO_SIZE, TILE_TOO_LARGE, ADDR_RANGE),
  plus one rule of this hardware: a WS COMPUTE needs weights, i.e. a PRELOAD earlier in the program with no OS
  COMPUTE after it (else BAD_FIELD; the PEs that would hold the weights are reused by OS tiles). The first bad
  command sets ``status`` / ``error_index`` (0-based), nothing after it is dispatched, the commands before it
  complete, then ``done`` rises: an error never hangs the controller.
* Dispatch: LOAD -> load queue, PRELOAD / COMPUTE -> execute queue, STORE -> store queue (each
  ``QTAConfig.queue_depth`` deep, 8 by default; the store queue keeps a snapshot of the CONFIG state, so CONFIG never
  waits for the units), CONFIG / NOP take one cycle, FENCE waits
  until every unit is idle. Each queue is in order; the units run concurrently.
* Scoreboard (automatic; FENCE is never needed for correctness, only to wait for the host): a command at the
  head of its queue waits for the OLDER in-flight commands of the other queues that touch the same rows: a
  PRELOAD / COMPUTE for LOADs into its scratchpad rows (RAW) or its accumulator rows, and a COMPUTE for STOREs
  still reading its accumulator rows (WAR); a STORE for COMPUTEs writing its accumulator rows and LOADs into
  them (RAW) and LOADs still reading its host words (WAR); a LOAD for PRELOAD / COMPUTEs still reading its
  scratchpad rows (WAR), STOREs still writing its host words (RAW), and, into the accumulator, COMPUTEs and
  STOREs using its rows. Exact row ranges, kept in tables of the last ``QTAConfig.in_flight`` (16) commands of each
  kind (host ranges
  of strided transfers include the gaps; dispatch pauses while a table is full). So a
  program overlaps loads, computes and stores by placing the LOADs of later tiles ahead of earlier computes
  (into other rows) and by giving consecutive output tiles different accumulator rows (double buffers).
* Performance counters (64 bit, per run): ``busy_cycles`` (start to done), ``macs`` (m*n*k of dispatched
  COMPUTEs, in elements of their precision), ``compute_cycles`` (compute beats streamed into the array),
  ``stall_cycles`` (cycles in which the execute unit issued no beat because its next command waited for a load
  or a store).
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from . import scoreboard
from .dma import LoadCmd, StoreCmd
from .execute import ExecCmd
from .isa import AMAX_SLOT_BITS, CMD_BITS, FIELDS, OPCODE_BITS, SHIFT_MAX, Dataflow, Op, OutFormat, Precision, Status
from .scoreboard import HostRange, InFlightTable, Range

__all__ = ["command_layout", "Controller"]


def command_layout(op):
    """``data.StructLayout`` of one opcode's command, built from :data:`cdmqta.hw.isa.FIELDS`."""
    fields = {"opcode": OPCODE_BITS}
    for name, width in FIELDS[Op(op)]:
        fields[name] = width
    return data.StructLayout(fields)


class Controller(wiring.Component):
    """Dispatcher and scoreboard of the command stream; see the module docstring."""

    def __init__(self, config, *, host_words=None):
        self._cfg = cfg = config
        self._host_words = host_words if host_words is not None else (1 << cfg.host_addr_width)
        haw = cfg.host_addr_width
        super().__init__({
            "start": In(1), "n_cmds": In(32),
            "cmd": In(stream.Signature(CMD_BITS)),
            "done": Out(1), "status": Out(3), "error_index": Out(32),
            "busy_cycles": Out(64), "macs": Out(64), "stall_cycles": Out(64), "compute_cycles": Out(64),
            "load": Out(stream.Signature(LoadCmd(haw))), "load_done": In(1), "load_busy": In(1),
            "exec": Out(stream.Signature(ExecCmd)),
            "pre_read_done": In(1), "pre_read_seq": In(16), "comp_read_done": In(1), "comp_read_seq": In(16),
            "comp_done": In(1), "exec_idle": In(1),
            "beat_compute": In(1), "beat_any": In(1),
            "store": Out(stream.Signature(StoreCmd(haw))),
            "store_read_done": In(1), "store_done": In(1), "store_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        haw = cfg.host_addr_width

        # -- completion counters (16-bit, wrapping) and dispatch counters -----------------------------------
        names = ["load", "comp", "store_read", "store"]
        done_cnt = {n: Signal(16, name=f"{n}_done_cnt") for n in names}
        pulses = {"load": self.load_done, "comp": self.comp_done, "store_read": self.store_read_done,
                  "store": self.store_done}
        for n in names:
            with m.If(pulses[n]):
                m.d.sync += done_cnt[n].eq(done_cnt[n] + 1)
        n_load, n_exec, n_comp, n_store = (Signal(16, name=f"{x}_disp_cnt") for x in ("load", "exec", "comp", "store"))

        # -- queues ---------------------------------------------------------------------------------------
        LoadEntry = data.StructLayout({"cmd": LoadCmd(haw), "r": Range, "h": HostRange,
                                       "t_exec": 16, "t_comp": 16, "t_store": 16})
        ExecEntry = data.StructLayout({"cmd": ExecCmd, "r0": Range, "r1": Range, "c": Range,
                                       "t_load": 16, "t_store": 16})
        StoreEntry = data.StructLayout({"cmd": StoreCmd(haw), "r": Range, "h": HostRange, "t_load": 16, "t_comp": 16})
        depth = cfg.queue_depth
        load_q = fifo.SyncFIFOBuffered(width=LoadEntry.size, depth=depth)
        exec_q = fifo.SyncFIFOBuffered(width=ExecEntry.size, depth=depth)
        store_q = fifo.SyncFIFOBuffered(width=StoreEntry.size, depth=depth)
        m.submodules.load_q, m.submodules.exec_q, m.submodules.store_q = load_q, exec_q, store_q
        le, ee, se = LoadEntry(load_q.r_data), ExecEntry(exec_q.r_data), StoreEntry(store_q.r_data)

        # -- scoreboard (cdmqta.hw.scoreboard): exact row ranges of the commands of each kind still in flight -----
        NT = cfg.in_flight
        tables = {
            "load": InFlightTable("load", {"to_acc": 1, "r": Range, "h": HostRange}, NT),
            "exec": InFlightTable("exec", {"r0": Range, "r1": Range}, NT, in_order=False),
            "comp": InFlightTable("comp", {"c": Range}, NT),
            "store": InFlightTable("store", {"r": Range, "h": HostRange}, NT),
        }
        load_ok, exec_ok, store_ok = (Signal(name=n) for n in ("load_ok", "exec_ok", "store_ok"))
        m.d.comb += [load_ok.eq(scoreboard.load_ok(tables, le, done_cnt)),
                     exec_ok.eq(scoreboard.exec_ok(tables, ee, done_cnt)),
                     store_ok.eq(scoreboard.store_ok(tables, se, done_cnt))]
        tables["exec"].release(m, self.pre_read_done, self.pre_read_seq)
        tables["exec"].release(m, self.comp_read_done, self.comp_read_seq)

        m.d.comb += [
            self.load.valid.eq(load_q.r_rdy & load_ok),
            self.load.payload.eq(le.cmd),
            load_q.r_en.eq(self.load.ready & load_ok),
            self.exec.valid.eq(exec_q.r_rdy & exec_ok),
            self.exec.payload.eq(ee.cmd),
            exec_q.r_en.eq(self.exec.ready & exec_ok),
            self.store.valid.eq(store_q.r_rdy & store_ok),
            self.store.payload.eq(se.cmd),
            store_q.r_en.eq(self.store.ready & store_ok),
        ]
        all_idle = Signal()
        # ``level`` (not ``r_rdy``): a just-written entry is not visible at the read side for a cycle or two.
        m.d.comb += all_idle.eq((load_q.level == 0) & (exec_q.level == 0) & (store_q.level == 0) & ~self.load_busy
                                & self.exec_idle & ~self.store_busy)

        # -- run state ------------------------------------------------------------------------------------
        running, stop = Signal(), Signal()
        fetched = Signal(32)
        cur_valid = Signal()
        cur = Signal(CMD_BITS)
        cur_index = Signal(32)
        cur_go = Signal()
        # CONFIG state and the weights rule
        prec, rounding, shift, mult, seed = Signal(), Signal(), Signal(6), Signal(16), Signal(32)
        amax_slot = Signal(AMAX_SLOT_BITS)
        weights_valid = Signal()

        m.d.comb += self.cmd.ready.eq(running & ~stop & (fetched != self.n_cmds) & (~cur_valid | cur_go))
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cur.eq(self.cmd.payload), cur_valid.eq(1), cur_index.eq(fetched), fetched.eq(fetched + 1)]
        with m.Elif(cur_go):
            m.d.sync += cur_valid.eq(0)

        with m.If(running):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
            with m.If(self.beat_compute):
                m.d.sync += self.compute_cycles.eq(self.compute_cycles + 1)
            with m.If(exec_q.r_rdy & ~exec_ok & ~self.beat_any):
                m.d.sync += self.stall_cycles.eq(self.stall_cycles + 1)
            with m.If(all_idle & ~cur_valid & (stop | (fetched == self.n_cmds))):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        with m.If(self.start & ~running):     # a start while a run is in progress is ignored
            m.d.sync += [running.eq(1), stop.eq(0), fetched.eq(0), cur_valid.eq(0), self.done.eq(0),
                         self.status.eq(0), self.error_index.eq(0), self.busy_cycles.eq(0), self.macs.eq(0),
                         self.stall_cycles.eq(0), self.compute_cycles.eq(0)]

        # -- decode and check -----------------------------------------------------------------------------
        opcode = cur[:OPCODE_BITS]
        v = {op: command_layout(op)(cur[:command_layout(op).size]) for op in FIELDS}
        kmax = Mux(prec == Precision.INT4, 2 * R, R)

        def steps_of(k):
            return Mux(prec == Precision.INT4, (k + 1) >> 1, k)

        def host_bad(addr, rows, stride):
            return addr + (rows - 1) * stride >= self._host_words

        ws_built, os_built = "ws" in cfg.dataflows, "os" in cfg.dataflows
        err = Signal(3)
        ld, pl, cp, st, cf = v[Op.LOAD], v[Op.PRELOAD], v[Op.COMPUTE], v[Op.STORE], v[Op.CONFIG]

        def first_error(checks):
            """The status of the first true condition of [(condition, status)] (Python bools fold away)."""
            result = Const(0, 3)
            for cond, status in reversed(checks):
                if cond is True:
                    result = Const(status, 3)
                elif cond is not False:
                    result = Mux(cond, status, result)
            return result

        is_ws = cp.dataflow == Dataflow.WS
        steps = steps_of(cp.k)
        if ws_built and os_built:
            df_not_built = False
        else:
            df_not_built = is_ws if not ws_built else ~is_ws
        with m.Switch(opcode):
            with m.Case(Op.NOP, Op.FENCE):
                pass
            with m.Case(Op.CONFIG):
                m.d.comb += err.eq(first_error([
                    (cf.shift > SHIFT_MAX, Status.BAD_FIELD),
                    (False if cfg.int4 else cf.precision == Precision.INT4, Status.NOT_BUILT)]))
            with m.Case(Op.LOAD):
                depth = Mux(ld.to_acc, cfg.acc_rows, cfg.sp_rows)
                m.d.comb += err.eq(first_error([
                    (ld.rows == 0, Status.ZERO_SIZE),
                    ((ld.sp_addr + ld.rows > depth) | host_bad(ld.host_addr, ld.rows, ld.host_stride),
                     Status.ADDR_RANGE)]))
            with m.Case(Op.PRELOAD):
                m.d.comb += err.eq(first_error([
                    (not ws_built, Status.NOT_BUILT),
                    ((pl.k == 0) | (pl.n == 0), Status.ZERO_SIZE),
                    ((pl.k > kmax) | (pl.n > C), Status.TILE_TOO_LARGE),
                    (pl.b_addr + steps_of(pl.k) > cfg.sp_rows, Status.ADDR_RANGE)]))
            with m.Case(Op.COMPUTE):
                m.d.comb += err.eq(first_error([
                    (df_not_built, Status.NOT_BUILT),
                    ((cp.m == 0) | (cp.n == 0) | (cp.k == 0), Status.ZERO_SIZE),
                    (Mux(is_ws, cp.k > kmax, cp.m > R) | (cp.n > C), Status.TILE_TOO_LARGE),
                    (Mux(is_ws, cp.a_addr + cp.m > cfg.sp_rows,
                         (cp.a_addr + steps > cfg.sp_rows) | (cp.b_addr + steps > cfg.sp_rows))
                     | (cp.c_addr + cp.m > cfg.acc_rows), Status.ADDR_RANGE),
                    (is_ws & ~weights_valid, Status.BAD_FIELD)]))
            with m.Case(Op.STORE):
                m.d.comb += err.eq(first_error([
                    (st.out > OutFormat.INT4, Status.BAD_FIELD),
                    ((st.rows == 0) | (st.cols == 0), Status.ZERO_SIZE),
                    (st.cols > C, Status.TILE_TOO_LARGE),
                    ((st.acc_addr + st.rows > cfg.acc_rows) | host_bad(st.host_addr, st.rows, st.host_stride),
                     Status.ADDR_RANGE)]))
            with m.Default():
                m.d.comb += err.eq(Status.BAD_OPCODE)

        with m.If(cur_valid & (err != 0) & ~stop):
            m.d.sync += [self.status.eq(err), self.error_index.eq(cur_index), stop.eq(1), cur_valid.eq(0)]

        # -- dispatch -------------------------------------------------------------------------------------
        ok = cur_valid & (err == 0)
        l_in, e_in, s_in = Signal(LoadEntry), Signal(ExecEntry), Signal(StoreEntry)
        m.d.comb += [
            l_in.cmd.to_acc.eq(ld.to_acc), l_in.cmd.addr.eq(ld.sp_addr), l_in.cmd.rows.eq(ld.rows),
            l_in.cmd.host_addr.eq(ld.host_addr), l_in.cmd.host_stride.eq(ld.host_stride),
            l_in.t_exec.eq(n_exec), l_in.t_comp.eq(n_comp), l_in.t_store.eq(n_store),
            l_in.r.lo.eq(ld.sp_addr), l_in.r.hi.eq(ld.sp_addr + ld.rows),
            l_in.h.lo.eq(ld.host_addr), l_in.h.hi.eq(ld.host_addr + (ld.rows - 1) * ld.host_stride + 1),
            s_in.r.lo.eq(st.acc_addr), s_in.r.hi.eq(st.acc_addr + st.rows),
            s_in.h.lo.eq(st.host_addr), s_in.h.hi.eq(st.host_addr + (st.rows - 1) * st.host_stride + 1),
            e_in.t_load.eq(n_load), e_in.t_store.eq(n_store), e_in.cmd.precision.eq(prec), e_in.cmd.seq.eq(n_exec),
            s_in.cmd.acc_addr.eq(st.acc_addr), s_in.cmd.rows.eq(st.rows), s_in.cmd.cols.eq(st.cols),
            s_in.cmd.host_addr.eq(st.host_addr), s_in.cmd.host_stride.eq(st.host_stride),
            s_in.cmd.origin_row.eq(st.origin_row),
            s_in.cmd.epi.out.eq(st.out), s_in.cmd.epi.transposed.eq(st.transposed),
            s_in.cmd.epi.origin_col.eq(st.origin_col), s_in.cmd.epi.mult.eq(mult), s_in.cmd.epi.shift.eq(shift),
            s_in.cmd.epi.rounding.eq(rounding), s_in.cmd.epi.seed.eq(seed), s_in.cmd.epi.amax_slot.eq(amax_slot),
            s_in.t_load.eq(n_load), s_in.t_comp.eq(n_comp),
            load_q.w_data.eq(l_in), exec_q.w_data.eq(e_in), store_q.w_data.eq(s_in),
        ]
        with m.If(opcode == Op.PRELOAD):
            m.d.comb += [e_in.cmd.compute.eq(0), e_in.cmd.b_addr.eq(pl.b_addr), e_in.cmd.n.eq(pl.n),
                         e_in.cmd.steps.eq(steps_of(pl.k)), e_in.cmd.nib.eq((prec == Precision.INT4) & pl.k[0]),
                         e_in.r0.lo.eq(pl.b_addr), e_in.r0.hi.eq(pl.b_addr + steps_of(pl.k))]
        with m.Else():
            cp_steps = steps_of(cp.k)
            with m.If(cp.dataflow == Dataflow.WS):
                m.d.comb += [e_in.r0.lo.eq(cp.a_addr), e_in.r0.hi.eq(cp.a_addr + cp.m)]
            with m.Else():
                m.d.comb += [e_in.r0.lo.eq(cp.a_addr), e_in.r0.hi.eq(cp.a_addr + cp_steps),
                             e_in.r1.lo.eq(cp.b_addr), e_in.r1.hi.eq(cp.b_addr + cp_steps)]
            m.d.comb += [e_in.c.lo.eq(cp.c_addr), e_in.c.hi.eq(cp.c_addr + cp.m)]
            m.d.comb += [e_in.cmd.compute.eq(1), e_in.cmd.dataflow.eq(cp.dataflow),
                         e_in.cmd.accumulate.eq(cp.accumulate), e_in.cmd.a_addr.eq(cp.a_addr),
                         e_in.cmd.b_addr.eq(cp.b_addr), e_in.cmd.c_addr.eq(cp.c_addr), e_in.cmd.m.eq(cp.m),
                         e_in.cmd.n.eq(cp.n), e_in.cmd.steps.eq(steps_of(cp.k)),
                         e_in.cmd.nib.eq((prec == Precision.INT4) & cp.k[0])]

        with m.If(cur_go & ((opcode == Op.PRELOAD) | (opcode == Op.COMPUTE))):
            tables["exec"].record(m, n_exec, r0=e_in.r0, r1=e_in.r1)

        room = {"load": tables["load"].room(m, n_load, done_cnt["load"]),
                "comp": tables["comp"].room(m, n_comp, done_cnt["comp"]),
                "store": tables["store"].room(m, n_store, done_cnt["store"]),
                "exec": tables["exec"].room(m, n_exec, None)}
        with m.Switch(opcode):
            with m.Case(Op.NOP):
                m.d.comb += cur_go.eq(ok)
            with m.Case(Op.FENCE):
                m.d.comb += cur_go.eq(ok & all_idle)
            with m.Case(Op.CONFIG):
                m.d.comb += cur_go.eq(ok)
                with m.If(ok):
                    m.d.sync += [prec.eq(cf.precision), rounding.eq(cf.rounding), shift.eq(cf.shift),
                                 mult.eq(cf.mult), seed.eq(cf.seed), amax_slot.eq(cf.amax_slot)]
            with m.Case(Op.LOAD):
                m.d.comb += [cur_go.eq(ok & load_q.w_rdy & room["load"]), load_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += n_load.eq(n_load + 1)
                    tables["load"].record(m, n_load, to_acc=ld.to_acc, r=l_in.r, h=l_in.h)
            with m.Case(Op.PRELOAD):
                m.d.comb += [cur_go.eq(ok & exec_q.w_rdy & room["exec"]), exec_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += [n_exec.eq(n_exec + 1), weights_valid.eq(1)]
            with m.Case(Op.COMPUTE):
                m.d.comb += [cur_go.eq(ok & exec_q.w_rdy & room["exec"] & room["comp"]), exec_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += [n_exec.eq(n_exec + 1), n_comp.eq(n_comp + 1),
                                 self.macs.eq(self.macs + cp.m * cp.n * cp.k)]
                    tables["comp"].record(m, n_comp, c=e_in.c)
                    with m.If(cp.dataflow == Dataflow.OS):
                        m.d.sync += weights_valid.eq(0)
            with m.Case(Op.STORE):
                m.d.comb += [cur_go.eq(ok & store_q.w_rdy & room["store"]), store_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += n_store.eq(n_store + 1)
                    tables["store"].record(m, n_store, r=s_in.r, h=s_in.h)
        return m
