"""Cycle models of a GEMM on an R x C systolic array: ours (flexible dataflow, overlapped tiles) and two fixed-WS
baselines, plus the cycles of a whole command program.

Designs (``DESIGNS``):
- ``ours``        per GEMM the cheapest of WS (K x N spatial, M streamed), OS (M x N spatial, K streamed) and IS
                  (WS on the transposed problem: K x M spatial, N streamed), by this model's own cost; tiles follow
                  the array protocol of :mod:`cdmqta.hw.array` (double-buffered preload and drain ride on the
                  neighbouring tiles' compute beats), so a GEMM of many tiles costs about ideal + one fill + one
                  drain; partial tiles are not padded in time.
- ``ws_overlap``  baseline (b): fixed WS in the orientation the step issues the GEMM, with our overlap.
- ``fixed_ws``    baseline (a), paper style: fixed WS, every fold paying full fill and drain, the classic
                  systolic / SCALE-Sim formula ``folds * (2R + C + M - 2)``, ``folds = ceil(K/R) * ceil(N/C)``
                  (SCALE-Sim v3 reports exactly this minus one cycle per layer; :mod:`cdmqta.sw.scalesim_ref`).

The per-tile timing of our controller lives in one place, :class:`ArrayTiming`, so that it can be fitted to the
cycles measured on the RTL. The tile-sequence cost (:func:`sequence_cycles`) is the one of ``hw/array.py``:

    cycles = issue + preload(tile 0, if WS) + sum_i max(beats_i + gap, shifts_i + h_i) + tail + latency

with ``beats`` = m (WS) or ceil(k / pack) (OS), ``shifts_i = max(m_{i-1} if OS, k_lanes_{i+1} if WS)`` (the drain
of the previous OS tile and the preload of the next WS tile share the same shift beats), ``h_i`` = 1 after an OS
tile (hazard H2; a WS tile after an OS tile waits for the 1 + m drain beats, since hw/controller.py writes one
result row per cycle), ``tail`` = the drain of a last OS tile (+1, H2) and ``latency = R + C + 4`` (the array's
R + C + 1 plus issue, accumulator write and completion in hw/controller.py).

Memory: DRAM traffic per GEMM from a first-order buffer-tiling model (:func:`dram_bytes`: output blocks that fit in
half the accumulator, A re-read per N block, B per M block); scratchpad traffic from the mapping's in-array reuse;
with a bandwidth
(bytes/cycle) the transfer overlaps compute (double-buffered) and ``stall_cycles = max(0, dram / bw - compute)``.
"""

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

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
                    hw/array.py's LATENCY = R + C + 1, plus (hw/controller.py) 1 cycle from issue into the array,
                    1 to write the row into the accumulator memory, 2 more until the COMPUTE counts as completed
                    (R + C + 4 in all). The fill/drain of the pipeline, paid once per tile sequence (GEMM).
    issue           cycles from a GEMM's first COMPUTE command to its first beat (decode, scratchpad read).
    tile_gap        bubble beats the controller inserts between consecutive tiles (minimum tile spacing - 1).
    os_guard        H2: after an OS tile the next window's first beat cannot shift.
    switch          extra beats when the dataflow changes between tiles (0: the dataflow bit travels with the beat).
    drain_on_ws     whether OS drain shifts may ride on WS compute beats. hw/array.py allows it, but
                    hw/controller.py writes one result row per cycle, so a WS tile after an OS tile waits for the
                    1 + m_prev drain beats (False, the default).
    load_row, store_row, load_overhead, store_overhead
                    host-port cycles per LOAD/STORE row and per command (program model only).
    """

    latency_extra: int = 4
    issue: int = 0
    tile_gap: int = 0
    os_guard: int = 1
    switch: int = 0
    drain_on_ws: bool = False
    load_row: int = 1
    store_row: int = 1
    load_overhead: int = 2
    store_overhead: int = 3

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
    total = t.issue
    if tiles[0][0] == "ws":
        total += tiles[0][2]
    n = len(tiles)
    for i, (df, m, kl) in enumerate(tiles):
        beats = m if df == "ws" else kl
        prev = tiles[i - 1] if i else None
        nxt = tiles[i + 1] if i + 1 < n else None
        drain = prev[1] if prev is not None and prev[0] == "os" else 0
        preload = nxt[2] if nxt is not None and nxt[0] == "ws" else 0
        guard = t.os_guard if drain else 0
        if drain and df == "ws" and not t.drain_on_ws:
            cost = guard + drain + max(beats, preload)      # drain first, then the WS beats carry the preload
        else:
            cost = max(beats, max(drain, preload) + guard)
        cost += t.tile_gap if i else 0
        if prev is not None and prev[0] != df:
            cost += t.switch
        total += cost
    if tiles[-1][0] == "os":
        total += tiles[-1][1] + t.os_guard
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
    return GemmCost(dataflow, cyc, stall, ideal_cycles(m, n, k, rows, cols), _mapping_eff(m, n, k, dataflow, rows, cols),
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
# Command programs


def program_cycles(program, config, timing=None):
    """Cycles of a command program (128-bit words or decoded ``(Op, fields)`` pairs) on ``config``.

    Model of the decoupled controller of ``hw/controller.py``: three in-order units (load, execute, store) run
    concurrently; a FENCE waits for all of them. Scoreboard: a PRELOAD / COMPUTE starts after every earlier LOAD
    has completed and every earlier STORE has read its rows; a STORE after every earlier LOAD and COMPUTE has
    completed; a LOAD after every earlier COMPUTE has issued its beats and every earlier STORE has completed.
    Consecutive COMPUTEs whose operands are ready in time form one tile sequence costed by
    :func:`sequence_cycles` (PRELOAD shifts ride on the neighbouring tiles); when the execute unit has to wait, the
    sequence breaks and the next one pays its fill again. LOAD / STORE move one row per ``load_row`` /
    ``store_row`` cycles plus a per-command overhead. Returns the cycle at which the last unit finishes."""
    from ..hw.isa import Dataflow, Op, Precision, decode

    timing = timing or ArrayTiming()
    cmds = [decode(w) if isinstance(w, int) else (w[0], w[1]) for w in program]
    R, C = config.rows, config.cols
    tail = timing.latency(R, C)
    t_ld = t_st = barrier = 0
    ld_done = st_read = st_done = 0
    ex_done = ex_beats = 0          # completion / end of beats of everything the execute unit has issued
    precision = Precision.INT8
    pending, run_start = [], 0

    def run_times():
        total = sequence_cycles(pending, R, C, timing)
        return run_start + total - tail, run_start + total     # (end of beats, completion)

    for op, f in cmds:
        op = Op(op)
        if op == Op.FENCE:
            barrier = max(t_ld, t_st, ex_done, barrier)
            pending = []
        elif op == Op.CONFIG:
            precision = Precision(f.get("precision", 0))
        elif op == Op.LOAD:
            start = max(t_ld, barrier, ex_beats, st_done)
            t_ld = ld_done = start + f["rows"] * timing.load_row + timing.load_overhead
        elif op == Op.COMPUTE:
            pack = 2 if precision == Precision.INT4 else 1
            tile = ("ws" if f["dataflow"] == Dataflow.WS else "os", f["m"], _ceil(f["k"], pack))
            ready = max(ld_done, st_read, barrier)
            if pending and ready > run_times()[0]:
                pending = []        # the array waits for data: a new tile sequence (fill and drain again)
            if not pending:
                run_start = max(ex_done, ready)
            pending.append(tile)
            ex_beats, ex_done = run_times()
        elif op == Op.STORE:
            start = max(t_st, barrier, ld_done, ex_done)
            st_read = start + f["rows"] * timing.store_row
            t_st = st_done = st_read + timing.store_overhead
        # PRELOAD: its k_lanes shifts are part of the next WS COMPUTE's window; NOP: nothing
    return max(t_ld, t_st, ex_done, barrier)
