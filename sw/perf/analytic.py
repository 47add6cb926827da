"""Analytic per-GEMM cycle and traffic models of ours and two fixed-WS baselines (what ``cdmqta bench`` uses at
64x64, where whole programs are too long to run through :func:`cdmqta.sw.perf.program.program_cycles`).

Per GEMM (analytic) -- designs (``DESIGNS``):
- ``ours``        per GEMM the cheapest of WS (K x N spatial, M streamed), OS (M x N spatial, K streamed) and IS
                  (WS on the transposed problem: K x M spatial, N streamed), by this model's own cost; tiles follow
                  the array protocol of :mod:`cdmqta.hw.array` (double-buffered preload and drain ride on the
                  neighbouring tiles' compute beats), so a GEMM of many tiles costs about ideal + one fill + one
                  drain; partial tiles are not padded in time.
- ``ws_overlap``  baseline (b): fixed WS in the orientation the step issues the GEMM, with our overlap.
- ``fixed_ws``    baseline (a), paper style: fixed WS, every fold paying full fill and drain, the classic
                  systolic / SCALE-Sim formula ``folds * (2R + C + M - 2)``, ``folds = ceil(K/R) * ceil(N/C)``
                  (SCALE-Sim v3 reports exactly this minus one cycle per layer; :mod:`cdmqta.sw.perf.scalesim_ref`).

The per-tile timing of our controller lives in :class:`ArrayTiming`. The tile-sequence cost
(:func:`sequence_cycles`) is that of the execute unit of cdmqta.hw.execute:

    cycles = issue + first + sum_i max(beats_i + gap, shifts_i + h_i, 1 + [a PRELOAD follows]) + tail + latency

with S = the shift chain's lanes (``ArrayTiming.lanes``, ``QTAConfig.shift_lanes``; a shift beat moves S rows),
``first`` = max(ceil(k_lanes / S), 2) if the first tile is WS (its preload shifts from the cycle the PRELOAD is
accepted, the COMPUTE is accepted a cycle later at the earliest) or 1 if OS (the first beat comes a cycle after the
COMPUTE is accepted), ``beats`` = m (WS) or ceil(k / pack) (OS),
``shifts_i = max(ceil(m_{i-1} / S) if OS, ceil(k_lanes_{i+1} / S) if WS)``
(the drain of the previous OS tile and the preload of the next WS tile share the same shift beats), ``h_i`` = 1
after an OS window that ended on a compute beat (hazard H2: no shift right after it); a WS tile after an OS tile
waits for the drain beats (cdmqta.hw.execute never writes WS and drained rows in one cycle) while the next preload
shares them; ``tail`` = the drain beats of a last OS tile (+1 if H2) and ``latency = R + C + 5`` (the array's R + C + 2
plus issue,
accumulator write and completion).

Relation of the two (verif/test_perf.py, ``scripts/validate_cycle_model.py --analytic``): :func:`sequence_cycles`
is exactly the execute span of :func:`~cdmqta.sw.perf.program.program_cycles` (+ 3 cycles of dispatch) for any tile
sequence; on whole
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

import math
from dataclasses import dataclass
from functools import lru_cache

from cdmqta.hw.config import chain_lanes

__all__ = ["ArrayTiming", "Tiling", "GemmCost", "DESIGNS", "DATAFLOWS", "ideal_cycles", "sequence_cycles", "tile_costs",
           "gemm_tiles", "dram_bytes", "dataflow_cost", "gemm_cost", "fixed_ws_cycles", "tiling_for"]

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
                    hw/array.py's LATENCY = R + C + 2, plus (cdmqta.hw.execute) 1 cycle from issue into the array,
                    1 to write the row into the accumulator memory, 2 more until the COMPUTE counts as completed
                    (R + C + 5 in all). The fill/drain of the pipeline, paid once per tile sequence (GEMM).
    issue           cycles from a GEMM's first COMPUTE command to its first beat (decode, scratchpad read).
    tile_gap        bubble beats the controller inserts between consecutive tiles (minimum tile spacing - 1).
    os_guard        H2: after an OS tile the next window's first beat cannot shift.
    switch          extra beats when the dataflow changes between tiles (0: the dataflow bit travels with the beat).
    drain_on_ws     whether OS drain shifts may ride on WS compute beats. hw/array.py allows it, but
                    cdmqta.hw.execute does not write WS result rows and drained rows in the same cycle, so a WS
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
    first, costs, tail = tile_costs(tiles, rows, cols, timing)
    return timing.issue + first + sum(costs) + tail + timing.latency(rows, cols)


def tile_costs(tiles, rows, cols, timing=ArrayTiming()):
    """(first, [cost of each tile's window], tail) of :func:`sequence_cycles` (without issue and latency)."""
    t = timing
    S = chain_lanes(t.lanes, rows)
    # the first WS tile's preload starts in the cycle its PRELOAD is accepted (the COMPUTE follows a cycle later at
    # the earliest); a first OS tile's first beat comes one cycle after its COMPUTE is accepted
    first = max(_ceil(tiles[0][2], S), 2) if tiles[0][0] == "ws" else 1
    n = len(tiles)
    costs = []
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
        costs.append(cost)
    tail = _ceil(tiles[-1][1], S) + (t.os_guard if end_os else 0) if tiles[-1][0] == "os" else 0
    return first, costs, tail


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
