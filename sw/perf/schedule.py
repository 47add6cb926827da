"""The tiler's schedule of one GEMM at step granularity, and a fast cycle model of it with the memory in it.

A *mapping* is what :func:`cdmqta.sw.runtime.tiler.build_plan` takes: dataflow (ws / os / is), loop order of the
output tiles (``m``: M outer, ``n``: N outer), chunk (ws / is: M rows per accumulator tile; os: K elements per
COMPUTE) and scratchpad split (the A side's share). :func:`gemm_schedule` derives from it exactly the steps the
tiler emits (one PRELOAD + COMPUTE or one COMPUTE each), the scratchpad slots and which step LOADs what (Belady's
policy, :func:`belady`, the one the tiler uses), and the STOREs; ``verif/test_mapper.py`` checks the rows loaded,
the COMPUTEs and the STOREs against the tiler's programs.

:func:`schedule_cycles` is the fast model of such a schedule: one pass over its commands in program order with the
controller's rules (in-order dispatch, one command per cycle, queue depths and in-flight limits of
:class:`cdmqta.hw.config.QTAConfig`, the scoreboard's waits on scratchpad slots and accumulator rows, the load and
store units with :class:`cdmqta.sw.perf.memory.Memory`'s transfer times and latency, the execute unit's tile costs
from :func:`cdmqta.sw.perf.analytic.sequence_cycles`). It stands in for the cycle-level
:func:`cdmqta.sw.perf.program.program_cycles` where whole SD-1.5 programs are too long for it;
``scripts/validate_memory_model.py`` measures the difference on SD-1.5 GEMM shapes (target: within 1 %).
"""

import bisect
import heapq
import math
from dataclasses import dataclass

from cdmqta.hw.config import chain_lanes

from .analytic import ArrayTiming, tile_costs
from .memory import COMMAND_BYTES, IDEAL, load_row_bytes, store_row_bytes

__all__ = ["belady", "Mapping", "Schedule", "gemm_schedule", "schedule_cycles", "schedule_bytes", "tile_groups",
           "group_size"]


def _ceil(a, b):
    return -(-a // b)


def scratchpad_slots(config, a_count, b_count, a_tile, b_tile, split, acc_tile, order):
    """The tiler's on-chip allocation of a GEMM (one definition, used by :mod:`cdmqta.sw.runtime.tiler` and by
    the fast model): scratchpad A region [0, a_cap), B region [a_cap, sp_rows), fixed-size slots of the largest
    tile (``a_count`` / ``b_count`` distinct tiles of at most ``a_tile`` / ``b_tile`` rows; ``split`` the share of
    the scratchpad for A when not everything fits), and ``acc_tile``-row accumulator slots, of which the tiles of
    a group of ``order`` hold :func:`group_size` at once. Returns ``(a_cap, a_slots, b_slots, acc_slots,
    resident)`` or None where the GEMM does not fit."""
    a_need, b_need = a_count * a_tile, b_count * b_tile
    sp = config.sp_rows
    if a_need + b_need <= sp:
        a_cap = a_need
    else:
        a_cap = max(a_tile, min(sp - b_tile, int(sp * split)))
        a_cap = min(a_cap, a_need)
        if sp - a_cap < b_tile:
            return None
    resident = a_need + b_need <= sp
    a_slots, b_slots = a_cap // a_tile, (sp - a_cap) // b_tile
    b_slots = min(b_slots, b_count)
    if a_slots < 1 or b_slots < 1:
        return None
    acc_slots = config.acc_rows // acc_tile
    if acc_slots < group_size(order):
        return None
    return a_cap, a_slots, b_slots, acc_slots, resident


def belady(seq, nslots):
    """Slots for a sequence of tile keys (None = no access): returns [(slot, needs_load)] per position.

    Evicts the resident tile used farthest in the future, never the tile of the previous step (it may still be
    computing while the next step's tiles are prefetched)."""
    nxt = [math.inf] * len(seq)
    last = {}
    for pos in range(len(seq) - 1, -1, -1):
        key = seq[pos]
        if key is not None:
            nxt[pos] = last.get(key, math.inf)
            last[key] = pos
    # resident tiles in a heap by (-next use, insertion order): the first of the farthest, as max() over the dict
    where, next_use, order, free, out, heap = {}, {}, {}, list(range(nslots - 1, -1, -1)), [], []
    prev = None
    counter = 0
    for pos, key in enumerate(seq):
        if key is None:
            out.append(None)
            continue
        if key in where:
            out.append((where[key], False))
        else:
            if free:
                slot = free.pop()
            else:
                held = None
                while True:
                    nu, o, k = heapq.heappop(heap)
                    if k not in where or order[k] != o or next_use[k] != -nu:
                        continue                    # stale entry
                    if k == prev and len(where) > 1:
                        held = (nu, o, k)
                        continue
                    break
                if held is not None:
                    heapq.heappush(heap, held)
                slot = where.pop(k)
            where[key] = slot
            order[key] = counter
            counter += 1
            out.append((slot, True))
        next_use[key] = nxt[pos]
        heapq.heappush(heap, (-nxt[pos], order[key], key))
        prev = key
    return out


def tile_groups(mc_count, nb_count, order):
    """The output tiles (M block, N block) in loop order, as groups whose K steps interleave: order ``m`` (M outer)
    and ``n`` (N outer) are groups of one tile (its K steps back to back); ``gG``: M outer, then groups of G N
    blocks, K inside the group (the A tile of a K step serves G tiles in a row); ``hG``: N outer, groups of G M
    blocks (the B tile serves G tiles in a row). A group's tiles hold accumulator slots at once."""
    if order == "m":
        return [[(mc, nb)] for mc in range(mc_count) for nb in range(nb_count)]
    if order == "n":
        return [[(mc, nb)] for nb in range(nb_count) for mc in range(mc_count)]
    g = int(order[1:]) if len(order) > 1 and order[1:].isdigit() else 0
    if order[0] == "g" and g >= 1:
        return [[(mc, nb) for nb in range(n0, min(n0 + g, nb_count))]
                for mc in range(mc_count) for n0 in range(0, nb_count, g)]
    if order[0] == "h" and g >= 1:
        return [[(mc, nb) for mc in range(m0, min(m0 + g, mc_count))]
                for nb in range(nb_count) for m0 in range(0, mc_count, g)]
    raise ValueError(f"order={order!r} must be m, n, g<G> or h<G>")


def group_size(order):
    """Tiles per group of a loop order (1 for m / n)."""
    return 1 if order in ("m", "n") else int(order[1:])


@dataclass(frozen=True)
class Mapping:
    dataflow: str       # ws / os / is
    order: str          # m / n
    chunk: int
    split: float


@dataclass
class Schedule:
    """Steps of one GEMM: per step (ws, m, n, k_el, a_rows, b_rows, a_slot, b_slot, load_a, load_b, first, last,
    acc_slot); the slot geometry; ``resident`` if every operand tile is loaded once."""

    mapping: Mapping
    steps: list
    a_tile: int
    b_tile: int
    a_cap: int
    acc_tile: int
    acc_slots: int
    resident: bool
    mp: int
    np_: int
    kp: int


def gemm_schedule(m, n, k, mapping, config, pack=1):
    """The tiler's schedule of C[m x n] = A[m x k] . B[k x n] in ``mapping`` (None if it does not fit)."""
    R, C = config.rows, config.cols
    d, order, chunk, split = mapping.dataflow, mapping.order, mapping.chunk, mapping.split
    mp, np_, kp = (n, m, k) if d == "is" else (m, n, k)
    ws = d != "os"
    nb_count = _ceil(np_, C)
    steps = []          # (m, n, k_el, a_key, a_rows, b_key, b_rows, first, last)
    if ws:
        kt = R * pack
        kb_count, mt = _ceil(kp, kt), chunk
        mc_count = _ceil(mp, mt)
        acc_tile = mt
        for grp in tile_groups(mc_count, nb_count, order):
            for kb in range(kb_count):
                k_el = min(kt, kp - kb * kt)
                for mc, nb in grp:
                    mm = min(mt, mp - mc * mt)
                    nn = min(C, np_ - nb * C)
                    steps.append((mm, nn, k_el, (mc, kb), mm, (kb, nb), _ceil(k_el, pack), kb == 0,
                                  kb == kb_count - 1, (mc, nb)))
    else:
        kc = chunk
        kc_count = _ceil(kp, kc)
        mb_count = _ceil(mp, R)
        acc_tile = R
        for grp in tile_groups(mb_count, nb_count, order):
            for c in range(kc_count):
                k_el = min(kc, kp - c * kc)
                rows = _ceil(k_el, pack)
                for mb, nb in grp:
                    mm = min(R, mp - mb * R)
                    nn = min(C, np_ - nb * C)
                    steps.append((mm, nn, k_el, (mb, c), rows, (nb, c), rows, c == 0, c == kc_count - 1, (mb, nb)))
    a_tile = max(s[4] for s in steps)
    b_tile = max(s[6] for s in steps)
    a_keys = {s[3] for s in steps}
    b_keys = {s[5] for s in steps}
    slots = scratchpad_slots(config, len(a_keys), len(b_keys), a_tile, b_tile, split, acc_tile, order)
    if slots is None:
        return None
    a_cap, a_slots, b_slots, acc_slots, resident = slots
    a_res = belady([s[3] for s in steps], a_slots)
    b_res = belady([s[5] for s in steps], b_slots)
    out = []
    acc_slot = -1
    slot_of = {}
    for i, s in enumerate(steps):
        if s[7]:
            acc_slot = (acc_slot + 1) % acc_slots
            slot_of[s[9]] = acc_slot
        out.append((ws, s[0], s[1], s[2], s[4], s[6], a_res[i][0], b_res[i][0], a_res[i][1], b_res[i][1], s[7], s[8],
                    slot_of[s[9]]))
    return Schedule(mapping, out, a_tile, b_tile, a_cap, acc_tile, acc_slots, resident, mp, np_, kp)


def schedule_bytes(sched, config, out_bytes=4):
    """(DRAM bytes, rows loaded, commands) of a schedule: LOAD rows of ``lanes`` bytes, STORE rows of
    ``out_bytes`` per output element, 16 bytes per command (CONFIG, LOADs, PRELOADs, COMPUTEs, STOREs)."""
    rows = cmds = 0
    out = 0
    for st in sched.steps:
        ws, mm, nn, _, ar, br, _, _, la, lb, _, last, _ = st
        rows += ar * la + br * lb
        cmds += la + lb + (2 if ws else 1)
        if last:
            out += mm * nn * out_bytes
            cmds += 1
    return rows * config.lanes + out + (cmds + 1) * COMMAND_BYTES, rows, cmds + 1


#: the passes of schedule_cycles stop when the cycles change by at most this fraction from one pass to the next
STABLE = 0.0005

# timing constants of the fast model, read off sw/perf/program.py (the cycle-level model)
_FETCH = 2          # the first command is in the dispatch register at cycle 2
_HEAD = 2           # dispatched at d -> at its queue's head (out register) at d + 2
_LOAD_BUSY = 3      # a LOAD accepted at c: its unit takes the next at c + transfer + 3, done visible then (+latency)
_ACC_EXTRA = 2      # ... into the accumulator
_STORE_IDLE = 7     # a STORE accepted at c: its unit idle at c + transfer + 7


def schedule_cycles(sched, config, memory=None, timing=None, out_format=0, detail=False, passes=None):
    """Busy cycles of the tiler's program for ``sched`` (fast model, see the module docstring). ``out_format``: the
    STOREs' OutFormat (0 = INT32). ``detail``: return a dict with the cycles and the units' busy times too.

    With a bandwidth the pass runs up to ``passes`` times (default: until it repeats, at most 40 times and about
    200,000 steps): a transfer's share of the bus depends on the other unit's
    transfer running when it starts (:meth:`~cdmqta.sw.perf.memory.Memory.transfer`), which one pass in
    program order does not know yet (loads run ahead of stores), so each pass uses the intervals of the last."""
    memory = IDEAL if memory is None else memory
    prev = None
    if passes is None:      # until nothing changes, within about 200,000 steps of work
        passes = max(6, min(40, 200_000 // max(1, len(sched.steps))))
    last = None
    for i in range(1 if memory.ideal else passes):
        res = _pass(sched, config, memory, timing, out_format, prev)
        if prev is not None and res["intervals"] == prev:
            break
        # settled: two passes in a row within STABLE of each other (long schedules converge in cycles long before
        # every interval repeats)
        if last is not None and i >= 2 and abs(res["cycles"] - last) <= STABLE * last:
            break
        last = res["cycles"]
        prev = res["intervals"]
    if detail:
        return res
    return res["cycles"]


def _running(cur, prev, t, since=None):
    """(end, rate) of the transfer running at cycle t (started at ``since`` or before, default t): from this pass's
    intervals ``cur`` [(starts), (ends), (rates)] (sorted by start) where they reach t, else from the last pass's
    ``prev`` beyond them."""
    since = t if since is None else since
    for iv, lo in ((cur, 0), (prev, len(cur[0]))):
        if iv is None or len(iv[0]) <= lo:
            continue
        j = bisect.bisect_right(iv[0], since, lo) - 1
        if j >= lo and iv[1][j] > t:
            return (iv[1][j], iv[2][j])
        if iv is cur and j == len(cur[0]) - 1 and (prev is None or len(prev[0]) <= lo):
            break
        if iv is cur and t < cur[1][-1]:
            return (0, 0.0)
    return (0, 0.0)


def _pass(sched, config, memory, timing, out_format, prev):
    timing = timing or ArrayTiming(lanes=config.shift_lanes)
    R, C = config.rows, config.cols
    S = chain_lanes(config.shift_lanes, R)
    steps = sched.steps
    lat = R + C + 2
    depth, NT = config.queue_depth, config.in_flight
    tiles = [("ws" if st[0] else "os", st[1], st[3] if st[0] else st[4]) for st in steps]
    first, costs, tail = tile_costs(tiles, R, C, timing)
    real = not memory.ideal
    mlat = memory.latency
    sp_rb = load_row_bytes(config, False)

    # per queue: accept times (for queue room) and completion times (in-flight limits)
    q_acc = {"load": [], "exec": [], "store": []}
    done_ld, xr_ex, cd_c, sd_st = [], [], [], []
    disp = _FETCH - 1               # cycle of the last dispatch
    load_free = store_free = 0
    ld_iv, st_iv = ([], [], []), ([], [], [])
    prev_ld, prev_st = prev if prev is not None else (None, None)
    last_load_slot = {}             # (side, slot) -> done time of the last LOAD into it
    last_read_slot = {}             # (side, slot) -> exec read-done time of the last step reading it
    store_sr = {}                   # acc slot -> time the last STORE of that slot has read its rows
    cd_acc = {}                     # acc slot -> completion of the last COMPUTE into it
    w_end = 0                       # end of the previous tile's window
    busy_ld = busy_st = bus_bytes = 0

    def dispatch(q, extra=0):
        nonlocal disp
        d = max(disp + 1, extra)
        acc = q_acc[q]
        if len(acc) >= depth:
            d = max(d, acc[-depth] + 1)
        disp = d
        head = d + _HEAD
        if acc:
            head = max(head, acc[-1] + 1)
        return head

    def do_load(side, rows, slot):
        nonlocal load_free, busy_ld, bus_bytes
        lim = done_ld[-NT] if len(done_ld) >= NT else 0
        head = dispatch("load", lim)
        a = max(head, load_free, last_read_slot.get((side, slot), 0))
        x = rows
        if real:
            nbytes = rows * sp_rb
            x, rate = memory.transfer(rows, nbytes, a, *_running(st_iv, prev_st, a, a - 1), read=True)
            for lst, v in zip(ld_iv, (a, a + x, rate)):
                lst.append(v)
        busy_ld += x
        bus_bytes += rows * sp_rb
        load_free = a + x + _LOAD_BUSY
        done = load_free + mlat
        q_acc["load"].append(a)
        done_ld.append(done)
        last_load_slot[(side, slot)] = done

    def loads(i):
        st = steps[i]
        if st[8]:
            do_load("a", st[4], st[6])
        if st[9]:
            do_load("b", st[5], st[7])

    def prefetchable(i):
        a, b = steps[i], steps[i + 1]
        return (not b[8] or b[6] != a[6]) and (not b[9] or b[7] != a[7])

    n = len(steps)
    disp = _FETCH - 1 + 1           # CONFIG dispatched at cycle 2
    loads(0)
    end = 0
    for i, st in enumerate(steps):
        ws, mm, nn, k_el, ar, br, sa, sb, la, lb, fst, last, acc_slot = st
        late = i + 1 < n and not prefetchable(i)
        if i + 1 < n and not late:
            loads(i + 1)
        rdy_a = last_load_slot.get(("a", sa), 0)
        rdy_b = last_load_slot.get(("b", sb), 0)
        lim = xr_ex[-NT] if len(xr_ex) >= NT else 0
        if ws:
            h_pre = dispatch("exec", lim)
            lim = xr_ex[-NT + 1] if len(xr_ex) >= NT - 1 else 0
            h_cmp = dispatch("exec", max(lim, cd_c[-NT] if len(cd_c) >= NT else 0))
            kl = _ceil(k_el, 1)
            pre_ready = max(h_pre, rdy_b)
            start = max(w_end, pre_ready + (_ceil(kl, S) if i else 0), rdy_a + 1, h_cmp + 1,
                        store_sr.get(acc_slot, 0) + 1 if fst else 0)
            if i == 0:
                start = max(start, pre_ready + first)
            q_acc["exec"] += [max(h_pre, pre_ready), start - 1]
        else:
            h_cmp = dispatch("exec", max(lim, cd_c[-NT] if len(cd_c) >= NT else 0))
            start = max(w_end, max(rdy_a, rdy_b, h_cmp) + (first if i == 0 else 1),
                        store_sr.get(acc_slot, 0) + 1 if fst else 0)
            q_acc["exec"].append(start - 1)
        w_end = start + costs[i]
        # a WS tile's beats open its window (after an OS tile's drain they close it); the rest of the window is
        # the next tile's preload, which does not delay this tile's results
        c_end = w_end if (not ws or (i and not steps[i - 1][0])) else start + min(costs[i], mm)
        xr = c_end + 1
        if ws:
            xr_ex.append(start + 1)
        xr_ex.append(xr)
        last_read_slot[("a", sa)] = xr
        last_read_slot[("b", sb)] = start + 1 if ws else xr       # WS: the PRELOAD reads B before the window
        drain = 0 if ws else _ceil(mm, S) + 1
        cd = c_end + drain + lat + 4 + (tail if (i == n - 1 and not ws) else 0) - (drain if i == n - 1 else 0)
        cd_c.append(cd)
        cd_acc[acc_slot] = cd
        if last:
            lim = sd_st[-NT] if len(sd_st) >= NT else 0
            head = dispatch("store", lim)
            a = max(head, store_free, cd)
            x = mm
            if real:
                nbytes = mm * store_row_bytes(out_format, nn)
                # a LOAD accepted in the same cycle goes first
                x, rate = memory.transfer(mm, nbytes, a, *_running(ld_iv, prev_ld, a, a), read=False)
                for lst, v in zip(st_iv, (a, a + x, rate)):
                    lst.append(v)
            busy_st += x
            bus_bytes += mm * store_row_bytes(out_format, nn)
            store_free = a + x + 1
            store_sr[acc_slot] = a + x + 2
            q_acc["store"].append(a)
            sd_st.append(a + x + _STORE_IDLE)
            end = max(end, a + x + _STORE_IDLE)
        if late:
            loads(i + 1)
    end = max(end, cd_c[-1], load_free + mlat)
    if real and memory.bandwidth:
        # never faster than the bus: the first LOAD is accepted at cycle 4, the last STORE's unit idles 7 later
        end = max(end, 4 + math.ceil(bus_bytes / memory.bandwidth) + _STORE_IDLE - 1)
    return {"cycles": end + 1, "load_busy": busy_ld, "store_busy": busy_st, "exec_cycles": first + sum(costs),
            "intervals": (ld_iv, st_iv)}
