"""The program-level cycle model of the controller: ``busy_cycles`` of a command program, cycle for cycle.

:func:`program_cycles` is the tiler's default cost model and the one model that is validated against the RTL's
``busy_cycles`` counter (``python scripts/validate_cycle_model.py``: every GEMM exact). It models
:mod:`cdmqta.hw.controller` at the level of its commands: dispatcher, unit queues, scoreboard, load / store units
and the execute unit's window logic.
"""

import heapq
from collections import deque

from cdmqta.hw.array import array_latency
from cdmqta.hw.isa import Dataflow, Op, Precision, decode

from .memory import IDEAL, load_row_bytes, store_row_bytes

__all__ = ["program_cycles", "runs_cycles"]


def _ceil(a, b):
    return -(-a // b)

# ---------------------------------------------------------------------------------------------------------------
# Command programs: THE cycle model of the controller (the tiler's cost model, validated against the RTL)

#: Timing constants of :func:`program_cycles` (cycles), read off hw/controller.py, hw/dma.py, hw/top.py and
#: checked against the RTL's ``busy_cycles`` (scripts/validate_cycle_model.py).
FETCH = 2               # start -> the first command is in the dispatch register (SimTop's feeder, 1 per cycle)
LOAD_BUSY = 2           # a LOAD of r scratchpad rows: done pulse r + 2 cycles after acceptance, next one at r + 3
LOAD_ACC_EXTRA = 2      # ... into the accumulator (its read-modify-write port): 2 more
STORE_IDLE = 7          # STORE of r rows: reads from acceptance + 1 for r cycles (next STORE then), last host write
                        # at r + 5 (epilogue), the unit idle (pipeline empty, completion visible) from r + 7 on
RESULT = 2              # beat issued at t -> array input t + 1 -> row at t + 1 + LATENCY -> comp_done at + 2
PROGRAM_CACHE_SIZE = 4096


def _cmd_list(program):
    return [decode(w) if isinstance(w, int) else (w[0], w[1]) for w in program]


def _ranges(op, f, steps_of):
    """(kind, r0, r1, c, h, to_acc) of a command: scratchpad / accumulator row ranges and host words."""
    e = (0, 0)
    if op == Op.LOAD:
        h = (f["host_addr"], f["host_addr"] + (f["rows"] - 1) * f["host_stride"] + 1)
        return "load", (f["sp_addr"], f["sp_addr"] + f["rows"]), e, e, h, bool(f["to_acc"])
    if op == Op.STORE:
        h = (f["host_addr"], f["host_addr"] + (f["rows"] - 1) * f["host_stride"] + 1)
        return "store", (f["acc_addr"], f["acc_addr"] + f["rows"]), e, e, h, False
    if op == Op.PRELOAD:
        return "exec", (f["b_addr"], f["b_addr"] + steps_of(f["k"])), e, e, e, False
    if op == Op.COMPUTE:
        s = steps_of(f["k"])
        c = (f["c_addr"], f["c_addr"] + f["m"])
        if f["dataflow"] == Dataflow.WS:
            return "exec", (f["a_addr"], f["a_addr"] + f["m"]), e, c, e, False
        return "exec", (f["a_addr"], f["a_addr"] + s), (f["b_addr"], f["b_addr"] + s), c, e, False
    return None, e, e, e, e, False


def _ov(x, y):
    return x[0] < y[1] and y[0] < x[1]


class _Queue:
    """amaranth.lib.fifo.SyncFIFOBuffered(depth): depth - 1 inner entries, then the output register (``out``)."""

    __slots__ = ("inner", "out", "level", "depth")

    def __init__(self, depth):
        self.inner, self.out, self.level, self.depth = deque(), None, 0, depth

    def step(self, pop, push):
        """One clock edge: ``pop`` (r_en with out valid), ``push`` (an entry or None, only if w_rdy)."""
        read = self.level and (self.out is None or pop)
        if read:
            self.out = self.inner.popleft()
        elif pop:
            self.out = None
        if push is not None:
            self.inner.append(push)
        self.level = len(self.inner)

    @property
    def w_rdy(self):
        return self.level < self.depth - 1

    @property
    def empty(self):
        return self.level == 0 and self.out is None


def program_cycles(program, config, state=(), skip_quiet=True, memory=None):
    """``busy_cycles`` of a command program (128-bit words or decoded ``(Op, fields)`` pairs) on ``config``: the
    one program-level cycle model of the controller, the tiler's default cost model, validated cycle for cycle
    against the RTL (scripts/validate_cycle_model.py, verif/test_cycle_model.py). ``state``: commands of earlier
    runs whose CONFIG state (precision) persists into this one.

    A cycle-level model of :mod:`cdmqta.hw.controller` at the level of its commands (not its datapath): the
    dispatcher (one command per cycle, in order; waits for queue room and the in-flight limits), the three unit
    queues, the scoreboard (a command at a queue head waits for OLDER commands of the other units that touch the
    same scratchpad / accumulator rows or host words, until their completion becomes visible), the load unit
    (r + 3 cycles per LOAD), the store unit (r + 1 per STORE, results r + 5 later), and the execute unit's window
    logic (compute beats, preload shifts and OS drain shifts of hw/execute.py's ExecuteUnit, hazard H2, eager
    drain), with results landing ``R + C + 2`` (array LATENCY) + ``RESULT`` cycles after their beat. Quiet
    stretches (a tile streaming, units waiting) are skipped, so the cost is about one step per event;
    ``skip_quiet=False`` steps every cycle (slow; verif/test_perf.py checks that it gives the same result).

    ``memory`` (a :class:`cdmqta.sw.perf.memory.Memory`; None = ``Memory()``, the ideal memory of today's RTL, the
    validated case): with a bandwidth B, LOADs and STOREs share a bus of B bytes/cycle (a transfer of r rows
    takes at least r cycles and gets what the other unit's running transfer leaves of B:
    :meth:`~cdmqta.sw.perf.memory.Memory.transfer`; a LOAD and a STORE accepted in the same cycle: the
    LOAD first), and a LOAD's data arrive ``memory.latency`` cycles later (its completion is visible that much
    later; the load unit takes the next LOAD without waiting)."""
    program = list(program)
    memory = IDEAL if memory is None else memory
    key = None
    if PROGRAM_CACHE_SIZE and skip_quiet and not state and all(isinstance(w, int) for w in program):
        key = (tuple(program), config, memory)
        if key in _CACHE:
            return _CACHE[key]
    res = _simulate(_cmd_list(program), config, _cmd_list(state), skip_quiet, memory)
    if key is not None:
        if len(_CACHE) >= PROGRAM_CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = res
    return res


_CACHE = {}


def _simulate(cmds, config, state, skip_quiet, memory=IDEAL):

    lat = array_latency(config.rows, config.cols)     # hw/array.py LATENCY
    if not cmds:
        return 0
    prec = Precision.INT8
    for op, f in state:
        if Op(op) == Op.CONFIG:
            prec = Precision(f.get("precision", 0))

    # -- static analysis: per command its kind, ranges and the older commands it waits for ----------------
    # (steps use the CONFIG precision at dispatch, i.e. of the commands before it in program order)
    info, deps = [], []
    nt = config.in_flight
    loads, execs, comps, stores = [], [], [], []     # the last nt of each kind: (index, ranges...)
    for i, (op, f) in enumerate(cmds):
        op = Op(op)
        int4 = prec == Precision.INT4
        kind, r0, r1, c, h, to_acc = _ranges(op, f, (lambda k: (k + 1) >> 1) if int4 else (lambda k: k))
        d = []
        if kind == "load":
            if not to_acc:
                d += [("xr", j) for j, jr0, jr1 in execs if _ov(jr0, r0) or _ov(jr1, r0)]
            else:
                d += [("cd", j) for j, jc in comps if _ov(jc, r0)]
                d += [("sr", j) for j, jr, jh in stores if _ov(jr, r0)]
            d += [("sd", j) for j, jr, jh in stores if _ov(jh, h)]
        elif kind == "exec":
            d += [("ld", j) for j, jr, jacc, jh in loads
                  if ((op == Op.COMPUTE and _ov(jr, c)) if jacc else (_ov(jr, r0) or _ov(jr, r1)))]
            if op == Op.COMPUTE:
                d += [("sr", j) for j, jr, jh in stores if _ov(jr, c)]
        elif kind == "store":
            d += [("ld", j) for j, jr, jacc, jh in loads if (jacc and _ov(jr, r0)) or _ov(jh, h)]
            d += [("cd", j) for j, jc in comps if _ov(jc, r0)]
        deps.append(d)
        if kind == "load":
            loads = (loads + [(i, r0, to_acc, h)])[-nt:]
        elif kind == "exec":
            execs = (execs + [(i, r0, r1)])[-nt:]
            if op == Op.COMPUTE:
                comps = (comps + [(i, c)])[-nt:]
        elif kind == "store":
            stores = (stores + [(i, r0, h)])[-nt:]
        steps = ((f.get("k", 0) + 1) >> 1) if int4 else f.get("k", 0)
        info.append((op, kind, to_acc, steps, f))
        if op == Op.CONFIG:
            prec = Precision(f.get("precision", 0))
    return _run(info, deps, lat, config, skip_quiet, memory)


def _run(info, deps, lat, config, skip_quiet, memory=IDEAL):
    """The cycle loop of :func:`program_cycles` (see there); returns the busy cycles."""

    INF = 1 << 62
    n = len(info)
    ok = {e: [INF] * n for e in ("ld", "cd", "sr", "sd", "xr")}
    S, NT = config.chain_lanes, config.in_flight
    lq, xq, sq = (_Queue(config.queue_depth) for _ in range(3))
    load_free = store_free = store_idle = 0
    ld_x = st_x = (0, 0.0)            # (end, bytes/cycle) of the load unit's / store unit's last transfer
    real = not memory.ideal           # a memory with a bandwidth / latency (else exactly today's host port)
    mem_lat = memory.latency
    n_load = n_comp = n_store = 0
    exec_seq = []                   # command index of each dispatched PRELOAD / COMPUTE
    loads_i, comps_i, stores_i = [], [], []
    done_ld = done_cd = done_sd = 0
    # execute unit state (hw/execute.py ExecuteUnit)
    sel = win_comp = win_pre = w_os = False
    w_m = w_idx = 0
    c_act = c_os = False
    c_t = c_beats = c_idx = 0
    p_act = False
    p_rem = p_idx = 0
    dr_rem = dr_idx = 0
    prev_os = prev_sel = False
    last_beat = -INF
    cur, cycle = 0, FETCH           # command in the dispatch register, from cycle FETCH on

    times = []                      # heap of the cycles at which completions become visible (for skipping)

    def ready(i, c):
        return all(ok[e][j] <= c for e, j in deps[i])

    def when(e, i, t):
        ok[e][i] = t
        heapq.heappush(times, t)

    c = 0
    while True:
        # -- combinational part of cycle c ----------------------------------------------------------------
        while done_ld < len(loads_i) and ok["ld"][loads_i[done_ld]] <= c:
            done_ld += 1
        while done_cd < len(comps_i) and ok["cd"][comps_i[done_cd]] <= c:
            done_cd += 1
        while done_sd < len(stores_i) and ok["sd"][stores_i[done_sd]] <= c:
            done_sd += 1
        # queue heads
        lpop = lq.out is not None and c >= load_free and ready(lq.out, c)
        spop = sq.out is not None and c >= store_free and ready(sq.out, c)
        xvalid = xq.out is not None and ready(xq.out, c)
        if xvalid:
            hop, _, _, hsteps, hf = info[xq.out]
            hbeats = _ceil(hsteps, S)   # shift beats of the head's preload
        h2 = prev_os and prev_sel != sel
        # a PRELOAD shifts its first row in the cycle it is accepted (bypass)
        bypass = xvalid and hop == Op.PRELOAD and not p_act and not h2 and dr_rem <= hbeats
        do_comp = c_act and (c_os or dr_rem == 0)
        do_shift = ((dr_rem != 0 or p_act) and not h2) or bypass
        pre_beat = (do_shift and p_act and dr_rem <= p_rem) or bypass
        res_beat = do_shift and dr_rem != 0
        c_last = do_comp and c_t + 1 == c_beats
        p_last = pre_beat and p_act and p_rem == 1
        d_last = res_beat and dr_rem == 1
        idle_next = (not c_act or c_last) and (not p_act or p_last) and (dr_rem == 0 or d_last)
        acc_pre = acc_comp = join = cont = False
        if xvalid:
            if hop == Op.PRELOAD:
                acc_pre = not p_act or p_last
            else:
                h_os = hf["dataflow"] != 0
                join = not win_comp and not win_pre
                cont = win_comp and not win_pre and not c_os and not h_os and (not c_act or c_last)
                acc_comp = join or cont or ((win_comp or win_pre) and idle_next)
        eager = not xvalid and win_comp and w_os and idle_next
        exec_idle = (not c_act and not p_act and dr_rem == 0 and not (win_comp and w_os)
                     and c >= last_beat + lat + 4)
        all_idle = (lq.empty and xq.empty and sq.empty and c >= load_free + mem_lat and exec_idle
                    and c >= store_idle)
        # dispatch
        go = False
        if cur < n and c >= cycle:
            op, kind, to_acc, steps, f = info[cur]
            if op == Op.FENCE:
                go = all_idle
            elif kind == "load":
                go = lq.w_rdy and n_load - done_ld < NT
            elif kind == "exec":
                s = len(exec_seq)
                go = xq.w_rdy and (s < NT or ok["xr"][exec_seq[s - NT]] <= c)
                if op == Op.COMPUTE:
                    go = go and n_comp - done_cd < NT
            elif kind == "store":
                go = sq.w_rdy and n_store - done_sd < NT
            else:
                go = True
        elif cur >= n and all_idle:
            return c + 1
        # -- skip a quiet stretch: nothing but beat / shift counters move until the next event ----------------
        if skip_quiet and not (go or lpop or spop or acc_pre or acc_comp or eager or c_last or p_last or d_last or h2
                or (p_act and dr_rem) or prev_os != (do_comp and c_os)
                or (lq.level and lq.out is None) or (xq.level and xq.out is None) or (sq.level and sq.out is None)):
            while times and times[0] <= c:
                heapq.heappop(times)
            k = times[0] - c if times else INF
            for t in (load_free, store_free, store_idle, cycle, last_beat + lat + 4):
                if t > c:
                    k = min(k, t - c)
            if do_comp:
                k = min(k, c_beats - c_t - 1)
            if pre_beat:
                k = min(k, p_rem - 1)
            if res_beat:
                k = min(k, dr_rem - 1)
            if k >= INF:
                raise RuntimeError("program_cycles: the program can never finish (a command waits forever)")
            if k > 1:
                k -= 1          # cycles c .. c+k-1 repeat cycle c's decisions
                if do_comp:
                    c_t += k
                if pre_beat:
                    p_rem -= k
                if res_beat:
                    dr_rem -= k
                if do_comp or do_shift:
                    last_beat = c + k - 1
                c += k
                continue
        # -- clock edge ---------------------------------------------------------------------------------
        if do_comp or do_shift:
            last_beat = c
        if c_last:
            when("xr", c_idx, c + 2)
            if not c_os:
                when("cd", c_idx, c + lat + RESULT + 2)
        if p_last:
            when("xr", p_idx, c + 2)
        if bypass and hbeats == 1:
            when("xr", xq.out, c + 2)
        if d_last:
            when("cd", dr_idx, c + lat + RESULT + 2)
        prev_os, prev_sel = do_comp and c_os, sel
        if do_comp:
            c_t += 1
            if c_last:
                c_act = False
        if pre_beat and p_act:
            p_rem -= 1
            if p_last:
                p_act = False
        if res_beat:
            dr_rem -= 1
        if acc_pre:
            p_act, p_rem, win_pre, p_idx = True, hbeats, True, xq.out
            if bypass:
                p_act, p_rem = hbeats != 1, hbeats - 1
        if acc_comp or eager:
            if eager or not (join or cont):
                sel = not sel
                win_pre = False
                dr_rem, dr_idx = (_ceil(w_m, S), w_idx) if w_os else (0, 0)
            if acc_comp:
                c_act, c_t, c_os, c_idx = True, 0, h_os, xq.out
                c_beats = hsteps if h_os else hf["m"]
                win_comp, w_os, w_m, w_idx = True, h_os, hf["m"], xq.out
            else:
                win_comp = w_os = False
        if lpop:
            i = lq.out
            rows = info[i][4]["rows"]
            if real:
                nbytes = rows * load_row_bytes(config, info[i][2])
                rows, rate = memory.transfer(rows, nbytes, c, *st_x, read=True)
                ld_x = (c + rows, rate)
            if info[i][2]:
                load_free = c + rows + LOAD_BUSY + 1 + LOAD_ACC_EXTRA
            else:
                load_free = c + rows + LOAD_BUSY + 1
            when("ld", i, load_free + mem_lat)
        if spop:
            i = sq.out
            f = info[i][4]
            rows = f["rows"]
            if real:
                nbytes = rows * store_row_bytes(f.get("out", 0), f.get("cols", config.cols))
                # a LOAD accepted in the same cycle came first (it is already in ld_x)
                rows, rate = memory.transfer(rows, nbytes, c, *ld_x, read=False)
                st_x = (c + rows, rate)
            store_free = c + rows + 1
            when("sr", i, c + rows + 2)
            store_idle = c + rows + STORE_IDLE
            when("sd", i, store_idle)
        pushes = {}
        if go:
            if kind == "load":
                n_load += 1
                loads_i.append(cur)
            elif kind == "exec":
                exec_seq.append(cur)
                if op == Op.COMPUTE:
                    n_comp += 1
                    comps_i.append(cur)
            elif kind == "store":
                n_store += 1
                stores_i.append(cur)
            pushes[kind] = cur
            cur += 1
            cycle = c + 1
        lq.step(lpop, pushes.get("load"))
        xq.step(acc_pre or acc_comp, pushes.get("exec"))
        sq.step(spop, pushes.get("store"))
        c += 1


def runs_cycles(program, config, run_length, memory=None):
    """``busy_cycles`` summed over a program run in pieces of at most ``run_length`` commands, back to back (how
    the RTL backend runs a program longer than the simulated command memory; CONFIG state persists)."""
    program = list(program)
    return sum(program_cycles(program[i:i + run_length], config, state=program[:i], memory=memory)
               for i in range(0, len(program), run_length))

