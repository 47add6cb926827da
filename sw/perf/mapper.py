"""The mapper: per GEMM the dataflow, tile sizes, loop order and scratchpad residency with the fewest cycles at the
memory's bandwidth, then the fewest DRAM bytes.

The space is what the tiler can emit (:func:`cdmqta.sw.runtime.tiler.build_plan` takes every :class:`Mapping`
returned here): dataflow WS / OS / IS (WS on the transposed problem); loop order of the output tiles (M outer or N
outer); chunk (WS / IS: M rows per accumulator tile, a power of two from 64 up to half the accumulator; OS: K
elements per COMPUTE, 64 up to a quarter of the scratchpad); scratchpad split (the A side's share: 1/4, 1/2, 3/4
or in proportion to the operands), with what stays resident decided by Belady's policy over the whole tile
sequence (:func:`cdmqta.sw.perf.schedule.belady`). Each candidate is costed by the fast model
(:func:`cdmqta.sw.perf.schedule.schedule_cycles`, checked against the program-level model by
``scripts/validate_memory_model.py``); candidates are tried in the order of a cheap lower bound (execute-unit
cycles of their tiles, every operand row loaded once, bytes / B), and the search stops when no candidate left can
be more than ``TOLERANCE`` (0.5 %) faster than the best so far, so a whole SD-1.5 step maps in seconds.
Deterministic: ties go to fewer cycles, then fewer bytes, then the first candidate in a fixed order.

Per GEMM it reports cycles, DRAM bytes (what the program moves: LOAD rows, STORE rows, commands), the compulsory
bytes (every INT8 operand read once, every result written once in its final format) and the roofline bound
``max(M*N*K / (R*C), compulsory / B)``.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

from cdmqta.hw.isa import OutFormat

from .analytic import ArrayTiming, tile_costs
from .memory import IDEAL, compulsory_bytes, roofline_cycles, store_row_bytes
from .schedule import Mapping, Schedule, gemm_schedule, group_size, schedule_bytes, schedule_cycles

__all__ = ["MapResult", "candidates", "map_gemm", "requant_pass", "default_mapping", "mapping_bytes", "mapping_rows"]

_PACK = {"int8": 1, "int4": 2}


def _ceil(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class MapResult:
    """The mapper's choice for one GEMM instance."""

    mapping: Mapping
    cycles: int
    exec_cycles: int
    dram_bytes: int
    rows_loaded: int
    commands: int
    compulsory_bytes: int
    roofline_cycles: float
    ideal_cycles: float
    candidates: int
    evaluated: int


def candidates(m, n, k, config, dataflows=("ws", "os", "is"), pack=1):
    """Every :class:`Mapping` the mapper considers, in its fixed order (a superset of the tiler's own)."""
    out = []
    R, C = config.rows, config.cols
    for d in dataflows:
        mp, np_, kp = (n, m, k) if d == "is" else (m, n, k)
        if d == "os":
            caps = [pack * (config.sp_rows // 4)] + [pack * c for c in (64, 256)]
            chunks = sorted({min(kp, c) for c in caps if c <= pack * (config.sp_rows // 4)})
            chunks = sorted({c if c == kp else c - c % pack for c in chunks if c >= 1})
        else:
            caps = [config.acc_rows // 2] + [c for c in (64, 128, 256) if c <= config.acc_rows // 2]
            chunks = sorted({min(mp, c, 65535) for c in caps if c >= 1})
        splits = sorted({0.5, min(0.75, max(0.25, round(mp / (mp + np_), 2)))})
        for chunk in chunks:
            tile = chunk if d != "os" else R
            mc, nb = _ceil(mp, tile), _ceil(np_, C)
            slots = config.acc_rows // tile
            orders = ["m", "n"] + [f"g{g}" for g in (2, 4) if g <= slots and nb > 1] \
                + [f"h{g}" for g in (2, 4) if g <= slots and mc > 1]
            for order in orders:
                for split in splits:
                    out.append(Mapping(d, order, chunk, split))
    return out


def _quick_bound(m, n, k, mp, config, timing, out_bytes, pack, bw):
    """A cheap lower bound of a mapping's cycles and bytes without its schedule: execute-unit cycles of the
    mapping's tiles (analytic, K steps back to back), every operand row loaded once, bytes / B."""
    R, C = config.rows, config.cols
    d = mp.dataflow
    mq, nq, kq = (n, m, k) if d == "is" else (m, n, k)
    steps = _ceil(kq, pack)
    nb = _ceil(nq, C)
    if d == "os":
        rows = (_ceil(mq, R) + nb) * steps
    else:
        rows = mq * _ceil(kq, R * pack) + nb * steps
    exec_c = _exec_cycles(mq, nq, kq, "os" if d == "os" else "ws", mp.chunk, R, C, timing, pack)
    nbytes = rows * config.lanes + m * n * out_bytes
    return max(exec_c, rows, 11 + nbytes / bw if bw else 0), nbytes


@lru_cache(maxsize=65536)
def _exec_cycles(mq, nq, kq, df, chunk, R, C, timing, pack):
    from .analytic import Tiling, gemm_tiles, sequence_cycles
    t = Tiling(ws_m=chunk, os_k=chunk) if df == "ws" else Tiling(os_k=_ceil(chunk, pack))
    tiles = gemm_tiles(mq, nq, _ceil(kq, pack) if df == "os" else kq, df, R * pack if df == "ws" else R, C, t)
    if df == "ws" and pack > 1:
        tiles = [(a, b, _ceil(c, pack), e) for a, b, c, e in tiles]
    return sequence_cycles([(a, b, c) for a, b, c, _ in tiles], R, C, timing)


#: the mapper stops when no candidate left can be more than this fraction faster than the best so far
TOLERANCE = 0.005


def _out_format(out_bytes):
    return {4: OutFormat.INT32, 1: OutFormat.INT8}.get(out_bytes, OutFormat.INT32)


@lru_cache(maxsize=8192)
def map_gemm(m, n, k, config, memory=IDEAL, dataflows=("ws", "os", "is"), out_bytes=4, final_bytes=1, a_elems=0,
             precision="int8", timing=None):
    """The best :class:`MapResult` for C[m x n] = A[m x k] . B[k x n] at ``memory``. ``out_bytes``: bytes per result
    element the STOREs write (4: INT32, what the runtime stores; 1: a requantizing store); ``final_bytes``: bytes
    per element of the result in its final format (for the compulsory traffic); ``a_elems``: A's size in memory
    when it is an im2col view (compulsory traffic reads the feature map once)."""
    pack = _PACK[precision]
    timing = timing or ArrayTiming(lanes=config.shift_lanes)
    fmt = _out_format(out_bytes)
    R, C = config.rows, config.cols
    comp = compulsory_bytes(m, n, k, 1, final_bytes, a_elems)
    roof = roofline_cycles(m, n, k, R, C, comp, memory.bandwidth)
    ideal = m * n * k / (R * C * pack)
    cands = candidates(m, n, k, config, dataflows, pack)
    bw = memory.bandwidth
    quick = sorted(((*_quick_bound(m, n, k, mp, config, timing, out_bytes, pack, bw), i, mp)
                    for i, mp in enumerate(cands)), key=lambda q: (q[0], q[1], q[2]))
    best = None
    evaluated = 0
    seen = set()
    for qb, _, idx, mp in quick:
        if best is not None and qb >= best[0] * (1 - TOLERANCE):
            break
        sched = gemm_schedule(m, n, k, mp, config, pack)
        if sched is None:
            continue
        if sched.resident:          # the split does not matter when every tile stays resident
            key = (mp.dataflow, mp.order, mp.chunk)
            if key in seen:
                continue
            seen.add(key)
        nbytes, rows, cmds = schedule_bytes(sched, config, out_bytes)
        tiles = [("ws" if st[0] else "os", st[1], st[3] if st[0] else st[4]) for st in sched.steps]
        first, costs, tail = tile_costs(tiles, R, C, timing)
        exec_c = first + sum(costs) + tail + R + C + 5
        # a lower bound of schedule_cycles (exec span, one row per cycle through the port, bytes / B)
        bound = max(exec_c, rows, 11 + (nbytes - cmds * 16) / bw if bw else 0)
        if best is not None and bound >= best[0] * (1 - TOLERANCE) and nbytes >= best[1]:
            continue
        cyc = max(_cycles(sched, config, memory, timing, fmt), math.ceil(bound))
        evaluated += 1
        cand = (cyc, nbytes, idx, mp, nbytes, rows, cmds, exec_c)
        if best is None or cand[:3] < best[:3]:
            best = cand
    if best is None:
        raise ValueError(f"no mapping of M={m} N={n} K={k} fits sp_rows={config.sp_rows} / acc_rows={config.acc_rows}")
    cyc, _, _, mp, nbytes, rows, cmds, exec_c = best
    return MapResult(mp, cyc, exec_c, nbytes, rows, cmds, comp, roof, ideal, len(cands), evaluated)


#: schedules longer than this many steps, with at least EXTRAPOLATE_PERIODS groups of output tiles, are modeled on
#: prefixes of 2 and 4 groups and extrapolated linearly (their steady state repeats group after group)
EXTRAPOLATE_STEPS = 600
EXTRAPOLATE_PERIODS = 8


def _cycles(sched, config, memory, timing, fmt):
    """schedule_cycles, or for long periodic schedules its linear extrapolation from two prefixes."""
    steps = sched.steps
    if memory.ideal or len(steps) <= EXTRAPOLATE_STEPS:
        return schedule_cycles(sched, config, memory, timing, fmt)
    mp = sched.mapping
    # a period is one group of output tiles with all its K steps (the schedule repeats group after group)
    per = next((j for j in range(1, len(steps)) if steps[j][10] and not steps[j - 1][10]), 0) or group_size(mp.order)
    if len(steps) < EXTRAPOLATE_PERIODS * per:
        return schedule_cycles(sched, config, memory, timing, fmt)
    c = []
    for p in (2, 4):
        part = Schedule(mp, steps[:p * per], sched.a_tile, sched.b_tile, sched.a_cap, sched.acc_tile,
                        sched.acc_slots, sched.resident, sched.mp, sched.np_, sched.kp)
        c.append(schedule_cycles(part, config, memory, timing, fmt))
    return round(c[0] + (c[1] - c[0]) * (len(steps) / per - 2) / 2)


def default_mapping(m, n, k, config, dataflow):
    """The tiler-buildable mapping the analytic model describes: M outer, its chunk (half the accumulator for WS /
    IS, a quarter of the scratchpad for OS), half the scratchpad for A."""
    mp, kp = (n, k) if dataflow == "is" else (m, k)
    chunk = min(kp, config.sp_rows // 4) if dataflow == "os" else min(mp, config.acc_rows // 2)
    return Mapping(dataflow, "m", chunk, 0.5)


@lru_cache(maxsize=8192)
def mapping_rows(m, n, k, config, dataflow):
    """(rows loaded, commands) of :func:`default_mapping`'s program."""
    sched = gemm_schedule(m, n, k, default_mapping(m, n, k, config, dataflow), config)
    _, rows, cmds = schedule_bytes(sched, config)
    return rows, cmds


def mapping_bytes(m, n, k, config, dataflow, out_bytes=4):
    """DRAM bytes of :func:`default_mapping`'s program (LOAD rows, STORE rows of ``out_bytes``, commands)."""
    rows, cmds = mapping_rows(m, n, k, config, dataflow)
    return rows * config.lanes + m * n * out_bytes + 16 * cmds


def requant_pass(m, n, config, memory=IDEAL):
    """(cycles, DRAM bytes) of requantizing an INT32 [m x n] result through the epilogue, as
    :func:`cdmqta.sw.runtime.tiler.plan_requant` programs it: per column block and chunk of at most ``acc_rows``
    rows a LOAD of INT32 rows into the accumulator, then a STORE of INT8 rows (the STORE waits for the LOAD, the
    next LOAD for the STORE to read the rows: no overlap)."""
    C = config.cols
    cyc = 2
    nbytes = 0
    chunk = min(m, config.acc_rows)
    for blk in range(_ceil(n, C)):
        w = min(C, n - blk * C)
        for m0 in range(0, m, chunk):
            rows = min(chunk, m - m0)
            lb, sb = rows * 4 * C, rows * store_row_bytes(OutFormat.INT8, w)
            cyc += memory.transfer_cycles(rows, lb, read=True) + 5 + memory.latency
            cyc += memory.transfer_cycles(rows, sb, read=False) + 7
            nbytes += lb + sb + 2 * 16
    return cyc, nbytes
