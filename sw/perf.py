"""Cycle models: THE program-level model of our controller (validated against the RTL) and the analytic per-GEMM
models of ours and two fixed-WS baselines that ``cdmqta bench`` uses at 64x64.

Program level -- :func:`program_cycles` (the tiler's default cost model): ``busy_cycles`` of a command program on a
configuration, a cycle-level model of hw/controller.py at the level of its commands (dispatcher, unit queues,
scoreboard, load / store units, the execute unit's window logic). It equals the RTL's ``busy_cycles`` counter on
every GEMM of ``python scripts/validate_cycle_model.py`` (48 random irregular GEMMs on 8x8 and 8x4, INT8 / INT4,
ws / os / is, INT32 and requantizing stores; verif/test_cycle_model.py checks a handful on the RTL per run).

Per GEMM (analytic) -- designs (``DESIGNS``):
- ``ours``        per GEMM the cheapest of WS (K x N spatial, M streamed), OS (M x N spatial, K streamed) and IS
                  (WS on the transposed problem: K x M spatial, N streamed), by this model's own cost; tiles follow
                  the array protocol of :mod:`cdmqta.hw.array` (double-buffered preload and drain ride on the
                  neighbouring tiles' compute beats), so a GEMM of many tiles costs about ideal + one fill + one
                  drain; partial tiles are not padded in time.
- ``ws_overlap``  baseline (b): fixed WS in the orientation the step issues the GEMM, with our overlap.
- ``fixed_ws``    baseline (a), paper style: fixed WS, every fold paying full fill and drain, the classic
                  systolic / SCALE-Sim formula ``folds * (2R + C + M - 2)``, ``folds = ceil(K/R) * ceil(N/C)``
                  (SCALE-Sim v3 reports exactly this minus one cycle per layer; :mod:`cdmqta.sw.scalesim_ref`).

The per-tile timing of our controller lives in :class:`ArrayTiming`. The tile-sequence cost
(:func:`sequence_cycles`) is that of the execute unit of hw/controller.py:

    cycles = issue + first + sum_i max(beats_i + gap, shifts_i + h_i, 1 + [a PRELOAD follows]) + tail + latency

with S = the shift chain's lanes (``ArrayTiming.lanes``, ``QTAConfig.shift_lanes``; a shift beat moves S rows),
``first`` = max(ceil(k_lanes / S), 2) if the first tile is WS (its preload shifts from the cycle the PRELOAD is
accepted, the COMPUTE is accepted a cycle later at the earliest) or 1 if OS (the first beat comes a cycle after the
COMPUTE is accepted), ``beats`` = m (WS) or ceil(k / pack) (OS),
``shifts_i = max(ceil(m_{i-1} / S) if OS, ceil(k_lanes_{i+1} / S) if WS)``
(the drain of the previous OS tile and the preload of the next WS tile share the same shift beats), ``h_i`` = 1
after an OS window that ended on a compute beat (hazard H2: no shift right after it); a WS tile after an OS tile
waits for the drain beats (hw/controller.py never writes WS and drained rows in one cycle) while the next preload
shares them; ``tail`` = the drain beats of a last OS tile (+1 if H2) and ``latency = R + C + 5`` (the array's R + C + 2 plus issue,
accumulator write and completion).

Relation of the two (verif/test_perf.py, ``scripts/validate_cycle_model.py --analytic``): :func:`sequence_cycles`
is exactly the execute span of :func:`program_cycles` (+ 3 cycles of dispatch) for any tile sequence; on whole
GEMMs with operands resident (the tiler's program without its LOADs / STOREs) the analytic model is within a few
cycles of the program model (mapping and chunk choices aside). What the analytic model leaves out is the host port
(one row per cycle each way): the first tiles' operand loads, the last STORE, and LOAD-bound stretches when a GEMM
loads more rows than it has compute beats (skinny rank-r LoRA GEMMs); with them the full program costs a few % more
on compute-bound GEMMs and up to ~40 % more on skinny ones (``bandwidth`` = the host port's bytes per cycle,
``config.lanes``, approximates that part).

Memory: DRAM traffic per GEMM from a first-order buffer-tiling model (:func:`dram_bytes`: output blocks that fit in
half the accumulator, A re-read per N block, B per M block); scratchpad traffic from the mapping's in-array reuse;
with a bandwidth (bytes/cycle) the transfer overlaps compute (double-buffered) and
``stall_cycles = max(0, dram / bw - compute)``.
"""

import heapq
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

from ..hw.array import array_latency
from ..hw.config import chain_lanes

__all__ = ["ArrayTiming", "Tiling", "GemmCost", "DESIGNS", "DATAFLOWS", "ideal_cycles", "sequence_cycles",
           "gemm_tiles", "dram_bytes", "dataflow_cost", "gemm_cost", "fixed_ws_cycles", "program_cycles", "tiling_for"]

DESIGNS = ("ours", "ws_overlap", "fixed_ws")
DATAFLOWS = ("ws", "os", "is")
#: ``ours`` treats mappings within this fraction of the fewest cycles as equally fast and then prefers less on-chip
#: traffic (e.g. OS keeps partial sums in the PEs instead of read-modify-writing the accumulator per K block).
TIE_TOLERANCE = 0.002


@dataclass(frozen=True)
class ArrayTiming:
    """Per-tile timing constants of our controller + array (cycles). Fit these to the RTL; nothing else in the
    model encodes controller timing.

    latency_extra   cycles from the last beat's issue to the COMPUTE's completion = rows + cols + latency_extra:
                    hw/array.py's LATENCY = R + C + 2, plus (hw/controller.py) 1 cycle from issue into the array,
                    1 to write the row into the accumulator memory, 2 more until the COMPUTE counts as completed
                    (R + C + 5 in all). The fill/drain of the pipeline, paid once per tile sequence (GEMM).
    issue           cycles from a GEMM's first COMPUTE command to its first beat (decode, scratchpad read).
    tile_gap        bubble beats the controller inserts between consecutive tiles (minimum tile spacing - 1).
    os_guard        H2: after an OS tile the next window's first beat cannot shift.
    switch          extra beats when the dataflow changes between tiles (0: the dataflow bit travels with the beat).
    drain_on_ws     whether OS drain shifts may ride on WS compute beats. hw/array.py allows it, but
                    hw/controller.py does not write WS result rows and drained rows in the same cycle, so a WS
                    tile after an OS tile waits for the 1 + ceil(m_prev / lanes) drain beats (False, the default).
    lanes           rows the shift chain moves per shift beat (``QTAConfig.shift_lanes``, capped at rows): a
                    preload of k lanes takes ceil(k / lanes) shift beats, a drain of m rows ceil(m / lanes).
    """

    latency_extra: int = 5
    issue: int = 0
    tile_gap: int = 0
    os_guard: int = 1
    switch: int = 0
    drain_on_ws: bool = False
    lanes: int = 2

    def latency(self, rows, cols):
        return rows + cols + self.latency_extra


@dataclass(frozen=True)
class Tiling:
    """Resources that bound a tile: WS streams at most ``ws_m`` rows of M per tile (the accumulator half that one
    tile fills while the other half is stored), OS streams at most ``os_k`` steps of K per tile (scratchpad);
    ``sp_bytes`` is the scratchpad capacity for the DRAM reuse model."""

    ws_m: int = 512
    os_k: int = 1024
    sp_bytes: int = 256 * 1024
    acc_outputs: int = 512 * 64


def tiling_for(config):
    """Tiling bounds of a :class:`cdmqta.hw.config.QTAConfig` (double-buffered accumulator and scratchpad)."""
    return Tiling(ws_m=max(1, config.acc_rows // 2), os_k=max(1, config.sp_rows // 4),
                  sp_bytes=config.sp_rows * config.lanes, acc_outputs=config.acc_rows // 2 * config.cols)


def ideal_cycles(m, n, k, rows, cols):
    """The physical limit: M*N*K / (R*C) (no ceiling)."""
    return m * n * k / (rows * cols)


def _ceil(a, b):
    return -(-a // b)


def sequence_cycles(tiles, rows, cols, timing=ArrayTiming()):
    """Cycles of a sequence of tiles ``(dataflow, m, k_lanes)`` on the array (dataflow "ws"/"os"), from the first
    beat of the first window to the last result leaving the array (see the module docstring)."""
    tiles = list(tiles)
    if not tiles:
        return 0
    t = timing
    S = chain_lanes(t.lanes, rows)
    total = t.issue
    # the first WS tile's preload starts in the cycle its PRELOAD is accepted (the COMPUTE follows a cycle later at
    # the earliest); a first OS tile's first beat comes one cycle after its COMPUTE is accepted
    total += max(_ceil(tiles[0][2], S), 2) if tiles[0][0] == "ws" else 1
    n = len(tiles)
    end_os = False      # the previous window ended on an OS compute beat (then hazard H2 delays the next shift)
    for i, (df, m, kl) in enumerate(tiles):
        beats = m if df == "ws" else kl
        prev = tiles[i - 1] if i else None
        nxt = tiles[i + 1] if i + 1 < n else None
        drain = _ceil(prev[1], S) if prev is not None and prev[0] == "os" else 0
        preload = _ceil(nxt[2], S) if nxt is not None and nxt[0] == "ws" else 0
        h2 = t.os_guard if drain and end_os else 0
        if drain and df == "ws" and not t.drain_on_ws:
            # drain first (the WS beats wait for it); the next tile's preload shifts share the drain's shift beats
            cost = h2 + max(drain + beats, preload)
            end_os = False
        else:
            cost = max(beats, max(drain, preload) + h2, 2 if preload else 1)   # one command accepted per cycle
            end_os = df == "os" and beats == cost
        cost += t.tile_gap if i else 0
        if prev is not None and prev[0] != df:
            cost += t.switch
        total += cost
    if tiles[-1][0] == "os":
        total += _ceil(tiles[-1][1], S) + (t.os_guard if end_os else 0)
    return total + t.latency(rows, cols)


def gemm_tiles(m, n, k, dataflow, rows, cols, tiling=Tiling()):
    """The tile sequence ``[(array_dataflow, m, k_lanes, n)]`` of one GEMM in mapping ws/os/is.

    WS: for each N block, for each M chunk (<= ws_m), for each K block (<= rows): one tile (accumulate after the
    first K block). OS: for each M block (<= rows), N block, K chunk (<= os_k). IS = WS of (n, m, k)."""
    if dataflow == "is":
        return gemm_tiles(n, m, k, "ws", rows, cols, tiling)
    out = []
    if dataflow == "ws":
        for n0 in range(0, n, cols):
            nt = min(cols, n - n0)
            for m0 in range(0, m, tiling.ws_m):
                mt = min(tiling.ws_m, m - m0)
                for k0 in range(0, k, rows):
                    out.append(("ws", mt, min(rows, k - k0), nt))
    elif dataflow == "os":
        for m0 in range(0, m, rows):
            mt = min(rows, m - m0)
            for n0 in range(0, n, cols):
                nt = min(cols, n - n0)
                for k0 in range(0, k, tiling.os_k):
                    out.append(("os", mt, min(tiling.os_k, k - k0), nt))
    else:
        raise ValueError(f"dataflow={dataflow!r} must be one of {DATAFLOWS}")
    return out


@dataclass
class GemmCost:
    """Cost of ONE instance of a GEMM in one design (multiply by the count for the workload)."""

    dataflow: str
    compute_cycles: int
    stall_cycles: int
    ideal_cycles: float
    mapping_efficiency: float      # spatial: used PEs / R*C, averaged over tiles (SCALE-Sim's meaning)
    tiles: int
    dram_bytes: int                # operand + result traffic between DRAM and the scratchpad / accumulator
    sram_bytes: int                # scratchpad reads into the array + scratchpad writes from DRAM
    acc_bytes: int                 # accumulator reads + writes (accumulate-on-write, store)

    @property
    def total_cycles(self):
        return self.compute_cycles + self.stall_cycles


def dram_bytes(m, n, k, rows, cols, tiling, elem, out_bytes, a_elems=0):
    """DRAM traffic of one GEMM with the on-chip buffers of ``tiling`` (independent of the array mapping): if both
    operands fit in the scratchpad each is read once; otherwise the output is blocked into Mb x Nb blocks that fit in
    half the accumulator (the other half is being stored), K streams through the scratchpad, and A is read once per
    N block, B once per M block; the (Mb, Nb) with the least traffic is chosen. ``a_elems`` (if nonzero) is the
    size of A in memory when A is an im2col view of a feature map: each pass reads the map, not the m x k matrix."""
    a, b, c = (a_elems or m * k) * elem, k * n * elem, m * n * out_bytes
    if a + b <= tiling.sp_bytes:
        return a + b + c
    cap = max(rows * cols, tiling.acc_outputs)
    best = None
    mb = rows
    while True:
        nb = max(cols, (cap // mb) // cols * cols)
        t = a * _ceil(n, nb) + b * _ceil(m, mb)
        best = t if best is None else min(best, t)
        if mb >= m:
            break
        mb *= 2
    return best + c


def _traffic(m, n, k, dataflow, rows, cols, tiling, elem, out_bytes, acc_elem=4, a_elems=0):
    """(dram, sram, acc) bytes of one GEMM (see module docstring and :func:`dram_bytes`)."""
    dram = dram_bytes(m, n, k, rows, cols, tiling, elem, out_bytes, a_elems)
    if dataflow == "is":
        m, n = n, m
        dataflow = "ws"
    a, b = m * k * elem, k * n * elem
    nb, kb, mb = _ceil(n, cols), _ceil(k, rows), _ceil(m, rows)
    if dataflow == "ws":
        sram_rd = a * nb + b * _ceil(m, tiling.ws_m)    # A once per N block, B (weights) once per M chunk
        k_passes = kb
    else:
        sram_rd = a * nb + b * mb
        k_passes = _ceil(k, tiling.os_k)
    sram = sram_rd + (dram - m * n * out_bytes)       # reads into the array + writes of the loaded operands
    acc = m * n * acc_elem * (2 * k_passes - 1) + m * n * acc_elem   # accumulate-on-write RMW + store read
    return dram, sram, acc


def _mapping_eff(m, n, k, dataflow, rows, cols):
    if dataflow == "ws":
        s1, s2 = k, n
    elif dataflow == "os":
        s1, s2 = m, n
    else:
        s1, s2 = k, m
    return (s1 * s2) / (_ceil(s1, rows) * rows * _ceil(s2, cols) * cols)


@lru_cache(maxsize=65536)
def _seq_cycles_cached(m, n, k, dataflow, rows, cols, tiling, timing):
    tiles = gemm_tiles(m, n, k, dataflow, rows, cols, tiling)
    return sequence_cycles([(d, mt, kt) for d, mt, kt, _ in tiles], rows, cols, timing), len(tiles)


def dataflow_cost(m, n, k, dataflow, rows, cols, timing=ArrayTiming(), tiling=Tiling(), bandwidth=0.0,
                  elem=1, out_bytes=1, a_elems=0):
    """Cost of one GEMM in one mapping with our overlapped tile sequence."""
    cyc, ntiles = _seq_cycles_cached(m, n, k, dataflow, rows, cols, tiling, timing)
    dram, sram, acc = _traffic(m, n, k, dataflow, rows, cols, tiling, elem, out_bytes, a_elems=a_elems)
    stall = max(0, math.ceil(dram / bandwidth) - cyc) if bandwidth else 0
    return GemmCost(dataflow, cyc, stall, ideal_cycles(m, n, k, rows, cols),
                    _mapping_eff(m, n, k, dataflow, rows, cols),
                    ntiles, dram, sram, acc)


def fixed_ws_cycles(m, n, k, rows, cols):
    """Baseline (a): every fold pays fill (R), skew (R + C - 2) and drain: folds * (2R + C + M - 2)."""
    return _ceil(k, rows) * _ceil(n, cols) * (2 * rows + cols + m - 2)


def gemm_cost(m, n, k, design, rows, cols, timing=ArrayTiming(), tiling=Tiling(), bandwidth=0.0, elem=1,
              out_bytes=1, dataflows=DATAFLOWS, a_elems=0):
    """Cost of one GEMM instance in ``design`` (ours / ws_overlap / fixed_ws). ``ours`` picks the mapping with the
    fewest total cycles; mappings within ``TIE_TOLERANCE`` of it are
    ranked by on-chip traffic (accumulator + scratchpad bytes)."""
    if min(m, n, k) < 1:
        raise ValueError(f"GEMM dimensions must be positive, got m={m} n={n} k={k}")
    if design == "ours":
        costs = [dataflow_cost(m, n, k, df, rows, cols, timing, tiling, bandwidth, elem, out_bytes, a_elems)
                 for df in dataflows]
        fastest = min(c.total_cycles for c in costs)
        # within TIE_TOLERANCE of the fewest cycles, the mapping that moves the fewest on-chip bytes wins
        near = [c for c in costs if c.total_cycles <= fastest * (1 + TIE_TOLERANCE)]
        return min(near, key=lambda c: (c.acc_bytes + c.sram_bytes, c.total_cycles))
    if design == "ws_overlap":
        return dataflow_cost(m, n, k, "ws", rows, cols, timing, tiling, bandwidth, elem, out_bytes, a_elems)
    if design == "fixed_ws":
        cyc = fixed_ws_cycles(m, n, k, rows, cols)
        dram, sram, _ = _traffic(m, n, k, "ws", rows, cols, tiling, elem, out_bytes, a_elems=a_elems)
        # every fold writes its partial sums: M*N per K fold, read back (accumulated) for all but the first
        kb = _ceil(k, rows)
        acc = m * n * 4 * (2 * kb - 1) + m * n * 4
        stall = max(0, math.ceil(dram / bandwidth) - cyc) if bandwidth else 0
        return GemmCost("ws", cyc, stall, ideal_cycles(m, n, k, rows, cols), _mapping_eff(m, n, k, "ws", rows, cols),
                        kb * _ceil(n, cols), dram, sram, acc)
    raise ValueError(f"design={design!r} must be one of {DESIGNS}")


# ---------------------------------------------------------------------------------------------------------------
# Command programs: THE cycle model of the controller (the tiler's cost model, validated against the RTL)

#: Timing constants of :func:`program_cycles` (cycles), read off hw/controller.py, hw/dma.py, hw/top.py and
#: checked against the RTL's ``busy_cycles`` (scripts/validate_cycle_model.py).
FETCH = 2               # start -> the first command is in the dispatch register (SimTop's feeder, 1 per cycle)
QUEUE_DEPTH = 8         # unit queues: SyncFIFOBuffered(depth 8) = 7 inner entries + output register
IN_FLIGHT = 16          # scoreboard tables: commands of one kind in flight
LOAD_BUSY = 2           # a LOAD of r scratchpad rows: done pulse r + 2 cycles after acceptance, next one at r + 3
LOAD_ACC_EXTRA = 2      # ... into the accumulator (its read-modify-write port): 2 more
STORE_IDLE = 7          # STORE of r rows: reads from acceptance + 1 for r cycles (next STORE then), last host write
                        # at r + 5 (epilogue), the unit idle (pipeline empty, completion visible) from r + 7 on
RESULT = 2              # beat issued at t -> array input t + 1 -> row at t + 1 + LATENCY -> comp_done at + 2
PROGRAM_CACHE_SIZE = 4096


def _cmd_list(program):
    from ..hw.isa import decode
    return [decode(w) if isinstance(w, int) else (w[0], w[1]) for w in program]


def _ranges(op, f, steps_of):
    """(kind, r0, r1, c, h, to_acc) of a command: scratchpad / accumulator row ranges and host words."""
    from ..hw.isa import Dataflow, Op
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
    """amaranth.lib.fifo.SyncFIFOBuffered(depth=8): 7 inner entries, then the output register (``out``)."""

    __slots__ = ("inner", "out", "level")

    def __init__(self):
        from collections import deque
        self.inner, self.out, self.level = deque(), None, 0

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
        return self.level < QUEUE_DEPTH - 1

    @property
    def empty(self):
        return self.level == 0 and self.out is None


def program_cycles(program, config, state=()):
    """``busy_cycles`` of a command program (128-bit words or decoded ``(Op, fields)`` pairs) on ``config``: the
    one program-level cycle model of the controller, the tiler's default cost model, validated cycle for cycle
    against the RTL (scripts/validate_cycle_model.py, verif/test_cycle_model.py). ``state``: commands of earlier
    runs whose CONFIG state (precision) persists into this one.

    A cycle-level model of :mod:`cdmqta.hw.controller` at the level of its commands (not its datapath): the
    dispatcher (one command per cycle, in order; waits for queue room and the in-flight limits), the three unit
    queues, the scoreboard (a command at a queue head waits for OLDER commands of the other units that touch the
    same scratchpad / accumulator rows or host words, until their completion becomes visible), the load unit
    (r + 3 cycles per LOAD), the store unit (r + 1 per STORE, results r + 5 later), and the execute unit's window
    logic (compute beats, preload shifts and OS drain shifts of hw/controller.py's ExecuteUnit, hazard H2, eager
    drain), with results landing ``R + C + 2`` (array LATENCY) + ``RESULT`` cycles after their beat. Quiet
    stretches (a tile streaming, units waiting) are skipped, so the cost is about one step per event."""
    program = list(program)
    key = None
    if PROGRAM_CACHE_SIZE and not state and all(isinstance(w, int) for w in program):
        key = (tuple(program), config.rows, config.cols, config.sp_rows, config.acc_rows, config.chain_lanes)
        if key in _CACHE:
            return _CACHE[key]
    res = _simulate(_cmd_list(program), config, _cmd_list(state))
    if key is not None:
        if len(_CACHE) >= PROGRAM_CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = res
    return res


_CACHE = {}
_SKIP = True      # skip quiet stretches (verif/test_perf.py checks that it changes no result)


def _simulate(cmds, config, state):
    from ..hw.isa import Op, Precision

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
    loads, execs, comps, stores = [], [], [], []     # the last IN_FLIGHT of each kind: (index, ranges...)
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
            loads = (loads + [(i, r0, to_acc, h)])[-IN_FLIGHT:]
        elif kind == "exec":
            execs = (execs + [(i, r0, r1)])[-IN_FLIGHT:]
            if op == Op.COMPUTE:
                comps = (comps + [(i, c)])[-IN_FLIGHT:]
        elif kind == "store":
            stores = (stores + [(i, r0, h)])[-IN_FLIGHT:]
        steps = ((f.get("k", 0) + 1) >> 1) if int4 else f.get("k", 0)
        info.append((op, kind, to_acc, steps, f))
        if op == Op.CONFIG:
            prec = Precision(f.get("precision", 0))
    return _run(info, deps, lat, config.chain_lanes)


def _run(info, deps, lat, S):
    """The cycle loop of :func:`program_cycles` (see there); returns the busy cycles."""
    from ..hw.isa import Op

    INF = 1 << 62
    n = len(info)
    ok = {e: [INF] * n for e in ("ld", "cd", "sr", "sd", "xr")}
    lq, xq, sq = _Queue(), _Queue(), _Queue()
    load_free = store_free = store_idle = 0
    n_load = n_comp = n_store = 0
    exec_seq = []                   # command index of each dispatched PRELOAD / COMPUTE
    loads_i, comps_i, stores_i = [], [], []
    done_ld = done_cd = done_sd = 0
    # execute unit state (hw/controller.py ExecuteUnit)
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
        all_idle = (lq.empty and xq.empty and sq.empty and c >= load_free and exec_idle and c >= store_idle)
        # dispatch
        go, push = False, (None, None, None)
        if cur < n and c >= cycle:
            op, kind, to_acc, steps, f = info[cur]
            if op == Op.FENCE:
                go = all_idle
            elif kind == "load":
                go = lq.w_rdy and n_load - done_ld < IN_FLIGHT
            elif kind == "exec":
                s = len(exec_seq)
                go = xq.w_rdy and (s < IN_FLIGHT or ok["xr"][exec_seq[s - IN_FLIGHT]] <= c)
                if op == Op.COMPUTE:
                    go = go and n_comp - done_cd < IN_FLIGHT
            elif kind == "store":
                go = sq.w_rdy and n_store - done_sd < IN_FLIGHT
            else:
                go = True
        elif cur >= n and all_idle:
            return c + 1
        # -- skip a quiet stretch: nothing but beat / shift counters move until the next event ----------------
        if _SKIP and not (go or lpop or spop or acc_pre or acc_comp or eager or c_last or p_last or d_last or h2
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
            if info[i][2]:
                load_free = c + rows + LOAD_BUSY + 1 + LOAD_ACC_EXTRA
            else:
                load_free = c + rows + LOAD_BUSY + 1
            when("ld", i, load_free)
        if spop:
            i = sq.out
            rows = info[i][4]["rows"]
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
