"""Command controller: fetch and decode 128-bit commands, check them, and run them on decoupled units.

Two blocks live here; :class:`cdmqta.hw.top.Accelerator` wires them to the array, the memories and the load /
store units (:mod:`cdmqta.hw.dma`).

:class:`Controller` (dispatcher + scoreboard)
---------------------------------------------
* ``start`` (one-cycle pulse) begins a run of ``n_cmds`` commands taken in order from the ``cmd`` stream
  (valid/ready, 128-bit payload, one command per cycle at most). It clears ``status``, ``error_index`` and the
  performance counters; ``done`` is low from the cycle after ``start`` until the run has finished, then high
  until the next ``start``. CONFIG state (precision, rounding, shift, mult, seed) persists across runs, like the
  ISA emulator's.
* Decode uses views built from :data:`cdmqta.hw.isa.FIELDS` (:func:`command_layout`). Checks happen in the
  order of :mod:`cdmqta.sw.emulator` (BAD_OPCODE, BAD_FIELD, NOT_BUILT, ZERO_SIZE, TILE_TOO_LARGE, ADDR_RANGE),
  plus one rule of this hardware: a WS COMPUTE needs weights, i.e. a PRELOAD earlier in the program with no OS
  COMPUTE after it (else BAD_FIELD; the PEs that would hold the weights are reused by OS tiles). The first bad
  command sets ``status`` / ``error_index`` (0-based), nothing after it is dispatched, the commands before it
  complete, then ``done`` rises: an error never hangs the controller.
* Dispatch: LOAD -> load queue (8 deep), PRELOAD / COMPUTE -> execute queue (8), STORE -> store queue (8, with a
  snapshot of the CONFIG state, so CONFIG never waits for the units), CONFIG / NOP take one cycle, FENCE waits
  until every unit is idle. Each queue is in order; the units run concurrently.
* Scoreboard (automatic; FENCE is never needed for correctness, only to wait for the host): a command at the
  head of its queue waits for the OLDER in-flight commands of the other queues that touch the same rows: a
  PRELOAD / COMPUTE for LOADs into its scratchpad rows (RAW) or its accumulator rows, and a COMPUTE for STOREs
  still reading its accumulator rows (WAR); a STORE for COMPUTEs writing its accumulator rows and LOADs into
  them (RAW) and LOADs still reading its host words (WAR); a LOAD for PRELOAD / COMPUTEs still reading its
  scratchpad rows (WAR), STOREs still writing its host words (RAW), and, into the accumulator, COMPUTEs and
  STOREs using its rows. Exact row ranges, kept in tables of the last 16 commands of each kind (host ranges of
  strided transfers include the gaps; dispatch pauses while 16 commands of a kind are in flight). So a
  program overlaps loads, computes and stores by placing the LOADs of later tiles ahead of earlier computes
  (into other rows) and by giving consecutive output tiles different accumulator rows (double buffers).
* Performance counters (64 bit, per run): ``busy_cycles`` (start to done), ``macs`` (m*n*k of dispatched
  COMPUTEs, in elements of their precision), ``compute_cycles`` (compute beats streamed into the array),
  ``stall_cycles`` (cycles in which the execute unit issued no beat because its next command waited for a load
  or a store).

:class:`ExecuteUnit` (drives :class:`cdmqta.hw.array.Array` by its protocol, see that docstring)
-------------------------------------------------------------------------------------------------
Beats are organised in windows; a window has one ``sel`` (it flips from window to window) and holds: the compute
beats of one tile (one per cycle), the drain shifts of the previous window's OS tile, and the shifts of PRELOADs
that arrive during it (their weights go to the shadow registers, used by the next window's WS tile). The shift
chain has S = ``config.chain_lanes`` lanes: a shift beat preloads S weight rows (scratchpad read ports 2 .. 1+S)
and drains S result rows (accumulator write ports 0 and 1; rows r and r - 1 of a tile, so always two banks).
Below, "shifts" of m rows are ceil(m / S) beats. Drain and
preload share shifts: a preload starts when the remaining drain shifts are no more than its own, so a window
needs max(shifts(m_prev), shifts(k_lanes_next)) shifts, and they ride on the compute beats (except the first beat
after an OS tile, H2). Timing rules (cycles at one beat per cycle, when operands are ready):

* A tile (window i) costs max(beats_i, q_i + d_i) cycles, beats = m (WS) or K steps (OS: k, ceil(k/2) in
  INT4), q_i = max(shifts(m_{i-1}) if tile i-1 was OS (its drain), shifts(k_lanes) of the PRELOAD that follows
  COMPUTE i);
  d_i = 1 if tile i-1 was OS and its window ended on a compute beat (H2: no shift right after it), else 0
  (a PRELOAD shifts its first row in the cycle the unit accepts it, the cycle after the COMPUTE's). The next tile's first beat follows directly (no bubbles), so a
  run of tiles whose beats exceed their shifts costs exactly the sum of their beats (verif/test_accel_rtl.py
  measures this).
* Dataflow switches: WS -> OS and OS -> OS overlap fully (the OS tile's drain rides on the next OS tile's
  beats); WS -> WS too. OS -> WS costs the OS tile's drain, 1 + shifts(m_prev) shift-only beats, because drained
  rows and a WS result row would need the accumulator's write ports in the same cycle.
* A PRELOAD with no compute to ride on costs shifts(k_lanes) shift-only beats (the first tile of a run, or a tile
  shorter than the next tile's preload).
* WS COMPUTEs after the same PRELOAD continue in the same window (same weights, any m, any c_addr).
* When the execute queue has nothing startable, an OS tile still in the array is drained at once (1 + shifts(m)
  cycles) so that STOREs and FENCEs depending on it can proceed.
* Results: a beat issued at cycle t reaches the array at t+1 and its row is written into the accumulator
  memory at t + 2 + LATENCY (LATENCY = R + C + 2); a COMPUTE counts as completed 2 cycles after its last row's
  write request. A run of tiles with its operands already loaded therefore costs, in ``busy_cycles``:
  (shifts(k_lanes) of the first tile, if WS) + sum of tile costs (+ 1 + shifts(m) of the last tile, if OS: its
  drain) + LATENCY + 8 (WS) or 9 (OS) (fetch, dispatch, write-back, done); e.g. with S = 2, 4 WS tiles m=16,
  k=8 on 8x8: 4 + 64 + 18 + 8 = 94, 4 OS tiles m=8, k=16: 64 + 5 + 18 + 9 = 96 (S = 1: 98 and 100; verif/
  test_accel_rtl.py measures the per-tile rules).
* Around it (see :mod:`cdmqta.hw.dma`): a LOAD of r rows occupies the load unit r + 3 cycles (r + 5 into the
  accumulator); a STORE of r rows occupies the store unit r + 1 cycles and its last host write lands r + 6
  cycles after it starts. The dispatcher takes one command per cycle; a command reaches its unit ~3 cycles after
  it is fetched. The host port moves one row per cycle in each direction, so a GEMM whose operand rows outnumber
  its compute beats (e.g. WS with n <= C streaming a new A chunk per tile) is bound by loads, not by the array.
Scratchpad reads (2 + S read ports): port 0 = A row of a compute beat, port 1 = B row of an OS compute beat,
port 2 + s = the weight row of preload lane s.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import array_latency
from .config import QTAConfig
from .dma import LoadCmd, StoreCmd
from .isa import CMD_BITS, FIELDS, OPCODE_BITS, Dataflow, Op, OutFormat, Precision, Status
from .pe import Control

__all__ = ["command_layout", "ExecCmd", "Controller", "ExecuteUnit"]


def command_layout(op):
    """``data.StructLayout`` of one opcode's command, built from :data:`cdmqta.hw.isa.FIELDS`."""
    fields = {"opcode": OPCODE_BITS}
    for name, width in FIELDS[Op(op)]:
        fields[name] = width
    return data.StructLayout(fields)


#: An execute-queue entry (PRELOAD or COMPUTE, decoded and checked).
ExecCmd = data.StructLayout({
    "compute": 1,       # 0: PRELOAD, 1: COMPUTE
    "dataflow": 1,
    "accumulate": 1,
    "precision": 1,
    "a_addr": 16,
    "b_addr": 16,
    "c_addr": 16,
    "m": 16,
    "n": 8,
    "steps": 16,        # K lanes (WS, PRELOAD) or K beats (OS): k, or ceil(k/2) in INT4
    "nib": 1,           # INT4 with an odd k: the high nibble of the last K lane is not an element
    "seq": 16,          # execute-command sequence number (reported back when its scratchpad reads are done)
})


def _fifo_depth(n):
    d = 1
    while d < n:
        d *= 2
    return d


class ExecuteUnit(wiring.Component):
    """Turns PRELOAD / COMPUTE commands into array beats and writes the results; see the module docstring."""

    def __init__(self, config):
        self._cfg = cfg = config
        R, C, W = cfg.rows, cfg.cols, cfg.acc_width
        self.latency = array_latency(R, C)
        self.lanes = S = cfg.chain_lanes
        sp_aw = max(1, (cfg.sp_rows - 1).bit_length())
        acc_aw = max(1, (cfg.acc_rows - 1).bit_length())
        row = data.ArrayLayout(signed(W), C)
        sig = {
            "cmd": In(stream.Signature(ExecCmd)),
            "arr_a": Out(data.ArrayLayout(signed(8), R)),
            "arr_b": Out(data.ArrayLayout(signed(8), C)),
            "arr_d": Out(data.ArrayLayout(signed(8), S * C)),
            "arr_ctrl": Out(Control),
            "arr_ws_valid": In(1), "arr_ws_row": In(row),
            "arr_drain_valid": In(1), "arr_drain_row": In(data.ArrayLayout(signed(W), S * C)),
            "arr_busy": In(1),
            "sp_r_en": Out(1).array(2 + S), "sp_r_addr": Out(sp_aw).array(2 + S),
            "sp_r_data": In(8 * cfg.lanes).array(2 + S),
            "acc_valid": Out(1), "acc_addr": Out(acc_aw), "acc_data": Out(row), "acc_mask": Out(C),
            "acc_accumulate": Out(1),
            "pre_read_done": Out(1), "pre_read_seq": Out(16), "comp_read_done": Out(1), "comp_read_seq": Out(16),
            "comp_done": Out(1), "idle": Out(1), "beat_compute": Out(1), "beat_any": Out(1),
        }
        if S == 2:      # the second drain lane's row (another accumulator bank)
            sig.update({"acc1_valid": Out(1), "acc1_addr": Out(acc_aw), "acc1_data": Out(row)})
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        S = self.lanes
        WS, OS = Dataflow.WS, Dataflow.OS

        def beats_of(rows):
            """Shift beats that move ``rows`` rows: ceil(rows / S)."""
            return (rows + (S - 1)) >> (S - 1)

        # -- window state ---------------------------------------------------------------------------------
        sel = Signal()
        win_comp = Signal()     # this window has (had) its compute tile
        win_pre = Signal()      # a PRELOAD ran in this window (its weights belong to the next window)
        w_os = Signal()         # this window's tile is OS: it must be drained in the next window
        w_c, w_m, w_n, w_acc = Signal(16), Signal(16), Signal(8), Signal()
        # compute job
        c_act, c_df, c_prec, c_acc, c_nib = Signal(), Signal(), Signal(), Signal(), Signal()
        c_a, c_b, c_c, c_m, c_steps, c_t, c_beats = (Signal(16, name=f"c_{x}") for x in "abcmstn")
        c_n = Signal(8)
        c_seq, p_seq = Signal(16), Signal(16)
        # drain job (the previous window's OS tile)
        dr_rem = Signal(range(R + 1))                       # drain shift beats left
        dr_top = Signal(16)                                 # tile row that drain lane 0 yields on the next drain beat
        dr_c, dr_n, dr_acc = Signal(16), Signal(8), Signal()
        # preload job
        p_act, p_nib = Signal(), Signal()
        p_rem = Signal(range(R + 1))                        # preload shift beats left
        p_b, p_n = Signal(16), Signal(8)
        # K lanes of the weights: loaded in this window (next: also the running preload's) / in use (cur)
        w_lanes_next, w_lanes_cur = Signal(range(R + 1)), Signal(range(R + 1))
        prev_os, prev_sel = Signal(), Signal()

        # -- beat decision (issue stage) ------------------------------------------------------------------
        do_comp = Signal()
        do_shift = Signal()
        pre_beat = Signal()
        res_beat = Signal()
        h2 = prev_os & (prev_sel != sel)
        # A PRELOAD at the head of the queue shifts its first row in the cycle it is accepted (bypass), so it
        # does not lag the COMPUTE it follows by a cycle.
        head = self.cmd.payload
        bypass = Signal()
        head_beats = Signal(range(R + 1))
        m.d.comb += head_beats.eq(beats_of(head.steps))
        m.d.comb += bypass.eq(self.cmd.valid & ~head.compute & ~p_act & ~h2 & (dr_rem <= head_beats))
        m.d.comb += [
            do_comp.eq(c_act & ((c_df == OS) | (dr_rem == 0))),
            do_shift.eq((((dr_rem != 0) | p_act) & ~h2) | bypass),
            pre_beat.eq((do_shift & p_act & (dr_rem <= p_rem)) | bypass),
            res_beat.eq(do_shift & (dr_rem != 0)),
            self.beat_compute.eq(do_comp),
            self.beat_any.eq(do_comp | do_shift),
        ]
        c_last = do_comp & (c_t + 1 == c_beats)
        p_last = pre_beat & p_act & (p_rem == 1)
        d_last = res_beat & (dr_rem == 1)
        c_fin = ~c_act | c_last
        p_fin = ~p_act | p_last
        d_fin = (dr_rem == 0) | d_last
        idle_next = c_fin & p_fin & d_fin

        m.d.comb += [
            self.sp_r_en[0].eq(do_comp), self.sp_r_addr[0].eq(c_a + c_t),
            self.sp_r_en[1].eq(do_comp & (c_df == OS)), self.sp_r_addr[1].eq(c_b + c_t),
        ]
        # preload beat with `rem` beats left (this one included) carries weight rows S*(rem-1) + s in lane s
        pre_rem = Mux(bypass, head_beats, p_rem)
        pre_lanes = Mux(bypass, head.steps, w_lanes_next)
        pre_row0 = Signal(16)
        m.d.comb += pre_row0.eq((pre_rem - 1) << (S - 1))
        lane_ok, lane_nib = Signal(S), Signal(S)
        for s_ in range(S):
            m.d.comb += [
                self.sp_r_en[2 + s_].eq(pre_beat),
                self.sp_r_addr[2 + s_].eq(Mux(bypass, head.b_addr, p_b) + pre_row0 + s_),
                lane_ok[s_].eq(pre_row0 + s_ < pre_lanes),
                lane_nib[s_].eq(Mux(bypass, head.nib, p_nib) & (pre_row0 + s_ + 1 == pre_lanes)),
            ]

        # Lane masks of the streamed A row (low / high nibble kept) and of the weight row.
        keep_lo = Signal(R)
        keep_hi = Signal(R)
        klanes = Mux(w_lanes_cur < c_steps, w_lanes_cur, c_steps)
        last_step = c_t + 1 == c_beats
        for i in range(R):
            ws_lo = i < klanes
            ws_hi = ws_lo & ~(c_nib & (i + 1 == c_steps))
            os_lo = i < c_m
            os_hi = os_lo & ~(c_nib & last_step)
            m.d.comb += [keep_lo[i].eq(Mux(c_df == OS, os_lo, ws_lo)), keep_hi[i].eq(Mux(c_df == OS, os_hi, ws_hi))]

        # -- present stage: registered beat + scratchpad data -> array inputs ------------------------------
        s_ctrl = Signal(Control)
        s_keep_lo, s_keep_hi = Signal(R), Signal(R)
        s_os_shift = Signal(range(R))       # OS: A lanes move up by R - m (bottom-aligned, array H-rule)
        s_pre, s_dok, s_dnib = Signal(), Signal(S), Signal(S)
        s_dn = Signal(8)
        m.d.sync += [
            s_ctrl.compute.eq(do_comp), s_ctrl.shift.eq(do_shift), s_ctrl.dataflow.eq(c_df),
            s_ctrl.precision.eq(c_prec), s_ctrl.sel.eq(sel), s_ctrl.first.eq((c_df == OS) & (c_t == 0)),
            s_keep_lo.eq(keep_lo), s_keep_hi.eq(keep_hi),
            s_os_shift.eq(Mux(c_df == OS, R - c_m, 0)),
            s_pre.eq(pre_beat), s_dn.eq(Mux(bypass, head.n, p_n)),
            s_dok.eq(lane_ok), s_dnib.eq(lane_nib),
            prev_os.eq(do_comp & (c_df == OS)), prev_sel.eq(sel),
        ]
        a_raw = self.sp_r_data[0][:8 * R]
        a_mask = Cat(*(Cat(Mux(s_keep_lo[i], 0xF, 0)[:4], Mux(s_keep_hi[i], 0xF, 0)[:4]) for i in range(R)))
        a_val = ((a_raw & a_mask) << (s_os_shift * 8))[:8 * R]
        m.d.comb += [self.arr_ctrl.eq(s_ctrl), self.arr_a.as_value().eq(a_val),
                     self.arr_b.as_value().eq(self.sp_r_data[1][:8 * C])]
        for s_ in range(S):
            for j in range(C):
                dj = self.sp_r_data[2 + s_][8 * j:8 * j + 8]
                keep = s_pre & s_dok[s_] & (j < s_dn)
                m.d.comb += self.arr_d[s_ * C + j].eq(Mux(keep, Mux(s_dnib[s_], dj & 0x0F, dj), 0))

        # -- result tags: one per WS compute beat and one per shift beat, consumed in order ----------------
        # (a drain tag's row is drain lane 0's; ``pair``: lane 1 carries row - 1 of the same tile)
        Tag = data.StructLayout({"row": 16, "n": 8, "acc": 1, "result": 1, "last": 1, "pair": 1})
        depth = _fifo_depth(self.latency + 4)
        ws_q = fifo.SyncFIFOBuffered(width=Tag.size, depth=depth)
        dr_q = fifo.SyncFIFOBuffered(width=Tag.size, depth=depth)
        m.submodules.ws_tags = ws_q
        m.submodules.drain_tags = dr_q
        ws_tag_in, dr_tag_in = Signal(Tag), Signal(Tag)
        m.d.comb += [
            ws_tag_in.row.eq(c_c + c_t), ws_tag_in.n.eq(c_n), ws_tag_in.acc.eq(c_acc), ws_tag_in.result.eq(1),
            ws_tag_in.last.eq(last_step),
            dr_tag_in.row.eq(dr_c + dr_top), dr_tag_in.n.eq(dr_n), dr_tag_in.acc.eq(dr_acc),
            dr_tag_in.result.eq(res_beat), dr_tag_in.last.eq(d_last), dr_tag_in.pair.eq((S == 2) & (dr_top != 0)),
            ws_q.w_en.eq(do_comp & (c_df == WS)), ws_q.w_data.eq(ws_tag_in),
            dr_q.w_en.eq(do_shift), dr_q.w_data.eq(dr_tag_in),
            ws_q.r_en.eq(self.arr_ws_valid), dr_q.r_en.eq(self.arr_drain_valid),
        ]
        ws_tag = Signal(Tag)
        dr_tag = Signal(Tag)
        m.d.comb += [ws_tag.eq(ws_q.r_data), dr_tag.eq(dr_q.r_data)]
        # WS results and drain results never meet in one cycle (drains do not ride on WS compute beats).
        wb_tag = Signal(Tag)
        with m.If(self.arr_ws_valid):
            m.d.comb += [self.acc_valid.eq(1), wb_tag.eq(ws_tag), self.acc_data.eq(self.arr_ws_row)]
        with m.Else():
            m.d.comb += [self.acc_valid.eq(self.arr_drain_valid & dr_tag.result), wb_tag.eq(dr_tag),
                         self.acc_data.as_value().eq(self.arr_drain_row.as_value()[:C * cfg.acc_width])]
            if S == 2:
                m.d.comb += [self.acc1_valid.eq(self.arr_drain_valid & dr_tag.result & dr_tag.pair),
                             self.acc1_addr.eq(dr_tag.row - 1),
                             self.acc1_data.as_value().eq(self.arr_drain_row.as_value()[C * cfg.acc_width:])]
        m.d.comb += [self.acc_addr.eq(wb_tag.row), self.acc_accumulate.eq(wb_tag.acc)]
        for j in range(C):
            m.d.comb += self.acc_mask[j].eq(j < wb_tag.n)
        done_d = Signal(2)
        m.d.sync += done_d.eq(Cat(done_d[1], self.acc_valid & wb_tag.last))
        m.d.comb += self.comp_done.eq(done_d[0])
        m.d.sync += [self.pre_read_done.eq(p_last | (bypass & (head_beats == 1))), self.comp_read_done.eq(c_last),
                     self.pre_read_seq.eq(Mux(bypass, head.seq, p_seq)), self.comp_read_seq.eq(c_seq)]

        # -- job progress ---------------------------------------------------------------------------------
        with m.If(do_comp):
            m.d.sync += c_t.eq(c_t + 1)
            with m.If(c_last):
                m.d.sync += c_act.eq(0)
        with m.If(pre_beat & p_act):
            m.d.sync += p_rem.eq(p_rem - 1)
            with m.If(p_last):
                m.d.sync += p_act.eq(0)
        with m.If(res_beat):
            m.d.sync += [dr_rem.eq(dr_rem - 1), dr_top.eq(dr_top - S)]

        # -- accepting commands (overrides the progress above) --------------------------------------------
        is_pre = ~head.compute
        join = ~win_comp & ~win_pre
        cont = win_comp & ~win_pre & (c_df == WS) & (head.dataflow == WS) & c_fin
        new_win = (win_comp | win_pre) & idle_next
        acc_pre = self.cmd.valid & is_pre & p_fin
        acc_comp = self.cmd.valid & head.compute & (join | cont | new_win)
        eager = ~self.cmd.valid & win_comp & w_os & idle_next
        m.d.comb += self.cmd.ready.eq(acc_pre | acc_comp)

        def flip():
            m.d.sync += [sel.eq(~sel), win_pre.eq(0), dr_rem.eq(Mux(w_os, beats_of(w_m), 0)), dr_top.eq(w_m - 1),
                         dr_c.eq(w_c), dr_n.eq(w_n), dr_acc.eq(w_acc)]
            with m.If(win_pre):
                m.d.sync += w_lanes_cur.eq(w_lanes_next)

        with m.If(acc_pre):
            m.d.sync += [p_act.eq(1), p_rem.eq(head_beats), p_b.eq(head.b_addr),
                         p_n.eq(head.n), p_nib.eq(head.nib), win_pre.eq(1), w_lanes_next.eq(head.steps),
                         p_seq.eq(head.seq)]
            with m.If(bypass):
                m.d.sync += [p_act.eq(head_beats != 1), p_rem.eq(head_beats - 1)]
        with m.If(acc_comp):
            with m.If(~(join | cont)):
                flip()
            m.d.sync += [
                c_act.eq(1), c_t.eq(0), c_df.eq(head.dataflow), c_prec.eq(head.precision), c_acc.eq(head.accumulate),
                c_nib.eq(head.nib), c_a.eq(head.a_addr), c_b.eq(head.b_addr), c_c.eq(head.c_addr),
                c_m.eq(head.m), c_n.eq(head.n), c_steps.eq(head.steps), c_seq.eq(head.seq),
                c_beats.eq(Mux(head.dataflow == OS, head.steps, head.m)),
                win_comp.eq(1), w_os.eq(head.dataflow == OS),
                w_c.eq(head.c_addr), w_m.eq(head.m), w_n.eq(head.n), w_acc.eq(head.accumulate),
            ]
        with m.Elif(eager):
            flip()
            m.d.sync += [win_comp.eq(0), w_os.eq(0)]

        m.d.comb += self.idle.eq(~c_act & ~p_act & (dr_rem == 0) & ~(win_comp & w_os) & ~ws_q.r_rdy & ~dr_q.r_rdy
                                 & ~self.arr_busy & (done_d == 0) & ~s_ctrl.compute & ~s_ctrl.shift)
        return m


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
        Range = data.StructLayout({"lo": 16, "hi": 17})           # rows lo .. hi-1 (empty when lo == hi)
        HRange = data.StructLayout({"lo": 33, "hi": 34})          # host words lo .. hi-1 (stride gaps included)
        LoadEntry = data.StructLayout({"cmd": LoadCmd(haw), "r": Range, "h": HRange,
                                       "t_exec": 16, "t_comp": 16, "t_store": 16})
        ExecEntry = data.StructLayout({"cmd": ExecCmd, "r0": Range, "r1": Range, "c": Range,
                                       "t_load": 16, "t_store": 16})
        StoreEntry = data.StructLayout({"cmd": StoreCmd(haw), "r": Range, "h": HRange, "t_load": 16, "t_comp": 16})
        load_q = fifo.SyncFIFOBuffered(width=LoadEntry.size, depth=8)
        exec_q = fifo.SyncFIFOBuffered(width=ExecEntry.size, depth=8)
        store_q = fifo.SyncFIFOBuffered(width=StoreEntry.size, depth=8)
        m.submodules.load_q, m.submodules.exec_q, m.submodules.store_q = load_q, exec_q, store_q
        le, ee, se = LoadEntry(load_q.r_data), ExecEntry(exec_q.r_data), StoreEntry(store_q.r_data)

        # -- in-flight tables: exact row ranges of the last NT dispatched commands of each kind --------------
        # A command at a queue head waits only for OLDER commands of the other kinds that are still in flight
        # and touch the same rows (RAW, WAR, WAW on scratchpad, accumulator and host memory). In flight: loads
        # until done, computes until their results are written, stores until read (acc) / written (host);
        # each kind completes in order, so "in flight" is "sequence number >= completed count". Execute
        # commands release their scratchpad rows out of order (a PRELOAD may finish reading before the COMPUTE
        # it rides on), so their slots carry a pending bit. Dispatch waits while a kind has NT commands in
        # flight (or the execute slot to reuse is still pending), so a slot is never reused too early.
        NT = 16
        LoadSlot = data.StructLayout({"seq": 16, "to_acc": 1, "r": Range, "h": HRange})
        ExecSlot = data.StructLayout({"seq": 16, "pending": 1, "r0": Range, "r1": Range})
        CompSlot = data.StructLayout({"seq": 16, "c": Range})
        StoreSlot = data.StructLayout({"seq": 16, "r": Range, "h": HRange})
        lslots = [Signal(LoadSlot, name=f"lslot{j}") for j in range(NT)]
        eslots = [Signal(ExecSlot, name=f"eslot{j}") for j in range(NT)]
        cslots = [Signal(CompSlot, name=f"cslot{j}") for j in range(NT)]
        sslots = [Signal(StoreSlot, name=f"sslot{j}") for j in range(NT)]

        def overlap(x, y):
            return (x.lo < y.hi) & (y.lo < x.hi)

        def wrap_lt(x, y):
            """x < y for 16-bit sequence numbers that are less than 2**15 apart."""
            d = (y - x)[:16]
            return (d != 0) & (d < (1 << 15))

        def older_in_flight(sl, tag, done):
            return wrap_lt(sl.seq, tag) & ~wrap_lt(sl.seq, done)

        def any_of(terms):
            return Cat(*terms).any()

        # LOAD at the head of its queue.
        load_ok = ~any_of(
            [sl.pending & wrap_lt(sl.seq, le.t_exec) & ~le.cmd.to_acc & (overlap(sl.r0, le.r) | overlap(sl.r1, le.r))
             for sl in eslots]
            + [older_in_flight(sl, le.t_comp, done_cnt["comp"]) & le.cmd.to_acc & overlap(sl.c, le.r) for sl in cslots]
            + [older_in_flight(sl, le.t_store, done_cnt["store_read"]) & le.cmd.to_acc & overlap(sl.r, le.r)
               for sl in sslots]
            + [older_in_flight(sl, le.t_store, done_cnt["store"]) & overlap(sl.h, le.h) for sl in sslots])
        # PRELOAD / COMPUTE at the head of the execute queue.
        exec_ok = ~any_of(
            [older_in_flight(sl, ee.t_load, done_cnt["load"])
             & Mux(sl.to_acc, ee.cmd.compute & overlap(sl.r, ee.c), overlap(sl.r, ee.r0) | overlap(sl.r, ee.r1))
             for sl in lslots]
            + [older_in_flight(sl, ee.t_store, done_cnt["store_read"]) & ee.cmd.compute & overlap(sl.r, ee.c)
               for sl in sslots])
        # STORE at the head of its queue.
        store_ok = ~any_of(
            [older_in_flight(sl, se.t_load, done_cnt["load"]) & ((sl.to_acc & overlap(sl.r, se.r)) | overlap(sl.h, se.h))
             for sl in lslots]
            + [older_in_flight(sl, se.t_comp, done_cnt["comp"]) & overlap(sl.c, se.r) for sl in cslots])

        for j, sl in enumerate(eslots):
            with m.If(self.pre_read_done & (self.pre_read_seq[:4] == j)):
                m.d.sync += sl.pending.eq(0)
            with m.If(self.comp_read_done & (self.comp_read_seq[:4] == j)):
                m.d.sync += sl.pending.eq(0)

        m.d.comb += [
            self.load.valid.eq(load_q.r_rdy & load_ok), self.load.payload.eq(le.cmd), load_q.r_en.eq(self.load.ready & load_ok),
            self.exec.valid.eq(exec_q.r_rdy & exec_ok), self.exec.payload.eq(ee.cmd), exec_q.r_en.eq(self.exec.ready & exec_ok),
            self.store.valid.eq(store_q.r_rdy & store_ok), self.store.payload.eq(se.cmd),
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
        with m.If(self.start):
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
                    (cf.shift > 47, Status.BAD_FIELD),
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
            s_in.cmd.epi.rounding.eq(rounding), s_in.cmd.epi.seed.eq(seed),
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
            for j, sl in enumerate(eslots):
                with m.If(n_exec[:4] == j):
                    m.d.sync += [sl.seq.eq(n_exec), sl.pending.eq(1), sl.r0.eq(e_in.r0), sl.r1.eq(e_in.r1)]

        eslot_free = Signal()
        for j, sl in enumerate(eslots):
            with m.If(n_exec[:4] == j):
                m.d.comb += eslot_free.eq(~sl.pending)
        room = {"load": (n_load - done_cnt["load"])[:16] < NT, "comp": (n_comp - done_cnt["comp"])[:16] < NT,
                "store": (n_store - done_cnt["store"])[:16] < NT, "exec": eslot_free}
        self._debug = {"fetched": fetched, "cur_valid": cur_valid, "cur_index": cur_index, "opcode": opcode,
                       "load_q": load_q.r_rdy, "exec_q": exec_q.r_rdy, "store_q": store_q.r_rdy, "load_ok": load_ok,
                       "exec_ok": exec_ok, "store_ok": store_ok, "err": err, "running": running, "t_store": ee.t_store,
                       **{f"done_{k}": v for k, v in done_cnt.items()}, "n_load": n_load, "n_exec": n_exec,
                       "n_comp": n_comp, "n_store": n_store, "load_w_rdy": load_q.w_rdy, "exec_w_rdy": exec_q.w_rdy,
                       "store_w_rdy": store_q.w_rdy, "t_exec": le.t_exec, "t_load": ee.t_load}
        with m.Switch(opcode):
            with m.Case(Op.NOP):
                m.d.comb += cur_go.eq(ok)
            with m.Case(Op.FENCE):
                m.d.comb += cur_go.eq(ok & all_idle)
            with m.Case(Op.CONFIG):
                m.d.comb += cur_go.eq(ok)
                with m.If(ok):
                    m.d.sync += [prec.eq(cf.precision), rounding.eq(cf.rounding), shift.eq(cf.shift),
                                 mult.eq(cf.mult), seed.eq(cf.seed)]
            with m.Case(Op.LOAD):
                m.d.comb += [cur_go.eq(ok & load_q.w_rdy & room["load"]), load_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += n_load.eq(n_load + 1)
                    for j, sl in enumerate(lslots):
                        with m.If(n_load[:4] == j):
                            m.d.sync += [sl.seq.eq(n_load), sl.to_acc.eq(ld.to_acc), sl.r.eq(l_in.r), sl.h.eq(l_in.h)]
            with m.Case(Op.PRELOAD):
                m.d.comb += [cur_go.eq(ok & exec_q.w_rdy & room["exec"]), exec_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += [n_exec.eq(n_exec + 1), weights_valid.eq(1)]
            with m.Case(Op.COMPUTE):
                m.d.comb += [cur_go.eq(ok & exec_q.w_rdy & room["exec"] & room["comp"]), exec_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += [n_exec.eq(n_exec + 1), n_comp.eq(n_comp + 1),
                                 self.macs.eq(self.macs + cp.m * cp.n * cp.k)]
                    for j, sl in enumerate(cslots):
                        with m.If(n_comp[:4] == j):
                            m.d.sync += [sl.seq.eq(n_comp), sl.c.eq(e_in.c)]
                    with m.If(cp.dataflow == Dataflow.OS):
                        m.d.sync += weights_valid.eq(0)
            with m.Case(Op.STORE):
                m.d.comb += [cur_go.eq(ok & store_q.w_rdy & room["store"]), store_q.w_en.eq(cur_go)]
                with m.If(cur_go):
                    m.d.sync += n_store.eq(n_store + 1)
                    for j, sl in enumerate(sslots):
                        with m.If(n_store[:4] == j):
                            m.d.sync += [sl.seq.eq(n_store), sl.r.eq(s_in.r), sl.h.eq(s_in.h)]
        return m
