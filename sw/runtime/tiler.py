"""Tiler: maps a GEMM onto the array (dataflow, tile sizes, scratchpad use) and emits its command program.

``C[M x N] = A[M x K] . B[K x N]`` runs in one of three mappings:

- ``ws``: K x N in space (B stationary, ``kt = rows`` elements of K, ``rows * 2`` in INT4), M streamed in chunks
  of ``mt`` rows, one accumulator tile per (M chunk, N block), K split with ``accumulate=1``;
- ``os``: M x N in space (C stationary), K streamed in chunks of ``kc`` elements (split with ``accumulate=1``);
- ``is``: WS on ``C^T = B^T . A^T``; the operands are laid out transposed in host memory, the result is stored as
  C^T tiles (STORE ``transposed=1`` so stochastic rounding uses C's coordinates) and untransposed on the host.

Each candidate (dataflow x loop order x chunk x scratchpad split) becomes a program; the cost model (one replaceable
function of the program, default :func:`cdmqta.sw.perf.program.program_cycles`, the RTL-validated cycle model of the
controller) scores it and the cheapest wins. Scratchpad residency
is planned offline with Belady's policy (the whole future tile sequence is known); the LOADs of the next step go
ahead of the current step's COMPUTE (double buffering) unless they would overwrite its tiles; each output tile
has its own accumulator rows (round robin) and its STORE follows its last COMPUTE. The program is correct in
plain sequential order (the emulator's); the controller's scoreboard keeps it so while the units overlap. For
hardware without a scoreboard, ``fences=True`` inserts a FENCE wherever a command would race an earlier one of
another unit (load / execute / store) on the same rows.

Host-memory layout (word addresses; ``S = ceil(K / pack)`` rows of K, pack = 2 in INT4, packed along K per
:mod:`cdmqta.hw.isa`), for the array problem ``Cp[Mp x Np] = Ap[Mp x Kp] . Bp[Kp x Np]``:
- ``rowk`` (WS A side): K block ``kb`` (``rows * pack`` elements) is ``Mp`` consecutive words, word t = Ap[t, block];
- ``krow`` (WS/OS B side, OS A side as Ap^T): column block ``b`` is ``S`` consecutive words, word s = K step s;
- result: column block ``nb`` (``cols`` wide) is ``Mp`` consecutive words, INT32 lanes or one byte per lane.
"""

from dataclasses import dataclass, field

import numpy as np

from cdmqta.errors import InputError
from cdmqta.hw.isa import AMAX_SLOTS, MULT_BITS, SHIFT_MAX, Dataflow, Op, OutFormat, Precision, Rounding, encode, pack_k
from cdmqta.sw.perf.program import program_cycles
from cdmqta.sw.perf.schedule import belady as _belady
from cdmqta.sw.perf.schedule import scratchpad_slots, tile_groups

__all__ = [
    "Epilogue",
    "GemmSpec",
    "Plan",
    "RequantPlan",
    "TilerError",
    "plan_gemm",
    "plan_many",
    "plan_requant",
    "build_plan",
    "candidates",
    "ideal_cycles",
    "MAPPINGS",
]

MAPPINGS = ("ws", "os", "is")
_PACK = {"int8": 1, "int4": 2}
_OUT = {"int32": OutFormat.INT32, "int8": OutFormat.INT8, "int4": OutFormat.INT4}


class TilerError(InputError):
    """A GEMM that this configuration cannot run (the message names the dimension or resource)."""


@dataclass(frozen=True)
class Epilogue:
    """What STORE does with the accumulator: ``int32`` pass-through, or requantize to ``int8`` / ``int4``.

    ``segments`` (requantizing epilogues only): ``((cols, mult, shift, rounding, seed), ...)`` splitting C's N
    columns left to right, each requantized with its own parameters in its own coordinates (column 0 = the
    segment's first) and tracked in its own amax register (segment i -> CONFIG.amax_slot i): a fused GEMM of
    several tensors. Then ``mult`` ... ``seed`` are unused. WS / OS need every boundary on a multiple of the array's
    columns (a STORE writes whole tiles); IS (C^T tiles, a STORE per row range) takes any boundaries.
    """

    out: str = "int32"
    mult: int = 1
    shift: int = 0
    rounding: str = "nearest"
    seed: int = 0
    segments: tuple = ()

    def __post_init__(self):
        if self.segments:
            if self.out == "int32":
                raise TilerError("epilogue segments need a requantizing epilogue (int8 / int4)")
            if len(self.segments) > AMAX_SLOTS:
                raise TilerError(f"epilogue: {len(self.segments)} segments, the hardware has {AMAX_SLOTS} amax "
                                 f"registers")
            for cols, mult, shift, rounding, seed in self.segments:
                Epilogue(self.out, mult, shift, rounding, seed)
                if cols < 1:
                    raise TilerError(f"epilogue segment of {cols} columns")
        if self.out not in _OUT:
            raise TilerError(f"epilogue out={self.out!r} must be one of {sorted(_OUT)}")
        if self.out != "int32":
            if not 1 <= int(self.mult) < (1 << MULT_BITS):
                raise TilerError(f"epilogue mult={self.mult} out of range: allowed [1, {(1 << MULT_BITS) - 1}]")
            if not 0 <= int(self.shift) <= SHIFT_MAX:
                raise TilerError(f"epilogue shift={self.shift} out of range: allowed [0, {SHIFT_MAX}]")
        if self.rounding not in ("nearest", "stochastic"):
            raise TilerError(f"epilogue rounding={self.rounding!r} must be 'nearest' or 'stochastic'")
        if not 0 <= int(self.seed) < (1 << 32):
            raise TilerError(f"epilogue seed={self.seed} must fit in 32 bits")


@dataclass(frozen=True)
class GemmSpec:
    """``C[m x n] = A[m x k] . B[k x n]`` in ``precision`` with an epilogue."""

    m: int
    n: int
    k: int
    precision: str = "int8"
    epilogue: Epilogue = field(default_factory=Epilogue)
    name: str = "gemm"


def ideal_cycles(m, n, k, config, precision="int8"):
    """The physical limit ``M*N*K / (R*C)`` (INT4 does two K elements per MAC)."""
    return m * n * k / (config.rows * config.cols * _PACK[precision])


def _ceil(a, b):
    return -(-a // b)


# ----------------------------------------------------------------------------------------------------------------
# Host layouts
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Region:
    """One operand or result in host memory: ``kind`` rowk / krow / result, first word, words, block geometry."""

    kind: str
    base: int
    words: int
    block: int          # rowk: K elements per block; krow and result: columns per block
    block_words: int    # words per block


@dataclass
class Plan:
    """A GEMM mapped onto the array: its program, host layout and cost estimate."""

    gemm: GemmSpec
    config: object
    dataflow: str               # ws / os / is
    order: str                  # loop order of the output tiles: "m" (M outer), "n" (N outer), "gG" / "hG" (groups)
    chunk: int                  # ws/is: M rows per accumulator tile; os: K elements per compute
    program: list
    a_region: Region            # regions of the array problem's operands (IS: Ap = B^T, Bp = A^T)
    b_region: Region
    c_region: Region
    host_base: int
    host_end: int
    est_cycles: int = 0
    loads: int = 0              # rows loaded into the scratchpad
    computes: int = 0
    fences: int = 0
    resident: bool = False      # every operand tile is loaded once

    @property
    def transposed(self):
        return self.dataflow == "is"

    @property
    def ideal(self):
        g = self.gemm
        return ideal_cycles(g.m, g.n, g.k, self.config, g.precision)

    def _dims(self):
        g = self.gemm
        return (g.n, g.m, g.k) if self.transposed else (g.m, g.n, g.k)

    def pack_host(self, a, b, host):
        """Write operands ``a`` [M, K] and ``b`` [K, N] into host memory ``host`` (uint8 [words, 4*lanes])."""
        g = self.gemm
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if a.shape != (g.m, g.k) or b.shape != (g.k, g.n):
            raise TilerError(f"{g.name}: operands {a.shape} x {b.shape} do not match M={g.m} N={g.n} K={g.k}")
        ap, bp = (b.T, a.T) if self.transposed else (a, b)
        self._write(self.a_region, ap, host, is_a=True)
        self._write(self.b_region, bp, host, is_a=False)

    def _write(self, region, x, host, is_a):
        prec = self.gemm.precision
        if region.kind == "rowk":       # x [Mp, Kp]: K blocks of region.block elements
            mp, kp = x.shape
            for blk in range(_ceil(kp, region.block)):
                part = pack_k(x[:, blk * region.block:(blk + 1) * region.block], prec, axis=1)
                base = region.base + blk * region.block_words
                host[base:base + mp, :part.shape[1]] = part
        else:                           # krow: x [Kp, W] (B side) or Ap [Mp, Kp] given as its transpose
            xt = x.T if (is_a and self.dataflow == "os") else x
            kp, w = xt.shape
            packed = pack_k(xt, prec, axis=0)          # [S, W]
            for blk in range(_ceil(w, region.block)):
                part = packed[:, blk * region.block:(blk + 1) * region.block]
                base = region.base + blk * region.block_words
                host[base:base + part.shape[0], :part.shape[1]] = part

    def read_result(self, host):
        """The result C [M, N] from host memory: int32 (INT32 epilogue) or int8 values (INT8/INT4)."""
        mp, np_, _ = self._dims()
        r = self.c_region
        out = np.empty((mp, np_), np.int64)
        for blk in range(_ceil(np_, r.block)):
            w = min(r.block, np_ - blk * r.block)
            words = host[r.base + blk * r.block_words: r.base + blk * r.block_words + mp]
            if self.gemm.epilogue.out == "int32":
                vals = words[:, :4 * w].copy().view("<i4")
            else:
                vals = words[:, :w].view(np.int8)
            out[:, blk * r.block: blk * r.block + w] = vals
        out = out.T if self.transposed else out
        return np.ascontiguousarray(out.astype(np.int32 if self.gemm.epilogue.out == "int32" else np.int8))

    def summary(self):
        g = self.gemm
        return dict(name=g.name, m=g.m, n=g.n, k=g.k, precision=g.precision, dataflow=self.dataflow,
                    order=self.order, chunk=self.chunk, commands=len(self.program), est_cycles=self.est_cycles,
                    ideal_cycles=self.ideal, loads=self.loads, computes=self.computes, fences=self.fences)


# ----------------------------------------------------------------------------------------------------------------
# Scratchpad residency (Belady) and program emission
# ----------------------------------------------------------------------------------------------------------------

class _Emitter:
    """Collects commands and inserts FENCEs where a command would race an earlier one of another unit."""

    UNIT = {Op.LOAD: 1, Op.PRELOAD: 2, Op.COMPUTE: 2, Op.STORE: 4}   # load / execute / store unit bits

    def __init__(self, config, fences=True):
        self.program, self.fences, self.enabled = [], 0, fences
        # per row, since the last fence: the unit bits that wrote it and that read it
        size = {"sp": config.sp_rows, "acc": config.acc_rows}
        self.wr = {m: np.zeros(n, np.uint8) for m, n in size.items()}
        self.rd = {m: np.zeros(n, np.uint8) for m, n in size.items()}

    def emit(self, op, accesses=(), **fields):
        unit = self.UNIT.get(op)
        if self.enabled and unit is not None:
            other = 0xFF ^ unit
            if any((self.wr[m][lo:hi] & other).any() or (w and (self.rd[m][lo:hi] & other).any())
                   for (m, lo, hi, w) in accesses):
                self.fence()
            for (m, lo, hi, w) in accesses:
                (self.wr if w else self.rd)[m][lo:hi] |= unit
        self.program.append(encode(op, **fields))

    def fence(self):
        self.program.append(encode(Op.FENCE))
        for tbl in (self.wr, self.rd):
            for v in tbl.values():
                v[:] = 0
        self.fences += 1


def _check(gemm, config):
    for dim in ("m", "n", "k"):
        v = getattr(gemm, dim)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise TilerError(f"{gemm.name}: {dim.upper()}={v!r} must be an integer >= 1")
    if gemm.precision not in _PACK:
        raise TilerError(f"{gemm.name}: precision={gemm.precision!r} must be 'int8' or 'int4'")
    if gemm.precision == "int4" and not config.int4:
        raise TilerError(f"{gemm.name}: precision int4 needs a configuration built with int4=True")
    if gemm.k > config.max_k:
        raise TilerError(f"{gemm.name}: K={gemm.k} exceeds the accumulator's max_k={config.max_k}")
    if max(gemm.m, gemm.n) > 65535:
        raise TilerError(f"{gemm.name}: M={gemm.m} / N={gemm.n} exceed the 16-bit origin fields (65535)")


def build_plan(gemm, config, dataflow, order, chunk, sp_split, host_base=0, fences=False):
    """The plan of one candidate of :func:`candidates` (dataflow, loop order, chunk, scratchpad split), or None
    if it does not fit the memories; its ``est_cycles`` is not set (:func:`plan_gemm` scores the candidates)."""
    R, C, pack = config.rows, config.cols, _PACK[gemm.precision]
    transposed = dataflow == "is"
    mp, np_, kp = (gemm.n, gemm.m, gemm.k) if transposed else (gemm.m, gemm.n, gemm.k)
    S = _ceil(kp, pack)
    ws = dataflow != "os"
    nb_count = _ceil(np_, C)
    # tiles: list of steps (a_key, a_rows, a_host, b_key, b_rows, b_host, m0, m, n0, n, k_el, first, last)
    if ws:
        kt = R * pack
        kb_count, mt = _ceil(kp, kt), chunk
        mc_count = _ceil(mp, mt)
        a_reg = Region("rowk", host_base, kb_count * mp, kt, mp)
        b_reg = Region("krow", a_reg.base + a_reg.words, nb_count * S, C, S)
        acc_tile = mt
        steps = []
        for grp in tile_groups(mc_count, nb_count, order):
            for kb in range(kb_count):
                k_el = min(kt, kp - kb * kt)
                for mc, nb in grp:
                    m0, m = mc * mt, min(mt, mp - mc * mt)
                    n0, n = nb * C, min(C, np_ - nb * C)
                    steps.append(dict(a=(("A", mc, kb), m, a_reg.base + kb * mp + m0),
                                      b=(("B", kb, nb), _ceil(k_el, pack), b_reg.base + nb * S + kb * R),
                                      m0=m0, m=m, n0=n0, n=n, k=k_el, first=kb == 0, last=kb == kb_count - 1,
                                      tile=(mc, nb)))
    else:
        kc = chunk                      # K elements per compute, a multiple of pack
        kc_count = _ceil(kp, kc)
        mb_count = _ceil(mp, R)
        a_reg = Region("krow", host_base, mb_count * S, R, S)
        b_reg = Region("krow", a_reg.base + a_reg.words, nb_count * S, C, S)
        acc_tile = R
        steps = []
        for grp in tile_groups(mb_count, nb_count, order):
            for c in range(kc_count):
                k_el = min(kc, kp - c * kc)
                rows = _ceil(k_el, pack)
                s0 = c * kc // pack
                for mb, nb in grp:
                    m0, m = mb * R, min(R, mp - mb * R)
                    n0, n = nb * C, min(C, np_ - nb * C)
                    steps.append(dict(a=(("A", mb, c), rows, a_reg.base + mb * S + s0),
                                      b=(("B", nb, c), rows, b_reg.base + nb * S + s0),
                                      m0=m0, m=m, n0=n0, n=n, k=k_el, first=c == 0, last=c == kc_count - 1,
                                      tile=(mb, nb)))
    c_reg = Region("result", b_reg.base + b_reg.words, nb_count * mp, C, mp)
    host_end = c_reg.base + c_reg.words
    if host_end > (1 << config.host_addr_width):
        raise TilerError(f"{gemm.name}: needs {host_end} host words, beyond host_addr_width={config.host_addr_width}")

    # scratchpad: A region [0, a_cap), B region [a_cap, sp_rows), fixed-size slots of the largest tile
    a_tile = max(s["a"][1] for s in steps)
    b_tile = max(s["b"][1] for s in steps)
    a_keys = {s["a"][0] for s in steps}
    b_keys = {s["b"][0] for s in steps}
    slots = scratchpad_slots(config, len(a_keys), len(b_keys), a_tile, b_tile, sp_split, acc_tile, order)
    if slots is None:
        return None
    a_cap, a_slots, b_slots, acc_slots, resident = slots
    a_res = _belady([s["a"][0] for s in steps], a_slots)
    b_res = _belady([s["b"][0] for s in steps], b_slots)

    em = _Emitter(config, fences)
    ep = gemm.epilogue
    if ep.segments:
        _, mult0, shift0, rounding0, seed0 = ep.segments[0]
    else:
        mult0, shift0, rounding0, seed0 = ep.mult, ep.shift, ep.rounding, ep.seed
    em.emit(Op.CONFIG, precision=int(Precision.INT4 if gemm.precision == "int4" else Precision.INT8),
            rounding=int(Rounding.STOCHASTIC if rounding0 == "stochastic" else Rounding.NEAREST_EVEN),
            shift=shift0, mult=mult0, seed=seed0)
    loads = 0

    def emit_loads(i):
        nonlocal loads
        s = steps[i]
        for side, res, base_sp, tile in (("a", a_res, 0, a_tile), ("b", b_res, a_cap, b_tile)):
            slot, needed = res[i]
            if needed:
                _, rows, host = s[side]
                addr = base_sp + slot * tile
                em.emit(Op.LOAD, [("sp", addr, addr + rows, True)], to_acc=0, sp_addr=addr, rows=rows,
                        host_addr=host, host_stride=1)
                loads += rows

    def prefetchable(i):
        # the next step's loads may go ahead of this step's compute unless they overwrite this step's tiles
        return all(res[i + 1] is None or not res[i + 1][1] or res[i + 1][0] != res[i][0] for res in (a_res, b_res))

    stores = {}
    segs = ep.segments
    seg_lo = [sum(s[0] for s in segs[:i]) for i in range(len(segs))]
    cur_seg = [0]

    def config_segment(i):
        if i != cur_seg[0]:
            _, mult, shift, rounding, seed = segs[i]
            em.emit(Op.CONFIG, precision=int(Precision.INT4 if gemm.precision == "int4" else Precision.INT8),
                    rounding=int(Rounding.STOCHASTIC if rounding == "stochastic" else Rounding.NEAREST_EVEN),
                    shift=shift, mult=mult, seed=seed, amax_slot=i)
            cur_seg[0] = i

    def emit_store(f):
        em.emit(Op.STORE, [("acc", f["acc_addr"], f["acc_addr"] + f["rows"], False)], **f)

    def flush_stores():
        for f in stores.values():
            if not segs:
                emit_store(f)
            elif not transposed:        # the tile's columns lie in one segment (candidates checks)
                i = max(j for j in range(len(segs)) if seg_lo[j] <= f["origin_col"])
                config_segment(i)
                emit_store({**f, "origin_col": f["origin_col"] - seg_lo[i]})
            else:                       # C^T rows = C's columns: one STORE per segment piece
                r0, end = f["origin_row"], f["origin_row"] + f["rows"]
                while r0 < end:
                    i = max(j for j in range(len(segs)) if seg_lo[j] <= r0)
                    r1 = min(end, seg_lo[i] + segs[i][0])
                    off = r0 - f["origin_row"]
                    config_segment(i)
                    emit_store({**f, "acc_addr": f["acc_addr"] + off, "rows": r1 - r0,
                                "host_addr": f["host_addr"] + off, "origin_row": r0 - seg_lo[i]})
                    r0 = r1
        stores.clear()

    acc_slot, slot_of = -1, {}
    emit_loads(0)
    for i, s in enumerate(steps):
        late = i + 1 < len(steps) and not prefetchable(i)
        if i + 1 < len(steps) and not late:
            emit_loads(i + 1)
        a_addr = a_res[i][0] * a_tile
        b_addr = a_cap + b_res[i][0] * b_tile
        if s["first"]:
            acc_slot = (acc_slot + 1) % acc_slots
            slot_of[s["tile"]] = acc_slot
        acc_addr = slot_of[s["tile"]] * acc_tile
        acc_rng = ("acc", acc_addr, acc_addr + s["m"], True)
        if ws:
            em.emit(Op.PRELOAD, [("sp", b_addr, b_addr + s["b"][1], False)], b_addr=b_addr, k=s["k"], n=s["n"])
            em.emit(Op.COMPUTE, [("sp", a_addr, a_addr + s["m"], False), acc_rng], dataflow=int(Dataflow.WS),
                    accumulate=int(not s["first"]), a_addr=a_addr, b_addr=b_addr, c_addr=acc_addr,
                    m=s["m"], n=s["n"], k=s["k"])
        else:
            rows = s["a"][1]
            em.emit(Op.COMPUTE, [("sp", a_addr, a_addr + rows, False), ("sp", b_addr, b_addr + rows, False),
                                 acc_rng], dataflow=int(Dataflow.OS), accumulate=int(not s["first"]),
                    a_addr=a_addr, b_addr=b_addr, c_addr=acc_addr, m=s["m"], n=s["n"], k=s["k"])
        if s["last"]:
            # the STORE waits (in its queue) for this tile's last COMPUTE only; the next tiles compute into other
            # accumulator rows meanwhile (round-robin slots = double buffering)
            stores[slot_of[s["tile"]]] = dict(out=int(_OUT[ep.out]), transposed=int(transposed), acc_addr=acc_addr,
                                    rows=s["m"], cols=s["n"], host_addr=c_reg.base + (s["n0"] // C) * mp + s["m0"],
                                    host_stride=1, origin_row=s["m0"], origin_col=s["n0"])
            flush_stores()
        if late:
            emit_loads(i + 1)
    plan = Plan(gemm, config, dataflow, order, chunk, em.program, a_reg, b_reg, c_reg, host_base, host_end,
                loads=loads, computes=len(steps), fences=em.fences, resident=resident)
    return plan


@dataclass
class RequantPlan:
    """Requantization of an INT32 matrix [m x n] by the epilogue: LOAD rows into the accumulator, STORE them."""

    m: int
    n: int
    epilogue: Epilogue
    config: object
    program: list
    in_region: Region
    c_region: Region
    host_base: int
    host_end: int
    est_cycles: int = 0
    dataflow: str = "requant"

    def pack_host(self, acc, host):
        acc = np.asarray(acc, dtype=np.int64)
        if acc.shape != (self.m, self.n):
            raise TilerError(f"requant: accumulator {acc.shape} does not match [{self.m}, {self.n}]")
        r, C = self.in_region, self.config.cols
        for blk in range(_ceil(self.n, C)):
            part = acc[:, blk * C:(blk + 1) * C].astype("<i4").view(np.uint8).reshape(self.m, -1)
            base = r.base + blk * r.block_words
            host[base:base + self.m, :part.shape[1]] = part

    def read_result(self, host):
        r, C = self.c_region, self.config.cols
        out = np.empty((self.m, self.n), np.int8)
        for blk in range(_ceil(self.n, C)):
            w = min(C, self.n - blk * C)
            base = r.base + blk * r.block_words
            out[:, blk * C:blk * C + w] = host[base:base + self.m, :w].view(np.int8)
        return out


def plan_requant(m, n, epilogue, config, host_base=0, cost=None):
    """Program that requantizes an INT32 [m x n] matrix (host, INT32 rows in column blocks) with ``epilogue``."""
    for dim, v in (("M", m), ("N", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise TilerError(f"requant: {dim}={v!r} must be an integer >= 1")
    if epilogue.out == "int32":
        raise TilerError("requant: the epilogue must produce int8 or int4")
    C = config.cols
    nb = _ceil(n, C)
    in_reg = Region("result", host_base, nb * m, C, m)
    c_reg = Region("result", in_reg.base + in_reg.words, nb * m, C, m)
    host_end = c_reg.base + c_reg.words
    if host_end > (1 << config.host_addr_width):
        raise TilerError(f"requant: needs {host_end} host words, beyond host_addr_width={config.host_addr_width}")
    ep = epilogue
    prog = [encode(Op.CONFIG, precision=int(Precision.INT8), shift=ep.shift, mult=ep.mult, seed=ep.seed,
                   rounding=int(Rounding.STOCHASTIC if ep.rounding == "stochastic" else Rounding.NEAREST_EVEN))]
    chunk = min(m, config.acc_rows)
    for blk in range(nb):
        w = min(C, n - blk * C)
        for m0 in range(0, m, chunk):
            rows = min(chunk, m - m0)
            prog.append(encode(Op.LOAD, to_acc=1, sp_addr=0, rows=rows, host_addr=in_reg.base + blk * m + m0,
                               host_stride=1))
            prog.append(encode(Op.STORE, out=int(_OUT[ep.out]), acc_addr=0, rows=rows, cols=w,
                               host_addr=c_reg.base + blk * m + m0, host_stride=1, origin_row=m0, origin_col=blk * C))
    plan = RequantPlan(m, n, ep, config, prog, in_reg, c_reg, host_base, host_end)
    plan.est_cycles = int((cost or program_cycles)(prog, config))
    return plan


def candidates(gemm, config, dataflow=None):
    """(dataflow, order, chunk, sp_split) tuples that the tiler considers for ``gemm``."""
    if dataflow is None:
        flows = [
            d for d in MAPPINGS if (d == "os" and "os" in config.dataflows) or (d != "os" and "ws" in config.dataflows)
        ]
    else:
        if dataflow not in MAPPINGS:
            raise TilerError(f"dataflow={dataflow!r} must be one of {MAPPINGS}")
        built = "os" if dataflow == "os" else "ws"
        if built not in config.dataflows:
            raise TilerError(f"dataflow={dataflow!r} needs {built.upper()}, which this configuration did not build")
        flows = [dataflow]
    segs = gemm.epilogue.segments
    if segs:
        if sum(s[0] for s in segs) != gemm.n:
            raise TilerError(f"{gemm.name}: epilogue segments cover {sum(s[0] for s in segs)} columns, N={gemm.n}")
        bounds = [sum(s[0] for s in segs[:i]) for i in range(1, len(segs))]
        if any(b % config.cols for b in bounds):
            flows = [d for d in flows if d == "is"]
            if not flows:
                raise TilerError(f"{gemm.name}: segment boundaries {bounds} are not multiples of the array's "
                                 f"{config.cols} columns: only the IS mapping can store them")
    pack = _PACK[gemm.precision]
    out = []
    for d in flows:
        mp, np_, kp = (gemm.n, gemm.m, gemm.k) if d == "is" else (gemm.m, gemm.n, gemm.k)
        if d == "os":
            chunks = {min(kp, pack * (config.sp_rows // 4)), min(kp, pack * 64)}
            chunks = sorted({min(c if c == kp else c - c % pack, 65534) for c in chunks if c >= 1})
        else:
            chunks = sorted({min(mp, c, 65535) for c in (config.acc_rows // 2, 64) if c >= 1})
        # scratchpad share of the A side: half, or in proportion to the operands' sizes
        splits = sorted({0.5, min(0.75, max(0.25, round(mp / (mp + np_), 2)))})
        for order in ("m", "n"):
            for chunk in chunks:
                for split in splits:
                    out.append((d, order, chunk, split))
    return out


def plan_gemm(gemm, config, dataflow=None, host_base=0, fences=False, cost=None, max_host_words=None):
    """Best plan for ``gemm`` (a :class:`GemmSpec`) on ``config``; ``dataflow`` forces ws / os / is.

    ``cost(program, config) -> cycles`` is the cost model (default :func:`cdmqta.sw.perf.program.program_cycles`, the
    RTL-validated cycle model of the controller); ``fences`` inserts
    FENCEs for hardware without a scoreboard; ``max_host_words`` drops layouts that do not fit a host memory."""
    _check(gemm, config)
    cost = cost or program_cycles
    best, seen = None, set()
    for d, order, chunk, split in candidates(gemm, config, dataflow):
        if (d, order, chunk) in seen:
            continue
        plan = build_plan(gemm, config, d, order, chunk, split, host_base, fences)
        if plan is None or (max_host_words is not None and plan.host_end > max_host_words):
            continue
        if plan.resident:
            seen.add((d, order, chunk))     # the split does not matter when every tile stays resident
        plan.est_cycles = int(cost(plan.program, config))
        if best is None or plan.est_cycles < best.est_cycles:
            best = plan
    if best is None:
        limit = f" / host memory of {max_host_words} words" if max_host_words is not None else ""
        raise TilerError(f"{gemm.name}: no mapping fits sp_rows={config.sp_rows} / acc_rows={config.acc_rows}"
                         f"{limit} for M={gemm.m} N={gemm.n} K={gemm.k}")
    return best


def plan_many(gemms, config, dataflow=None, host_base=0, fences=False):
    """Plans for several GEMMs placed one after another in host memory; their programs run back to back."""
    plans, base = [], host_base
    for g in gemms:
        p = plan_gemm(g, config, dataflow=dataflow, host_base=base, fences=fences)
        plans.append(p)
        base = p.host_end
    return plans
