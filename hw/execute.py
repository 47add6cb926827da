"""The execute unit: PRELOAD / COMPUTE commands become array beats, and the array's rows go to the accumulator.

:class:`ExecuteUnit` drives :class:`cdmqta.hw.array.Array` by its protocol (see that docstring).

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
  (a PRELOAD shifts its first row in the cycle the unit accepts it, the cycle after the COMPUTE's). The next tile's
  first beat follows directly (no bubbles), so a
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
Scratchpad reads (``sp_r``, 2 + S read ports): port 0 = A row of a compute beat, port 1 = B row of an OS compute
beat, port 2 + s = the weight row of preload lane s.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import array_latency
from .isa import Dataflow
from .memories import read_port_signature
from .pe import Control

__all__ = ["ExecCmd", "ExecuteUnit"]


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
            "sp_r": Out(read_port_signature(sp_aw, 8 * cfg.lanes)).array(2 + S),
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
            self.sp_r[0].en.eq(do_comp), self.sp_r[0].addr.eq(c_a + c_t),
            self.sp_r[1].en.eq(do_comp & (c_df == OS)), self.sp_r[1].addr.eq(c_b + c_t),
        ]
        # preload beat with `rem` beats left (this one included) carries weight rows S*(rem-1) + s in lane s
        pre_rem = Mux(bypass, head_beats, p_rem)
        pre_lanes = Mux(bypass, head.steps, w_lanes_next)
        pre_row0 = Signal(16)
        m.d.comb += pre_row0.eq((pre_rem - 1) << (S - 1))
        lane_ok, lane_nib = Signal(S), Signal(S)
        for s_ in range(S):
            m.d.comb += [
                self.sp_r[2 + s_].en.eq(pre_beat),
                self.sp_r[2 + s_].addr.eq(Mux(bypass, head.b_addr, p_b) + pre_row0 + s_),
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
        a_raw = self.sp_r[0].data[:8 * R]
        a_mask = Cat(*(Cat(Mux(s_keep_lo[i], 0xF, 0)[:4], Mux(s_keep_hi[i], 0xF, 0)[:4]) for i in range(R)))
        a_val = ((a_raw & a_mask) << (s_os_shift * 8))[:8 * R]
        m.d.comb += [self.arr_ctrl.eq(s_ctrl), self.arr_a.as_value().eq(a_val),
                     self.arr_b.as_value().eq(self.sp_r[1].data[:8 * C])]
        for s_ in range(S):
            for j in range(C):
                dj = self.sp_r[2 + s_].data[8 * j:8 * j + 8]
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
