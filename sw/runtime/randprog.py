"""Constrained-random command programs, poisoned memory images and whole-state comparison with the emulator.

The random tier of the regression (``verif/test_random_programs.py``) and the campaign script
(``scripts/verif_campaign.py``) run programs from :func:`random_program` on the RTL (:mod:`cdmqta.sw.rtl.tb_random`)
and on the ISA emulator, both starting from the same poisoned memories (:func:`poison_images`), and compare the
whole observable state (:func:`compare_state`): status, failing index, the ``macs`` counter, every host word,
every scratchpad row and every accumulator row.

A program is legal by construction (with a small share of deliberately illegal commands, which must stop both
sides at the same index with the same status) and mixes every opcode and field value the hardware accepts:
CONFIG (INT8 / INT4, both roundings, shift 0..47, any multiplier and seed), LOAD to the scratchpad and the
accumulator with any host stride (0 repeats a word, gaps otherwise), PRELOAD and COMPUTE in WS and OS with
partial tiles and accumulate chains (poisoned accumulators near +-2**31 wrap at ``acc_width`` bits), STORE in
every form (INT32, requantized INT8 / INT4, transposed, any origin), FENCE and NOP anywhere. Addresses are drawn
from a few "hot" regions of each memory, so consecutive commands overlap in the scratchpad, the accumulator and
host memory (RAW, WAR and WAW between the three units) far more often than uniform addresses would.

Every decision comes from a *chooser* (``integer(lo, hi)``), so the same generator serves ``random.Random``
(:class:`RandomChooser`) and hypothesis (``cdmqta.sw.rtl.tb_random`` wraps ``data.draw``), whose shrinker then
reduces a failing program to a minimal one: lower choices mean simpler programs (fewer commands, the first
opcode of the menu, small sizes, address 0).
"""

import random

import numpy as np

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import SHIFT_MAX, Dataflow, Op, OutFormat, Precision, Status, decode, encode

from .emulator import Emulator

__all__ = ["RANDOM_CONFIGS", "RandomChooser", "random_program", "poison_images", "compare_state",
           "format_program", "timeout_cycles", "hazard_kinds", "functional_bins", "all_bins"]

#: The random tier's configurations: (QTAConfig, host_words, cmd_words). Small memories so that hazards are
#: dense and the whole state is cheap to compare; tiny in-flight tables and queues so dispatch stalls on full
#: tables; odd shapes, both chain widths, one bank and many banks, a 36-bit accumulator.
RANDOM_CONFIGS = {
    "r4x4": (QTAConfig(rows=4, cols=4, sp_rows=64, sp_banks=2, acc_rows=32, acc_banks=2, host_addr_width=8,
                       queue_depth=2, in_flight=2), 200, 64),
    "r3x5s1": (QTAConfig(rows=3, cols=5, sp_rows=32, sp_banks=1, acc_rows=16, acc_banks=1, host_addr_width=8,
                         shift_lanes=1, queue_depth=3, in_flight=4, acc_width=36), 256, 64),
    "r5x2": (QTAConfig(rows=5, cols=2, sp_rows=48, sp_banks=16, acc_rows=24, acc_banks=8, host_addr_width=9,
                       queue_depth=4, in_flight=8), 300, 64),
}


class RandomChooser:
    """Chooser over ``random.Random(seed)``."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def integer(self, lo, hi):
        return self.rng.randint(lo, hi)


def _pick(ch, options):
    return options[ch.integer(0, len(options) - 1)]


def _addr(ch, size, depth, hot):
    """A start address for ``size`` rows in a memory of ``depth`` rows: mostly one of the hot spots (overlaps)."""
    top = depth - size
    if ch.integer(0, 3) < 3:
        return min(top, _pick(ch, hot))
    return ch.integer(0, top)


def _size(ch, limit, common):
    """1..limit, mostly one of ``common`` (boundaries of the array)."""
    if ch.integer(0, 2) < 2:
        return max(1, min(limit, _pick(ch, common)))
    return ch.integer(1, limit)


def _host(ch, rows, host_words):
    """(host_addr, host_stride) of ``rows`` host words inside the memory: strides 1, 0, 2, 3 or any."""
    stride = _pick(ch, [1, 1, 0, 2, 3, None])
    if stride is None:
        stride = ch.integer(0, max(0, (host_words - 1) // max(1, rows - 1)) if rows > 1 else 65535)
    stride = min(stride, 65535)
    if rows > 1:
        stride = min(stride, (host_words - 1) // (rows - 1))
    top = host_words - 1 - (rows - 1) * stride
    hot = [0, 8, 16, 40, top]
    return (min(top, _pick(ch, hot)) if ch.integer(0, 3) < 3 else ch.integer(0, top)), stride


def _illegal(ch, cfg, host_words):
    """One command that the hardware must reject (every status code, several fields of each opcode)."""
    R, C = cfg.rows, cfg.cols
    return _pick(ch, [
        lambda: 7 + ch.integer(0, 8),                                                      # BAD_OPCODE 7..15
        lambda: encode(Op.CONFIG, shift=ch.integer(SHIFT_MAX + 1, 63)),                    # BAD_FIELD
        lambda: encode(Op.STORE, out=3, rows=1, cols=1),                                   # BAD_FIELD
        lambda: encode(Op.LOAD, rows=0, to_acc=ch.integer(0, 1)),                          # ZERO_SIZE
        lambda: encode(Op.PRELOAD, k=0, n=1),
        lambda: encode(Op.PRELOAD, k=1, n=0),
        lambda: encode(Op.COMPUTE, dataflow=ch.integer(0, 1), m=0, n=1, k=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=0, k=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=0),
        lambda: encode(Op.STORE, rows=0, cols=1),
        lambda: encode(Op.STORE, rows=1, cols=0),
        lambda: encode(Op.PRELOAD, k=2 * R + 1, n=1),                                      # TILE_TOO_LARGE
        lambda: encode(Op.PRELOAD, k=1, n=C + ch.integer(1, 255 - C)),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, m=R + 1, n=1, k=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=C + 1, k=1),
        lambda: encode(Op.STORE, rows=1, cols=C + ch.integer(1, 255 - C)),
        lambda: encode(Op.LOAD, sp_addr=cfg.sp_rows - 1, rows=2),                          # ADDR_RANGE
        lambda: encode(Op.LOAD, to_acc=1, sp_addr=cfg.acc_rows, rows=1),
        lambda: encode(Op.LOAD, rows=2, host_addr=host_words - 1, host_stride=1),
        lambda: encode(Op.LOAD, rows=1, host_addr=host_words + ch.integer(0, 1 << 20)),
        lambda: encode(Op.LOAD, rows=3, host_addr=0, host_stride=host_words // 2),
        lambda: encode(Op.STORE, acc_addr=cfg.acc_rows - 1, rows=2, cols=1),
        lambda: encode(Op.STORE, rows=1, cols=1, host_addr=host_words),
        lambda: encode(Op.STORE, rows=2, cols=1, host_addr=0, host_stride=host_words),
        lambda: encode(Op.PRELOAD, b_addr=cfg.sp_rows, k=1, n=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=cfg.sp_rows - 1, m=1, n=1, k=2),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, b_addr=cfg.sp_rows, m=1, n=1, k=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, c_addr=cfg.acc_rows, m=1, n=1, k=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.OS, c_addr=65535, m=1, n=1, k=1),
        lambda: encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=cfg.sp_rows, m=1, n=1, k=1),
    ])()


def random_program(ch, cfg, host_words, max_len=24, illegal=True):
    """A random program for ``cfg`` (list of 128-bit commands), all decisions from chooser ``ch``."""
    R, C = cfg.rows, cfg.cols
    S, A = cfg.sp_rows, cfg.acc_rows
    sp_hot = [0, 1, R, S // 2, S - 2 * R]
    acc_hot = [0, 1, 2, R, A // 2]
    int4 = False
    weights = False             # a PRELOAD since the start (reset), with no OS COMPUTE after it
    prog = []
    n = ch.integer(1, max_len)
    for _ in range(n):
        per = 2 if int4 else 1
        kmax = R * per
        # 1.5 % illegal commands; the range sits away from 0 and 99, the values hypothesis favours and shrinks to
        if illegal and 4000 <= ch.integer(0, 9999) < 4150:
            prog.append(_illegal(ch, cfg, host_words))
            continue
        kind = _pick(ch, ["load", "load", "compute", "compute", "compute", "preload", "store", "store", "config",
                          "fence", "nop"])
        if kind == "nop":
            prog.append(encode(Op.NOP))
        elif kind == "fence":
            prog.append(encode(Op.FENCE))
        elif kind == "config":
            int4 = bool(ch.integer(0, 1)) and cfg.int4
            mult = _pick(ch, [1, 0, 65535, 1 << 15, None])
            mult = ch.integer(0, 65535) if mult is None else mult
            prog.append(encode(Op.CONFIG, precision=int(int4), rounding=ch.integer(0, 1),
                               shift=ch.integer(0, SHIFT_MAX), mult=mult, seed=ch.integer(0, (1 << 32) - 1)))
        elif kind == "load":
            to_acc = ch.integer(0, 1)
            depth = A if to_acc else S
            rows = _size(ch, depth, [1, 2, R, 2 * R + 1, depth])
            addr = _addr(ch, rows, depth, acc_hot if to_acc else sp_hot)
            h, stride = _host(ch, rows, host_words)
            prog.append(encode(Op.LOAD, to_acc=to_acc, sp_addr=addr, rows=rows, host_addr=h, host_stride=stride))
        elif kind == "preload":
            k = _size(ch, kmax, [1, kmax, kmax - 1, R])
            steps = -(-k // per)
            prog.append(encode(Op.PRELOAD, b_addr=_addr(ch, steps, S, sp_hot), k=k, n=_size(ch, C, [C, 1])))
            weights = True
        elif kind == "compute":
            ws = bool(ch.integer(0, 1)) and weights
            acc = ch.integer(0, 1)
            n_ = _size(ch, C, [C, 1, C - 1])
            if ws:
                k = _size(ch, kmax, [kmax, 1, R])
                m = _size(ch, min(S, A), [R, 1, 2 * R + 1, 3 * R])
                prog.append(encode(Op.COMPUTE, dataflow=Dataflow.WS, accumulate=acc, a_addr=_addr(ch, m, S, sp_hot),
                                   c_addr=_addr(ch, m, A, acc_hot), m=m, n=n_, k=k))
            else:
                m = _size(ch, R, [R, 1, R - 1])
                k = _size(ch, S * per, [1, 2, R, 2 * R + 1, 17])
                steps = -(-k // per)
                prog.append(encode(Op.COMPUTE, dataflow=Dataflow.OS, accumulate=acc,
                                   a_addr=_addr(ch, steps, S, sp_hot), b_addr=_addr(ch, steps, S, sp_hot),
                                   c_addr=_addr(ch, m, A, acc_hot), m=m, n=n_, k=k))
                weights = False
        else:
            rows = _size(ch, A, [1, R, A])
            h, stride = _host(ch, rows, host_words)
            prog.append(encode(Op.STORE, out=ch.integer(0, 2), transposed=ch.integer(0, 1),
                               acc_addr=_addr(ch, rows, A, acc_hot), rows=rows, cols=_size(ch, C, [C, 1]),
                               host_addr=h, host_stride=stride, origin_row=_pick(ch, [0, 1, 65535, 4097]),
                               origin_col=_pick(ch, [0, 3, 65535, 77])))
    return prog


# -- memory images ---------------------------------------------------------------------------------------------

def poison_images(cfg, host_words, seed):
    """(host uint8 [host_words, 4*lanes], scratchpad int8 [sp_rows, lanes], accumulator int64 [acc_rows, cols]) of
    a pseudo-random poison pattern from ``seed``: random bytes with a share of extreme values (INT8 -128/127,
    INT32 +-2**31 edges, accumulator values at the edge of ``acc_width``) so that loads, accumulate chains and
    requantization hit overflow and saturation."""
    rng = np.random.default_rng(seed)
    lanes = cfg.lanes
    host = rng.integers(0, 256, (host_words, 4 * lanes), dtype=np.uint8)
    ext32 = np.array([0x80000000, 0x7FFFFFFF, 0x7FFF0000, 0xFFFFFFFF, 0x80000001], np.uint32)
    mask = rng.random((host_words, lanes)) < 0.25
    w32 = host.view("<u4")
    w32[mask] = ext32[rng.integers(0, len(ext32), int(mask.sum()))]
    sp = rng.integers(-128, 128, (cfg.sp_rows, lanes), dtype=np.int64)
    sp[rng.random(sp.shape) < 0.2] = -128
    w = cfg.acc_width
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    acc = rng.integers(lo, hi, (cfg.acc_rows, cfg.cols), dtype=np.int64, endpoint=True)
    edge = np.array([lo, hi, hi - 100, lo + 100, (1 << 31) - 1, -(1 << 31), 0], np.int64)
    amask = rng.random(acc.shape) < 0.3
    acc[amask] = edge[rng.integers(0, len(edge), int(amask.sum()))]
    return host, sp.astype(np.int8), acc


def sp_words(sp):
    """Scratchpad rows (int8 [rows, lanes]) as the RTL's row words (lane i = bits 8i..8i+7)."""
    return [int.from_bytes(r.astype(np.int8).tobytes(), "little") for r in sp]


def acc_words(acc, width):
    """Accumulator rows (int64 [rows, cols]) as the RTL's row words (lane j = bits width*j ..)."""
    m = (1 << width) - 1
    return [sum((int(v) & m) << (width * j) for j, v in enumerate(row)) for row in acc]


def words_sp(words, lanes):
    return np.array([[((w >> (8 * i)) & 0xFF) for i in range(lanes)] for w in words], np.int64).astype(np.uint8).view(
        np.int8).reshape(len(words), lanes)


def words_acc(words, cols, width):
    m, s = (1 << width) - 1, 1 << (width - 1)
    return np.array([[(((w >> (width * j)) & m) ^ s) - s for j in range(cols)] for w in words], np.int64).reshape(
        len(words), cols)


# -- comparison ------------------------------------------------------------------------------------------------

def compare_state(cfg, images, program, hw):
    """Run ``program`` on the emulator from ``images`` (:func:`poison_images`) and compare with the hardware's
    ``hw`` = {"status", "error_index", "macs", "host" (uint8 image), "sp" (int8), "acc" (int64)}. Returns a list
    of differences (empty when the two agree) and the emulator."""
    host, sp, acc = images
    emu = Emulator(cfg, host=host.copy())
    emu.sp[:] = sp
    emu.acc[:] = acc
    status = emu.run(program)
    diffs = []
    if Status(hw["status"]) != status:
        diffs.append(f"status: hardware {Status(hw['status']).name}, emulator {Status(status).name}")
    em_index = emu.bad_index if status != Status.OK else None
    if hw["error_index"] != em_index:
        diffs.append(f"error index: hardware {hw['error_index']}, emulator {em_index}")
    if hw["macs"] != emu.counters["macs"]:
        diffs.append(f"macs: hardware {hw['macs']}, emulator {emu.counters['macs']}")
    for name, mine, theirs in (("host word", emu.host, hw["host"]), ("scratchpad row", emu.sp, hw["sp"]),
                               ("accumulator row", emu.acc, hw["acc"])):
        bad = np.flatnonzero((np.asarray(mine).reshape(len(mine), -1)
                              != np.asarray(theirs).reshape(len(theirs), -1)).any(axis=1))
        if bad.size:
            diffs.append(f"{name}s differ at {bad[:8].tolist()} (of {bad.size})")
    return diffs, emu


def format_program(program):
    """One line per command: ``index OPCODE field=value ...`` (fields at 0 left out)."""
    lines = []
    for i, w in enumerate(program):
        op = Op(w & 0xF) if (w & 0xF) in {o.value for o in Op} else None
        if op is None:
            lines.append(f"{i:3d} opcode {w & 0xF} (word {w:#x})")
            continue
        _, f = decode(w)
        fields = " ".join(f"{k}={v}" for k, v in f.items() if v)
        lines.append(f"{i:3d} {op.name} {fields}".rstrip())
    return "\n".join(lines)


def timeout_cycles(cfg, program):
    """A watchdog bound in cycles for ``program``: generous (4x) over the serial sum of every command's work
    (rows moved, beats streamed, fill and drain), so a hang fails in far less than a generic timeout."""
    R, C = cfg.rows, cfg.cols
    total = 200
    for w in program:
        op = w & 0xF
        if op not in (Op.LOAD, Op.STORE, Op.PRELOAD, Op.COMPUTE):
            total += 4
            continue
        _, f = decode(w)
        if op in (Op.LOAD, Op.STORE):
            total += f["rows"] + 16
        elif op == Op.PRELOAD:
            total += f["k"] + R + C + 16
        else:
            total += f["m"] * max(1, f["k"]) + 2 * (R + C) + 32
    return 4 * total


def hazard_kinds(program):
    """The (kind, memory) pairs of overlapping row ranges between a command and an earlier one of another unit
    (load / execute / store: the hazards the scoreboard orders), kind in RAW / WAR / WAW, memory in sp / acc /
    host (for functional coverage). Only LOAD writes the scratchpad and only STORE host memory, so WAW exists on
    the accumulator only (LOAD into rows a COMPUTE writes)."""
    acc_rw = []     # (reads, writes) per command: lists of (memory, lo, hi)
    precision = Precision.INT8
    for w in program:
        op = w & 0xF
        if op not in {o.value for o in Op}:
            break
        _, f = decode(w)
        reads, writes = [], []
        if op == Op.CONFIG:
            precision = Precision(f["precision"])
        per = 2 if precision == Precision.INT4 else 1
        if op == Op.LOAD and f["rows"]:
            span = (f["rows"] - 1) * f["host_stride"] + 1
            reads.append(("host", f["host_addr"], f["host_addr"] + span))
            writes.append(("acc" if f["to_acc"] else "sp", f["sp_addr"], f["sp_addr"] + f["rows"]))
        elif op == Op.PRELOAD:
            reads.append(("sp", f["b_addr"], f["b_addr"] + -(-f["k"] // per)))
        elif op == Op.COMPUTE:
            steps = -(-f["k"] // per)
            if f["dataflow"] == Dataflow.WS:
                reads.append(("sp", f["a_addr"], f["a_addr"] + f["m"]))
            else:
                reads += [("sp", f["a_addr"], f["a_addr"] + steps), ("sp", f["b_addr"], f["b_addr"] + steps)]
            writes.append(("acc", f["c_addr"], f["c_addr"] + f["m"]))
            if f["accumulate"]:
                reads.append(("acc", f["c_addr"], f["c_addr"] + f["m"]))
        elif op == Op.STORE and f["rows"]:
            span = (f["rows"] - 1) * f["host_stride"] + 1
            reads.append(("acc", f["acc_addr"], f["acc_addr"] + f["rows"]))
            writes.append(("host", f["host_addr"], f["host_addr"] + span))
        acc_rw.append((op, reads, writes))
    kinds = set()

    def hit(x, y):
        return x[0] == y[0] and x[1] < y[2] and y[1] < x[2]

    unit = {Op.LOAD: "load", Op.PRELOAD: "exec", Op.COMPUTE: "exec", Op.STORE: "store"}
    for j, (opj, rj, wj) in enumerate(acc_rw):
        for opi, ri, wi in acc_rw[:j]:
            if unit.get(opi) is None or unit.get(opj) is None or unit[opi] == unit[opj]:
                continue
            for a in rj:
                kinds.update(("RAW", a[0]) for b in wi if hit(a, b))
            for a in wj:
                kinds.update(("WAR", a[0]) for b in ri if hit(a, b))
                kinds.update(("WAW", a[0]) for b in wi if hit(a, b))
    return kinds


def functional_bins(program, status, error_index):
    """The functional-coverage bins a program hit (a set of tuples): per executed command its opcode crossed with
    the fields that select hardware behaviour -- COMPUTE dataflow x precision x accumulate, STORE output form x
    transposed x rounding (requantized forms), LOAD target x stride class, CONFIG precision x rounding, PRELOAD
    precision x odd k --, the hazard kinds (:func:`hazard_kinds`) and the final status."""
    bins = {("status", Status(status).name)}
    end = len(program) if error_index is None else error_index
    precision, rounding = Precision.INT8, 0
    for w in program[:end]:
        op, f = decode(w)
        if op == Op.CONFIG:
            precision, rounding = Precision(f["precision"]), f["rounding"]
            bins.add(("CONFIG", precision.name, "stochastic" if rounding else "nearest"))
        elif op == Op.LOAD:
            stride = f["host_stride"]
            bins.add(("LOAD", "acc" if f["to_acc"] else "sp",
                      "stride0" if stride == 0 else "stride1" if stride == 1 else "strided"))
        elif op == Op.PRELOAD:
            bins.add(("PRELOAD", precision.name, "odd_k" if f["k"] % 2 else "even_k"))
        elif op == Op.COMPUTE:
            bins.add(("COMPUTE", Dataflow(f["dataflow"]).name, precision.name,
                      "accumulate" if f["accumulate"] else "overwrite"))
        elif op == Op.STORE:
            out = OutFormat(f["out"])
            bins.add(("STORE", out.name, "transposed" if f["transposed"] else "plain",
                      "-" if out == OutFormat.INT32 else "stochastic" if rounding else "nearest"))
        else:
            bins.add((op.name,))
    bins.update(("hazard", k, mem) for k, mem in hazard_kinds(program[:end]))
    return bins


def all_bins(cfg):
    """Every functional bin a configuration can reach (the denominator of the coverage report)."""
    precs = [Precision.INT8] + ([Precision.INT4] if cfg.int4 else [])
    dfs = [Dataflow[d.upper()] for d in cfg.dataflows]
    bins = {("status", s.name) for s in Status}
    if cfg.int4 and len(dfs) == 2:
        bins.discard(("status", "NOT_BUILT"))       # everything is built: no command can be NOT_BUILT
    bins |= {("CONFIG", p.name, r) for p in precs for r in ("nearest", "stochastic")}
    bins |= {("LOAD", t, s) for t in ("sp", "acc") for s in ("stride0", "stride1", "strided")}
    if "ws" in cfg.dataflows:
        bins |= {("PRELOAD", p.name, k) for p in precs for k in ("odd_k", "even_k")}
    bins |= {("COMPUTE", d.name, p.name, a) for d in dfs for p in precs for a in ("accumulate", "overwrite")}
    bins |= {("STORE", OutFormat.INT32.name, t, "-") for t in ("transposed", "plain")}
    bins |= {("STORE", o.name, t, r) for o in (OutFormat.INT8, OutFormat.INT4) for t in ("transposed", "plain")
             for r in ("nearest", "stochastic")}
    bins |= {("NOP",), ("FENCE",)}
    bins |= {("hazard", k, m) for k, m in (("RAW", "sp"), ("RAW", "acc"), ("RAW", "host"), ("WAR", "sp"),
                                           ("WAR", "acc"), ("WAR", "host"), ("WAW", "acc"))}
    return bins
